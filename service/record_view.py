"""GET /assessments/{id}: one assessment on record, as a page a clinician reads.

CDS Hooks cards link here (service/cds_hooks.py, under AEGRADE_PUBLIC_BASE_URL), never to the raw
JSON of the audit record. The page shows what the record holds: the CRS and ICANS grades with their
bounds, the criteria that decided them, what was not reported, the flags and actions, and the inputs
(the assessment graded, and for FHIR and CDS Hooks which resource gave which value). Plain HTML, no
script; it reuses the bedside form's stylesheet.

Access is the bedside form's (service/pages.py, service/session.py): open when AEGRADE_API_KEYS is
not set; otherwise a signed-in session (GET without one redirects to /login), or the API's bearer
key for a script. The page is never cached (service/middleware.py: Cache-Control no-store).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Path as PathParam, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from service.errors import NotFound
from service.http import keys_match
from service.session import SESSION_COOKIE, Sessions
from service.settings import ServiceSettings
from service.store import AuditStore
from service.wording import grade_text

__all__ = ["router"]

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


@cache
def _stylesheet() -> str:
    """The form's stylesheet, its URL carrying its content hash (as service/pages.py serves it)."""
    digest = hashlib.sha256((HERE / "static" / "form.css").read_bytes()).hexdigest()[:12]
    return f"/static/form.css?v={digest}"


def _sessions(request: Request) -> Sessions:
    """The app's Sessions, shared with the form (app.state.sessions; made as service/pages.py makes it)."""
    sessions: Sessions | None = getattr(request.app.state, "sessions", None)
    if sessions is None:
        settings: ServiceSettings = request.app.state.settings
        secret = settings.session_secret.get_secret_value().encode() if settings.session_secret else None
        sessions = request.app.state.sessions = Sessions(secret, settings.api_keys)
    return sessions


def _allowed(request: Request) -> bool:
    settings: ServiceSettings = request.app.state.settings
    if not settings.api_keys:
        return True
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and presented and keys_match(presented.strip(), settings.api_keys):
        return True
    return _sessions(request).valid(request.cookies.get(SESSION_COOKIE))


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


def _domain(part: Any) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        return None
    return {
        "text": grade_text(part, capital=True),
        "status": part.get("status"),
        "ruleset": part.get("ruleset"),
        "tool": part.get("tool"),
        "drivers": [d for d in part.get("drivers") or [] if isinstance(d, dict) and d.get("drives")],
        "undetermined_by": [u for u in part.get("undetermined_by") or [] if isinstance(u, dict)],
        "missing": [str(m) for m in part.get("missing") or []],
        "notes": [str(n) for n in part.get("notes") or []],
    }


def page_context(record: dict[str, Any]) -> dict[str, Any]:
    """What record.html shows, from the record as GET /v1/assessments/{id} gives it."""
    request: dict[str, Any] = record["request"] if isinstance(record.get("request"), dict) else {}
    result: dict[str, Any] = record["result"] if isinstance(record.get("result"), dict) else {}
    assessment = request.get("assessment", request)
    mapping: dict[str, Any] = result["mapping"] if isinstance(result.get("mapping"), dict) else {}
    if "cds_hook" in request:
        source = f"CDS Hooks {request.get('cds_hook')} call ({request.get('service')})"
    elif "fhir_bundle" in request:
        source = "FHIR Bundle (POST /v1/fhir/assessments)"
    else:
        source = "assessment (JSON, form or episode)"
    return {
        "id": record.get("id"),
        "created_at": record.get("created_at"),
        "outcome": record.get("outcome"),
        "delivered": record.get("delivered", True),
        "undelivered_reason": record.get("undelivered_reason"),
        "error": record.get("error"),
        "source": source,
        "rulesets": [f"{r.get('id')}@{r.get('version')}" for r in record.get("rulesets") or [] if isinstance(r, dict)],
        "crs": _domain(result.get("crs")),
        "icans": _domain(result.get("icans")),
        "flags": [f for f in result.get("flags") or [] if isinstance(f, dict)],
        "undetermined_flags": [f for f in result.get("undetermined_flags") or [] if isinstance(f, dict)],
        "actions": [a for a in result.get("actions") or [] if isinstance(a, dict)],
        "notes": [str(n) for n in result.get("notes") or []],
        "inputs": _inputs(assessment if isinstance(assessment, dict) else {}),
        "mapped": [m for m in mapping.get("mapped") or [] if isinstance(m, dict)],
        "ignored": [i for i in mapping.get("ignored") or [] if isinstance(i, dict)],
        "value": _value,
    }


@router.get("/assessments/{assessment_id}", response_class=HTMLResponse)
async def show_record(
    request: Request, assessment_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]
) -> Response:
    if not _allowed(request):
        return RedirectResponse("/login", status_code=303)
    store: AuditStore = request.app.state.store
    record = await run_in_threadpool(store.get, assessment_id)
    if record is None:
        raise NotFound(f"no assessment {assessment_id}")
    read = json.loads(json.dumps(record.as_read(), default=str))  # RawJSON text and datetimes, as the API gives them
    for part in ("request", "result"):
        if isinstance(read.get(part), str):
            read[part] = json.loads(read[part])
    context = {**page_context(read), "stylesheet": _stylesheet()}
    return templates.TemplateResponse(request, "record.html", context)
