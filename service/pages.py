"""The bedside form at `/`: GET shows it, POST grades it and shows the result on the same page.

It works as a plain HTML form (JavaScript off: a POST that returns the page); service/static/form.js
adds the live ICE/CAPD totals, the tool switch, the flow field and the °C of a °F, keeps Enter in a
number field from submitting, asks before Clear, copies the note and shows times in local time.

After grading, the page opens on the summary bar (wording.summary_items: CRS, ICANS, critical
flags, the decisive action, worst first), then the grade cards in plain words; field paths, rule
ids and citations are behind a "details for the record" toggle. The note for the chart ("Copy to
notes") is rendered here, server-side, into the page (so it is there without JavaScript and is
tested), and the printout carries the values entered.

Every word of the page is in the request's language (service/i18n.py: ?lang=, the cookie the
language switch sets, Accept-Language), but the rule files' criteria and texts, which stay English. Validation is the API's
(the same pydantic models and engine checks), with errors shown next to their fields in plain
words and everything typed kept. A grade shown here is on record in the audit trail, as through
the API; when it cannot be recorded, no grade is shown.

Access (service/session.py): with AEGRADE_API_KEYS set, the form needs a session, opened once at
/login with a key (GET / without one redirects there; POST / is 303 to /login). Every POST carries
the form's CSRF token, also without keys, so that another site cannot write audit records through it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from aegrade import Engine
from aegrade.errors import EngineError, InvalidAssessment
from aegrade.models import AssessmentResult
from service.errors import GradingUnavailable, StoreUnavailable
from service.form import (
    FORM,
    LABELS,
    assessment_from_form,
    entered_values,
    errors_from_validation,
    field_name,
    form_values,
    input_names,
)
from service.grading import grade_on_record
from service.http import keys_match
from service.i18n import Translator, remember_choice
from service.i18n import context as language_context
from service.session import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, SESSION_MAX_AGE_S, Sessions
from service.settings import ServiceSettings
from service.wording import (
    EVIDENCE_LEVELS,
    SEVERITY_WORDS,
    action_verb,
    domain_text,
    grade_text,
    summary_items,
    undetermined_inputs,
    undetermined_text,
)

__all__ = ["STATIC_DIR", "PageCsrf", "form_csrf", "keys_on", "router", "safe_next", "sessions_of", "signed_in", "static_url", "to_login"]

logger = logging.getLogger("aegrade.service")

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


@cache
def static_url(name: str) -> str:
    """/static/<name>?v=<content hash>: a changed file is never served from a stale cache."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


templates.env.globals["static"] = static_url
templates.env.globals["field_name"] = field_name
templates.env.globals["undetermined_inputs"] = undetermined_inputs
templates.env.globals["evidence_levels"] = EVIDENCE_LEVELS


def _translator(request: Request) -> Translator:
    translator: Translator = language_context(request)["translator"]
    return translator


