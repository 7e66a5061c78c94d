"""The bedside form at `/`: GET shows it, POST grades it and shows the result on the same page.

It works as a plain HTML form (JavaScript off: a POST that returns the page); service/static/form.js
only adds the live ICE/CAPD totals, the tool switch and the flow field. Validation is the API's
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
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from aegrade import Engine
from aegrade.errors import EngineError, InvalidAssessment
from aegrade.models import AssessmentResult
from service.errors import GradingUnavailable, StoreUnavailable
from service.form import FORM, LABELS, assessment_from_form, errors_from_validation, field_name, form_values
from service.http import keys_match
from service.grading import grade_on_record
from service.session import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, SESSION_MAX_AGE_S, Sessions
from service.settings import ServiceSettings
from service.wording import grade_text, undetermined_inputs, undetermined_text

__all__ = ["STATIC_DIR", "router"]

logger = logging.getLogger("aegrade.service")

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


@cache
def _static_url(name: str) -> str:
    """/static/<name>?v=<content hash>: a changed file is never served from a stale cache."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


templates.env.globals["static"] = _static_url
templates.env.globals["grade_text"] = grade_text
templates.env.globals["field_name"] = field_name
templates.env.globals["undetermined_inputs"] = undetermined_inputs
templates.env.globals["undetermined_text"] = undetermined_text


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


def _keys_on(request: Request) -> bool:
    settings: ServiceSettings = request.app.state.settings
    return bool(settings.api_keys)


def _signed_in(request: Request) -> bool:
    return _sessions(request).valid(request.cookies.get(SESSION_COOKIE))


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


class _Csrf:
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


def _form_csrf(request: Request) -> _Csrf:
    return _Csrf(request, use_session=_keys_on(request))


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


# ---- the form ------------------------------------------------------------------------------------


def _page(
    request: Request,
    csrf: _Csrf,
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
    open_sections = {
        s.id for s in FORM if s.collapsed and any(values.get(f.name) or errors.get(f.name) for f in s.fields)
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
        "signed_in": _keys_on(request),
    }
    return csrf.finish(templates.TemplateResponse(request, "form.html", context, status_code=status))


@router.get("/", response_class=HTMLResponse)
async def show_form(request: Request) -> Response:
    if _keys_on(request) and not _signed_in(request):
        return _to_login()
    return _page(request, _form_csrf(request))


@router.post("/", response_class=HTMLResponse)
async def grade_form(request: Request) -> Response:
    if _keys_on(request) and not _signed_in(request):
        return _to_login()
    csrf = _form_csrf(request)
    try:
        submitted = await request.form()
    except Exception:  # a body that is not a form: say so on the page, never a 500
        return _page(request, csrf, status=400, errors={"": ["The form could not be read. Please submit it again."]})
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
            errors={"": ["The form could not be verified (it may be from an old page). Check the values and press Grade again."]},
        )
    assessment, parsed = assessment_from_form(fields)
    if assessment is None:
        return _page(request, csrf, status=422, values=values, errors=parsed.errors)
    try:
        result, _ = await grade_on_record(request.app.state, assessment)
    except InvalidAssessment as exc:
        return _page(request, csrf, status=422, values=values, errors=errors_from_validation(exc, parsed.data))
    except EngineError as exc:
        return _page(
            request, csrf, status=500, values=values,
            failure=f"The engine could not give a trustworthy grade ({exc.code}). The failure is on record; grade by hand.",
        )
    except StoreUnavailable:
        logger.error("form: audit store unavailable; no grade shown")
        return _page(
            request, csrf, status=503, values=values,
            failure="The grade could not be recorded, so it is not shown. Try again, or grade by hand.",
        )
    except GradingUnavailable:
        logger.error("form: no grade came in time; no grade shown")
        return _page(
            request, csrf, status=503, values=values,
            failure="No grade came in time, so none is shown. Try again, or grade by hand.",
        )
    return _page(request, csrf, values=values, result=result)


# ---- sign in, sign out (AEGRADE_API_KEYS set) -----------------------------------------------------


def _login_page(request: Request, csrf: _Csrf, *, status: int = 200, error: str | None = None) -> Response:
    context = {"csrf_token": csrf.token(), "error": error}
    return csrf.finish(templates.TemplateResponse(request, "login.html", context, status_code=status))


@router.get("/login", response_class=HTMLResponse)
async def show_login(request: Request) -> Response:
    if not _keys_on(request) or _signed_in(request):
        return RedirectResponse("/", status_code=303)
    return _login_page(request, _Csrf(request, use_session=False))


@router.post("/login", response_class=HTMLResponse)
async def log_in(request: Request) -> Response:
    if not _keys_on(request):
        return RedirectResponse("/", status_code=303)
    csrf = _Csrf(request, use_session=False)
    try:
        submitted = await request.form()
    except Exception:
        return _login_page(request, csrf, status=400, error="The form could not be read. Please try again.")
    key, token = submitted.get("key"), submitted.get(CSRF_FIELD)
    if not isinstance(token, str) or not csrf.ok(token):
        return _login_page(request, csrf, status=403, error="The page had expired. Please enter the key again.")
    settings: ServiceSettings = request.app.state.settings
    if not isinstance(key, str) or not keys_match(key.strip(), settings.api_keys):
        logger.warning("form: sign-in with a wrong key")
        return _login_page(request, csrf, status=401, error="That key is not valid.")
    response = RedirectResponse("/", status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, _sessions(request).issue(key.strip()), max_age=SESSION_MAX_AGE_S)
    return response


@router.post("/logout")
async def log_out(request: Request) -> Response:
    csrf = _form_csrf(request)
    try:
        token = (await request.form()).get(CSRF_FIELD)
    except Exception:
        token = None
    if _signed_in(request) and not (isinstance(token, str) and csrf.ok(token)):
        return RedirectResponse("/", status_code=303)  # not from our page: the session stays
    response = RedirectResponse("/login" if _keys_on(request) else "/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
