"""GET /assessments/{id}: one assessment on record, as a page a clinician reads.

CDS Hooks cards link here (service/cds_hooks.py, under AEGRADE_PUBLIC_BASE_URL), never to the raw
JSON of the audit record. The page shows what the record holds: the CRS and ICANS grades with their
bounds, the criteria that decided them, what was not reported, the flags and actions, and the inputs
(the assessment graded, and for FHIR and CDS Hooks which resource gave which value). Plain HTML, no
script; it reuses the bedside form's stylesheet. Its words are the bedside pages' (service/i18n.py:
English or Simplified Chinese, by ?lang=, the form's language cookie or Accept-Language); what the
record itself holds (criteria, notes, flag messages, action texts, field paths) stays in English.

Access is the bedside form's (service/pages.py, service/session.py): open when AEGRADE_API_KEYS is
not set; otherwise a signed-in session (GET without one redirects to /login), or the API's bearer
key for a script. The page is never cached (service/middleware.py: Cache-Control no-store).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from service.errors import NotFound
from service.http import keys_match
from service.i18n import ENGLISH, N_, Translator, context as language_context, remember_choice
from service.pages import sessions_of, static_url, to_login
from service.session import SESSION_COOKIE
from service.settings import ServiceSettings
from service.store import AuditStore
from service.wording import SEVERITY_WORDS, grade_text

__all__ = ["router"]

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)




def _allowed(request: Request) -> bool:
    settings: ServiceSettings = request.app.state.settings
    if not settings.api_keys:
        return True
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and presented and keys_match(presented.strip(), settings.api_keys):
        return True
    return sessions_of(request).valid(request.cookies.get(SESSION_COOKIE))


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _inputs(assessment: Any, prefix: str = "") -> list[tuple[str, str]]:
    """The assessment's inputs as (dotted field, value) rows, in the order sent."""
    rows: list[tuple[str, str]] = []
    if isinstance(assessment, dict):
        for key, value in assessment.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                rows += _inputs(value, name + ".")
            else:
                rows.append((name, _value(value)))
    return rows


def _domain(part: Any, tr: Translator) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        return None
    return {
        "text": grade_text(part, capital=True, tr=tr),
        "status": part.get("status"),
        "ruleset": part.get("ruleset"),
        "tool": part.get("tool"),
        "drivers": [d for d in part.get("drivers") or [] if isinstance(d, dict) and d.get("drives")],
        "undetermined_by": [u for u in part.get("undetermined_by") or [] if isinstance(u, dict)],
        "missing": [str(m) for m in part.get("missing") or []],
        "notes": [str(n) for n in part.get("notes") or []],
    }


def page_context(record: dict[str, Any], tr: Translator = ENGLISH) -> dict[str, Any]:
    """What record.html shows, from the record as GET /v1/assessments/{id} gives it, worded in `tr`'s language."""
    request: dict[str, Any] = record["request"] if isinstance(record.get("request"), dict) else {}
    result: dict[str, Any] = record["result"] if isinstance(record.get("result"), dict) else {}
    assessment = request.get("assessment", request)
    mapping: dict[str, Any] = result["mapping"] if isinstance(result.get("mapping"), dict) else {}
    if "cds_hook" in request:
        source = tr(N_("CDS Hooks {hook} call ({service})")).format(hook=request.get("cds_hook"), service=request.get("service"))
    elif "fhir_bundle" in request:
        source = tr(N_("FHIR Bundle (POST /v1/fhir/assessments)"))
    else:
        source = tr(N_("assessment (JSON, form or episode)"))
    return {
        "id": record.get("id"),
        "created_at": record.get("created_at"),
        "outcome": record.get("outcome"),
        "delivered": record.get("delivered", True),
        "undelivered_reason": record.get("undelivered_reason"),
        "error": record.get("error"),
        "source": source,
        "rulesets": [f"{r.get('id')}@{r.get('version')}" for r in record.get("rulesets") or [] if isinstance(r, dict)],
        "crs": _domain(result.get("crs"), tr),
        "icans": _domain(result.get("icans"), tr),
        "flags": [f for f in result.get("flags") or [] if isinstance(f, dict)],
        "undetermined_flags": [f for f in result.get("undetermined_flags") or [] if isinstance(f, dict)],
        "actions": [a for a in result.get("actions") or [] if isinstance(a, dict)],
        "notes": [str(n) for n in result.get("notes") or []],
        "inputs": _inputs(assessment if isinstance(assessment, dict) else {}),
        "mapped": [m for m in mapping.get("mapped") or [] if isinstance(m, dict)],
        "ignored": [i for i in mapping.get("ignored") or [] if isinstance(i, dict)],
        "value": _value,
        "severity": lambda severity: tr(SEVERITY_WORDS.get(str(severity), str(severity))),
    }


@router.get("/assessments/{assessment_id}", response_class=HTMLResponse)
async def show_record(
    request: Request, assessment_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
) -> Response:
    if not _allowed(request):
        return to_login(request)
    store: AuditStore = request.app.state.store
    record = await run_in_threadpool(store.get, assessment_id)
    if record is None:
        raise NotFound(f"no assessment {assessment_id}")
    read = json.loads(json.dumps(record.as_read(), default=str))  # RawJSON text and datetimes, as the API gives them
    for part in ("request", "result"):
        if isinstance(read.get(part), str):
            read[part] = json.loads(read[part])
    language = language_context(request)
    context = {**language, **page_context(read, language["translator"]), "stylesheet": static_url("form.css")}
    return remember_choice(request, templates.TemplateResponse(request, "record.html", context))