_PATH = re.compile(r"\b(?:patient|vitals|crs|neuro|thrombosis|blinatumomab)\.[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_SNAKE = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


class Words:
    """The wording helpers, bound to one request's language and the form's names for the inputs:
    what the template calls to word a grade, an action or a domain."""

    def __init__(self, tr: Translator) -> None:
        self.tr = tr
        self.names = input_names(tr)

    def grade(self, part: Any, *, inputs: bool = True, capital: bool = False) -> str:
        return grade_text(part, inputs=inputs, capital=capital, tr=self.tr, names=self.names)

    def undetermined(self, item: Any, *, capital: bool = False) -> str:
        return undetermined_text(item, capital=capital, tr=self.tr, names=self.names)

    def missing(self, item: Any) -> str:
        """The unreported inputs that would decide an undetermined flag or action, in words."""
        return ", ".join(dict.fromkeys(self.input(path) for path in getattr(item, "missing", None) or []))

    def message(self, item: Any) -> str:
        """An undetermined flag's message or action's text (the rule file's English), in plain words."""
        return self.plain(str(getattr(item, "message", None) or getattr(item, "text", None) or "").rstrip("."))

    def input(self, path: str) -> str:
        return self.names.get(path) or self.names.get(field_name(path.split("."))) or path.rpartition(".")[2].replace("_", " ")

    def plain(self, text: str) -> str:
        """An engine text (a note, an interpretation, a flag message) with its request paths named as the
        form names them and its snake_case names in words; the rest stays the rule file's English."""
        text = _PATH.sub(lambda m: self.input(m.group(0)), text)
        return _SNAKE.sub(lambda m: m.group(0).replace("_", " "), text)

    def domain(self, domain: str) -> str:
        return domain_text(domain, tr=self.tr)

    def action(self, action: Any) -> str:
        return action_verb(action, tr=self.tr)

    def severity(self, severity: str) -> str:
        return self.tr(SEVERITY_WORDS.get(severity, severity))


def note_text(result: AssessmentResult, entered: list[tuple[str, str]], words: Words) -> str:
    """The plain-text note for the chart ("Copy to notes"): the grades with their bounds, the
    criteria that set them, what was not reported, flags, actions, the values entered, the
    assessment id and the time (UTC: a note outlives the screen's time zone)."""
    tr = words.tr
    when = result.evaluated_at.strftime("%Y-%m-%d %H:%M")
    lines = [
        tr("CRS and ICANS grading (aegrade; decision support, not an order)"),
        tr("Assessment {id}, {time} UTC").format(id=result.id, time=when),
    ]
    for title, part in (("CRS", result.crs), ("ICANS", result.icans)):
        if part is None:
            lines.append(f"{tr(title)}: {tr('not reported')}")
            continue
        tool = getattr(part, "tool", None)
        scale = f"{part.scale}, {tool}" if tool else part.scale
        lines.append(f"{tr(title)} ({scale}): {words.grade(part)}")
        for driver in (d for d in part.drivers if d.drives):
            lines.append(f"  - {driver.criterion} [{driver.evidence_level}]")
        if part.missing:
            missing = ", ".join(words.domain(d) for d in part.missing)
            lines.append("  " + tr("Not reported: {domains}.").format(domains=missing))
        lines.extend("  " + tr("Note: {note}").format(note=words.plain(note)) for note in part.notes)
    for flag in result.flags:
        lines.append(tr("Flag ({severity}): {message}").format(severity=words.severity(flag.severity), message=words.plain(flag.message)))
    for open_flag in result.undetermined_flags:
        lines.append(
            tr("Flag ({severity}), {text}").format(severity=words.severity(open_flag.severity), text=words.undetermined(open_flag))
        )
    for action in result.actions:
        verb = words.action(action)
        text = action.text if action.text.startswith(verb) else tr("{verb}. {text}").format(verb=verb, text=action.text)
        lines.append(tr("Blinatumomab: {text}").format(text=text))
    for open_action in result.undetermined_actions:
        lines.append(tr("Blinatumomab, {text}").format(text=words.undetermined(open_action)))
    lines.extend(tr("Note: {note}").format(note=words.plain(note)) for note in result.notes)
    if entered:
        lines.append(tr("Values entered:"))
        lines.extend(f"  - {label}: {value}" for label, value in entered)
    return "\n".join(lines)


# ---- sessions and CSRF --------------------------------------------------------------------------


def _sessions(request: Request) -> Sessions:
    """The app's Sessions, made on first use (its secret is AEGRADE_SESSION_SECRET or random)."""
    sessions: Sessions | None = getattr(request.app.state, "sessions", None)
    if sessions is None:
        settings: ServiceSettings = request.app.state.settings
        secret = settings.session_secret.get_secret_value().encode() if settings.session_secret else None
        sessions = Sessions(secret, settings.api_keys)
        request.app.state.sessions = sessions
    return sessions


def keys_on(request: Request) -> bool:
    settings: ServiceSettings = request.app.state.settings
    return bool(settings.api_keys)


def signed_in(request: Request) -> bool:
    return _sessions(request).valid(request.cookies.get(SESSION_COOKIE))


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


class PageCsrf:
    """The CSRF binding of this request: the session cookie when signed in, else `aegrade_csrf` (made
    when missing, and then set on the answer)."""

    def __init__(self, request: Request, *, use_session: bool) -> None:
        self.request = request
        self.sessions = _sessions(request)
        self.fresh: str | None = None
        if use_session:
            self.binding: str | None = request.cookies.get(SESSION_COOKIE)
        else:
            self.binding = request.cookies.get(CSRF_COOKIE)

    def ok(self, token: str | None) -> bool:
        return self.sessions.csrf_ok(self.binding, token)

    def token(self) -> str:
        if not self.binding:
            self.binding = self.fresh = self.sessions.new_binding()
        return self.sessions.csrf_token(self.binding)

    def finish(self, response: Response) -> Response:
        if self.fresh:
            _set_cookie(self.request, response, CSRF_COOKIE, self.fresh)
        return response


def form_csrf(request: Request) -> PageCsrf:
    return PageCsrf(request, use_session=keys_on(request))


_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?=&-]{0,500}")
"""Where /login may send the browser after signing in: a path of this service only (it starts with
one "/", never "//" or "/\\", which browsers read as another host), with no scheme and no host."""


