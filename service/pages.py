"""The bedside form at `/`: GET shows it, POST grades it and shows the result on the same page.

It works as a plain HTML form (JavaScript off: a POST that returns the page); service/static/form.js
only adds the live ICE/CAPD totals, the tool switch and the flow field. Validation is the API's
(the same pydantic models and engine checks), with errors shown next to their fields in plain
words and everything typed kept. A grade shown here is on record in the audit trail, as through
the API; when it cannot be recorded, no grade is shown.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from aegrade import Engine
from aegrade.errors import EngineError, InvalidAssessment
from aegrade.models import AssessmentResult
from service.form import FLOW_DEVICES, FORM, LABELS, assessment_from_form, errors_from_validation, field_name, form_values
from service.routes import grade_on_record
from service.store import StoreUnavailable
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


def _page(
    request: Request,
    *,
    status: int = 200,
    values: dict[str, list[str]] | None = None,
    errors: dict[str, list[str]] | None = None,
    result: AssessmentResult | None = None,
    failure: str | None = None,
) -> HTMLResponse:
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
        "capd_age": engine.settings_for("astct-icans").get("capd_age_cutoff_years", 12),
        "flow_devices": FLOW_DEVICES,
        "rulesets": [rs.label for rs in engine.rulesets],
    }
    return templates.TemplateResponse(request, "form.html", context, status_code=status)


@router.get("/", response_class=HTMLResponse)
async def show_form(request: Request) -> HTMLResponse:
    return _page(request)


@router.post("/", response_class=HTMLResponse)
async def grade_form(request: Request) -> HTMLResponse:
    try:
        submitted = await request.form()
    except Exception:  # a body that is not a form: say so on the page, never a 500
        return _page(request, status=400, errors={"": ["The form could not be read. Please submit it again."]})
    fields: dict[str, list[str]] = {}
    for key in submitted.keys():
        fields[key] = [v for v in submitted.getlist(key) if isinstance(v, str)]
    values = form_values(fields)
    assessment, parsed = assessment_from_form(fields)
    if assessment is None:
        return _page(request, status=422, values=values, errors=parsed.errors)
    try:
        result, _ = await grade_on_record(request.app.state, assessment)
    except InvalidAssessment as exc:
        return _page(request, status=422, values=values, errors=errors_from_validation(exc, parsed.data))
    except EngineError as exc:
        return _page(
            request, status=500, values=values,
            failure=f"The engine could not give a trustworthy grade ({exc.code}). The failure is on record; grade by hand.",
        )
    except StoreUnavailable:
        logger.error("form: audit store unavailable; no grade shown")
        return _page(
            request, status=503, values=values,
            failure="The grade could not be recorded, so it is not shown. Try again, or grade by hand.",
        )
    return _page(request, values=values, result=result)