def safe_next(value: object) -> str:
    """`value` when it is a local path _NEXT allows, else "/" (never a redirect to another site)."""
    return value if isinstance(value, str) and _NEXT.fullmatch(value) and ".." not in value else "/"


def to_login(request: Request) -> RedirectResponse:
    """303 to /login, which brings the browser back to this page (path and query) once signed in: a
    page read with GET (a refused POST goes to /login alone; what it sent is not replayed)."""
    if request.method not in ("GET", "HEAD"):
        return RedirectResponse("/login", status_code=303)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = "/login" if safe_next(here) in ("/", "/login") else f"/login?{urlencode({'next': safe_next(here)})}"
    return RedirectResponse(target, status_code=303)


def sessions_of(request: Request) -> Sessions:
    """The app's form sessions (for pages in other modules that take the same sign-in)."""
    return _sessions(request)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


# ---- the form ------------------------------------------------------------------------------------


def _page(
    request: Request,
    csrf: PageCsrf,
    *,
    status: int = 200,
    values: dict[str, list[str]] | None = None,
    errors: dict[str, list[str]] | None = None,
    result: AssessmentResult | None = None,
    failure: str | None = None,
) -> Response:
    engine: Engine = request.app.state.engine
    values = values or {}
    errors = errors or {}
    language = language_context(request)
    tr: Translator = language["translator"]
    words = Words(tr)
    entered = entered_values(values, tr=tr)
    # an optional section opens only when it holds input (a radio's "not reported" posts "": not input)
    open_sections = {
        s.id
        for s in FORM
        if s.collapsed and any(any(v.strip() for v in values.get(f.name, [])) or errors.get(f.name) for f in s.fields)
    }
    context: dict[str, Any] = {
        "sections": FORM,
        "values": values,
        "errors": errors,
        "labels": LABELS,
        "result": result,
        "failure": failure,
        "open_sections": open_sections,
        "capd_age": engine.settings_for(engine.primary("icans").id)["capd_age_cutoff_years"],
        "rulesets": [rs.label for rs in engine.rulesets],
        "csrf_token": csrf.token(),
        "signed_in": keys_on(request),
        "words": words,
        "entered": entered,
        "summary": summary_items(result, tr=tr) if result is not None else [],
        "note": note_text(result, entered, words) if result is not None else "",
        **language,
    }
    response = templates.TemplateResponse(request, "form.html", context, status_code=status)
    return remember_choice(request, csrf.finish(response))


@router.get("/", response_class=HTMLResponse)
async def show_form(request: Request) -> Response:
    if keys_on(request) and not signed_in(request):
        return remember_choice(request, _to_login())
    return _page(request, form_csrf(request))


@router.post("/", response_class=HTMLResponse)
async def grade_form(request: Request) -> Response:
    if keys_on(request) and not signed_in(request):
        return _to_login()
    csrf = form_csrf(request)
    tr = _translator(request)
    try:
        submitted = await request.form()
    except Exception:  # a body that is not a form: say so on the page, never a 500
        return _page(request, csrf, status=400, errors={"": [tr("The form could not be read. Please submit it again.")]})
    fields: dict[str, list[str]] = {}
    for key in submitted.keys():
        fields[key] = [v for v in submitted.getlist(key) if isinstance(v, str)]
    sent_tokens = fields.pop(CSRF_FIELD, [])
    token = sent_tokens[0] if len(sent_tokens) == 1 else None
    values = form_values(fields)
    if not csrf.ok(token):
        # Not sent from this service's page (or from an old one): nothing is graded or recorded. The
        # values come back with a fresh token, to be checked and sent again.
        return _page(
            request, csrf, status=403, values=values,
            errors={"": [tr("The form could not be verified (it may be from an old page). Check the values and press Grade again.")]},
        )
    assessment, parsed = assessment_from_form(fields, tr=tr, engine=request.app.state.engine)
    if assessment is None:
        return _page(request, csrf, status=422, values=values, errors=parsed.errors)
    shown: list[Response] = []

    async def render(result: AssessmentResult) -> None:
        # The page is made before the grade counts as answered: if it cannot be, the committed
        # record is marked undelivered (service/grading.py), as for any answer not given.
        shown.append(_page(request, csrf, values=values, result=result))

    try:
        await grade_on_record(request.app.state, assessment, then=render)
    except InvalidAssessment as exc:
        return _page(request, csrf, status=422, values=values, errors=errors_from_validation(exc, parsed.data, tr=tr))
    except EngineError as exc:
        return _page(
            request, csrf, status=500, values=values,
            failure=tr("The engine could not give a trustworthy grade ({code}). The failure is on record; grade by hand.").format(code=exc.code),
        )
    except StoreUnavailable:
        logger.error("form: audit store unavailable; no grade shown")
        return _page(
            request, csrf, status=503, values=values,
            failure=tr("The grade could not be recorded, so it is not shown. Try again, or grade by hand."),
        )
    except GradingUnavailable:
        logger.error("form: no grade came in time; no grade shown")
        return _page(
            request, csrf, status=503, values=values,
            failure=tr("No grade came in time, so none is shown. Try again, or grade by hand."),
        )
    return shown[0]


# ---- sign in, sign out (AEGRADE_API_KEYS set) -----------------------------------------------------


def _login_page(
    request: Request, csrf: PageCsrf, *, status: int = 200, error: str | None = None, next_path: str = "/"
) -> Response:
    context = {"csrf_token": csrf.token(), "error": error, "next_path": next_path, **language_context(request)}
    response = templates.TemplateResponse(request, "login.html", context, status_code=status)
    return remember_choice(request, csrf.finish(response))


@router.get("/login", response_class=HTMLResponse)
async def show_login(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if not keys_on(request) or signed_in(request):
        return RedirectResponse(next_path, status_code=303)
    return _login_page(request, PageCsrf(request, use_session=False), next_path=next_path)


@router.post("/login", response_class=HTMLResponse)
async def log_in(request: Request) -> Response:
    if not keys_on(request):
        return RedirectResponse("/", status_code=303)
    csrf = PageCsrf(request, use_session=False)
    tr = _translator(request)
    try:
        submitted = await request.form()
    except Exception:
        return _login_page(request, csrf, status=400, error=tr("The form could not be read. Please try again."))
    key, token = submitted.get("key"), submitted.get(CSRF_FIELD)
    next_path = safe_next(submitted.get("next"))
    if not isinstance(token, str) or not csrf.ok(token):
        return _login_page(request, csrf, status=403, error=tr("The page had expired. Please enter the key again."), next_path=next_path)
    settings: ServiceSettings = request.app.state.settings
    if not isinstance(key, str) or not keys_match(key.strip(), settings.api_keys):
        logger.warning("form: sign-in with a wrong key")
        return _login_page(request, csrf, status=401, error=tr("That key is not valid."), next_path=next_path)
    response = RedirectResponse(next_path, status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, _sessions(request).issue(key.strip()), max_age=SESSION_MAX_AGE_S)
    return response


@router.post("/logout")
async def log_out(request: Request) -> Response:
    csrf = form_csrf(request)
    try:
        token = (await request.form()).get(CSRF_FIELD)
    except Exception:
        token = None
    if signed_in(request) and not (isinstance(token, str) and csrf.ok(token)):
        return RedirectResponse("/", status_code=303)  # not from our page: the session stays
    response = RedirectResponse("/login" if keys_on(request) else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
