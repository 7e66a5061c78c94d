"""The patient's course pages: a pseudonymous patient's observations, treatments and chart.

    GET  /patients                            open a course by its pseudonymous id
    GET  /patients/start?assessment=<id>      from a form result: add that assessment to a course
    POST /patients/start                      ... as an observation at the time given; 303 to the course
    GET  /patients/{patient_id}               the course: summary, chart (SVG), data table, timeline,
                                              and the forms to add an observation or a treatment
    POST /patients/{patient_id}/observations  add an observation; 303 back to the course
    POST /patients/{patient_id}/treatments    add a treatment; 303 back to the course

The patient id is the episode API's (service/episodes.py PATIENT_ID_PATTERN): an opaque id chosen
by the ward or the integration, never a name, record number or birth date. Every write goes
through the episode API's grading path (service.grading.episode_job and grade_and_record), so a
grade shown here is on record, and fever masking and regrading are the episode's. An observation
form's fields are the bedside form's (service/form.py), parsed by it; only the observation time is
added here.

Access is the bedside form's (service/pages.py, service/session.py): with AEGRADE_API_KEYS set,
every page needs the session opened at /login (else 303 to /login), and every POST carries the CSRF
token (else 403, nothing recorded). A rendered form carries a random submission id, sent as the
write's Idempotency-Key, so a form sent twice (a double tap, a reload) is recorded once.

Times are entered and shown in UTC. No page needs JavaScript; the chart is SVG rendered here
(service/course_chart.py) with a data table as its text alternative.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from aegrade.episodes import DoseUnit, Episode, Observation, Treatment, TreatmentAgent
from aegrade.errors import EngineError, InvalidAssessment
from aegrade.models import Assessment
from service.course_chart import (
    AGENT_NAMES,
    Course,
    GradeMark,
    agent_name,
    course_from_episode,
    course_svg,
    format_time,
    grade_label,
    grade_words,
)
from service.episodes import PATIENT_ID_PATTERN, EpisodeStore
from service.errors import GradingUnavailable, IdempotencyKeyReused, StoreUnavailable
from service.form import FORM, assessment_from_form, errors_from_validation, read_number
from service.grading import episode_job, grade_and_record
from service.i18n import N_, Translator, context, negotiate, translator
from service.pages import PageCsrf, form_csrf, keys_on, signed_in, static_url, to_login
from service.session import CSRF_FIELD
from service.store import AuditStore, assessments

__all__ = ["OBSERVATION_FIELDS", "router"]

logger = logging.getLogger("aegrade.service")

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["static"] = static_url
templates.env.globals["format_time"] = format_time
router = APIRouter(include_in_schema=False)

PATIENT_ID = re.compile(PATIENT_ID_PATTERN)
ASSESSMENT_ID = re.compile(r"^[0-9a-f]{32}$")
SUBMISSION_FIELD = "submission"
_NOT_VERIFIED = N_("The form could not be verified (it may be from an old page). Check it and send it again.")
SUBMISSION = re.compile(r"^[0-9a-f]{32}$")
OBSERVED_AT_FIELD = "observed_at"

OBSERVATION_FIELDS: tuple[str, ...] = (
    "patient.age_years",
    "patient.weight_kg",
    "patient.developmental_delay",
    "vitals.temperature",
    "vitals.temperature_unit",
    "vitals.sbp_mmhg",
    "crs.hypotension",
    "crs.vasopressors",
    "crs.oxygen.device",
    "crs.oxygen.flow_l_min",
    "neuro.ice.orientation",
    "neuro.ice.naming",
    "neuro.ice.commands",
    "neuro.ice.writing",
    "neuro.ice.attention",
    *(f"neuro.capd.{i}" for i in range(8)),
    "neuro.unable_to_perform",
    "neuro.consciousness",
    "neuro.seizure",
    "neuro.motor",
    "neuro.cerebral_edema",
    "neuro.icp_signs",
)
"""The bedside form's fields the course's observation form asks (the essentials of CRS and ICANS);
fever masking is not asked: the episode derives it from the treatments recorded."""

AGENTS: tuple[str, ...] = typing.get_args(TreatmentAgent)
DOSE_UNITS: tuple[str, ...] = typing.get_args(DoseUnit)
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")


# ---- access -------------------------------------------------------------------------------------


def _allowed(request: Request) -> bool:
    """The bedside form's access: without keys, open; with keys, a session opened at /login."""
    return not keys_on(request) or signed_in(request)


def _course_url(patient_id: str) -> str:
    return "/patients/" + quote(patient_id, safe="")


# ---- reading the course -------------------------------------------------------------------------


def _read_course(request: Request, patient_id: str) -> tuple[Episode | None, dict[str, tuple[Any, Any]]]:
    """The patient's episode (None: nothing recorded) and the audit records (request, result) of its
    timeline entries, read in one query."""
    episodes: EpisodeStore = request.app.state.episodes
    store: AuditStore = request.app.state.store
    body = episodes.episode(patient_id)
    if body is None:
        return None, {}
    episode = Episode.model_validate_json(body)
    ids = [entry.assessment_id for entry in episode.timeline]
    if not ids:
        return episode, {}
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(
                select(assessments.c.id, assessments.c.request, assessments.c.result).where(assessments.c.id.in_(ids))
            ).all()
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"audit store unreadable: {type(exc).__name__}") from exc
    return episode, {row.id: (row.request, row.result) for row in rows}


def _latest_patient_values(episode: Episode | None, records: dict[str, tuple[Any, Any]]) -> dict[str, list[str]]:
    """The age, weight and developmental delay of the latest observation: the new observation's
    form starts with them (they rarely change within a course; the nurse can correct them)."""
    if episode is None:
        return {}
    for entry in reversed(episode.timeline):
        request, _ = records.get(entry.assessment_id, (None, None))
        sent = request.get("observation") if isinstance(request, dict) else None
        patient = sent.get("patient") if isinstance(sent, dict) else None
        if isinstance(patient, dict):
            values: dict[str, list[str]] = {}
            for key in ("age_years", "weight_kg"):
                if isinstance(patient.get(key), (int, float)):
                    values[f"patient.{key}"] = [f"{patient[key]:g}"]
            if patient.get("developmental_delay") is True:
                values["patient.developmental_delay"] = ["yes"]
            return values
    return {}


# ---- form input ---------------------------------------------------------------------------------


async def _fields(request: Request) -> dict[str, list[str]] | None:
    """The posted form as name -> values, or None when the body is not a form."""
    try:
        submitted = await request.form()
    except Exception:  # a body that is not a form: the page says so, never a 500
        return None
    fields: dict[str, list[str]] = {}
    for key in submitted.keys():
        fields[key] = [v for v in submitted.getlist(key) if isinstance(v, str)]
    return fields


def _one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.pop(name, [])
    return values[0].strip() if len(values) == 1 else ""


def _time(text: str, t: Translator) -> tuple[str | None, str | None]:
    """An entered time as ISO 8601 (a time without a zone is UTC, as the page says), or an error."""
    if not text:
        return None, t.gettext("Enter the time, e.g. 2026-11-19 14:30 (UTC).")
    if _LOCAL_TIME.match(text):
        return text.replace(" ", "T") + "Z", None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, t.gettext("Enter the time as YYYY-MM-DD HH:MM (UTC), e.g. 2026-11-19 14:30.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat(), None


def _time_error(exc: ValidationError, field: str, t: Translator) -> str | None:
    """The model's message about the time field (e.g. too far in the future), if any."""
    for error in exc.errors():
        if error["loc"] and error["loc"][0] == field:
            message = str(error["msg"]).removeprefix("Value error, ")
            return t.gettext("The time {problem}.").format(problem=message) if error["type"] == "value_error" else (
                t.gettext("Enter the time as YYYY-MM-DD HH:MM (UTC), e.g. 2026-11-19 14:30.")
            )
    return None


def _submission_key(fields: dict[str, list[str]]) -> str | None:
    token = _one(fields, SUBMISSION_FIELD)
    return f"course-form-{token}" if SUBMISSION.match(token) else None


async def _record(request: Request, kind: str, sent: BaseModel, patient_id: str, key: str | None) -> dict[str, Any]:
    """Write through the episode API's grading path; the answer as JSON."""
    answer = await grade_and_record(request.app.state, episode_job(kind, sent, patient_id, key))
    parsed: dict[str, Any] = json.loads(answer.body)
    return parsed


def _failure(exc: Exception, t: Translator) -> tuple[int, str]:
    """The status and the page's message for a write that gave no grade."""
    if isinstance(exc, EngineError):
        return 500, t.gettext(
            "The engine could not give a trustworthy grade. The failure is on record; nothing was added to the course. "
            "Grade by hand."
        )
    if isinstance(exc, IdempotencyKeyReused):
        return 409, t.gettext(
            "This form was already sent with other values. Check the course below, then send the form again if needed."
        )
    if isinstance(exc, GradingUnavailable):
        return 503, t.gettext("No grade came in time, so nothing was added. Try again, or grade by hand.")
    return 503, t.gettext("The course could not be written, so nothing was added. Try again, or grade by hand.")


# ---- pages --------------------------------------------------------------------------------------


def _render(
    request: Request, name: str, values: dict[str, Any], *, status: int = 200, csrf: PageCsrf | None = None
) -> Response:
    page = {**context(request), **values}
    if csrf is not None:
        page["csrf_token"] = csrf.token()
    response = templates.TemplateResponse(request, name, page, status_code=status)
    return csrf.finish(response) if csrf is not None else response


def _not_found(request: Request, message: str) -> Response:
    return _render(request, "patients.html", {"error": message, "patient_id": ""}, status=404)


def _unreadable(request: Request, t: Translator, patient_id: str = "") -> Response:
    logger.error("course: store unreadable")
    return _render(
        request, "patients.html",
        {"error": t.gettext("The course could not be read. Try again in a moment."), "patient_id": patient_id},
        status=503,
    )


@router.get("/patients", response_class=HTMLResponse)
async def open_course(request: Request) -> Response:
    """A page to open a patient's course by id; with ?patient_id= a redirect to it."""
    if not _allowed(request):
        return to_login(request)
    t = translator(negotiate(request))
    patient_id = request.query_params.get("patient_id")
    if patient_id is None:
        return _render(request, "patients.html", {"error": None, "patient_id": ""})
    patient_id = patient_id.strip()
    if not PATIENT_ID.match(patient_id):
        return _render(request, "patients.html", {"error": _id_error(patient_id, t), "patient_id": patient_id}, status=422)
    return RedirectResponse(_course_url(patient_id), status_code=303)


def _id_error(patient_id: str, t: Translator) -> str:
    if not patient_id:
        return t.gettext("Enter the patient's pseudonymous id.")
    return t.gettext(
        "A patient id is 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit "
        "(a pseudonymous id, never a name or record number)."
    )


def _recorded_assessment(request: Request, assessment_id: str) -> tuple[Assessment | None, datetime | None]:
    """The inputs and time of a recorded assessment that can join a course: one graded from an
    Assessment (the form, the JSON API), or an observation of another course. Else (None, None)."""
    store: AuditStore = request.app.state.store
    if not ASSESSMENT_ID.match(assessment_id):
        return None, None
    record = store.get(assessment_id)
    if record is None or record.outcome not in ("graded", "regraded"):
        return None, None
    sent: Any = record.request
    if isinstance(sent, str):
        try:
            sent = json.loads(sent)
        except ValueError:
            return None, None
    if isinstance(sent, dict) and isinstance(sent.get("observation"), dict):
        sent = {k: v for k, v in sent["observation"].items() if k != "observed_at"}
    try:
        return Assessment.model_validate_json(json.dumps(sent)), record.created_at
    except (ValidationError, TypeError, ValueError):
        return None, None


def _start_page(
    request: Request, csrf: PageCsrf, assessment_id: str, *, values: dict[str, str], errors: dict[str, str],
    failure: str | None = None, status: int = 200,
) -> Response:
    return _render(
        request, "course_start.html",
        {"assessment_id": assessment_id, "values": values, "errors": errors, "failure": failure,
         "submission": secrets.token_hex(16)},
        status=status, csrf=csrf,
    )


@router.get("/patients/start", response_class=HTMLResponse)
async def start_course(request: Request) -> Response:
    """From a form result: ask the patient's id and the observation time (default: when it was graded)."""
    if not _allowed(request):
        return to_login(request)
    t = translator(negotiate(request))
    assessment_id = request.query_params.get("assessment", "")
    try:
        assessment, graded_at = await run_in_threadpool(_recorded_assessment, request, assessment_id)
    except StoreUnavailable:
        return _unreadable(request, t)
    if assessment is None or graded_at is None:
        return _not_found(request, t.gettext("No recorded assessment with that id can be added to a course."))
    when = graded_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M")
    return _start_page(
        request, form_csrf(request), assessment_id, values={"patient_id": "", OBSERVED_AT_FIELD: when}, errors={}
    )


@router.post("/patients/start", response_class=HTMLResponse)
async def add_assessment_to_course(request: Request) -> Response:
    if not _allowed(request):
        return to_login(request)
    t = translator(negotiate(request))
    csrf = form_csrf(request)
    fields = await _fields(request)
    if fields is None:
        return _not_found(request, t.gettext("The form could not be read. Please submit it again."))
    token = _one(fields, CSRF_FIELD)
    assessment_id = _one(fields, "assessment")
    values = {"patient_id": _one(fields, "patient_id"), OBSERVED_AT_FIELD: _one(fields, OBSERVED_AT_FIELD)}
    key = _submission_key(fields)
    try:
        assessment, _ = await run_in_threadpool(_recorded_assessment, request, assessment_id)
    except StoreUnavailable:
        return _unreadable(request, t)
    if assessment is None:
        return _not_found(request, t.gettext("No recorded assessment with that id can be added to a course."))
    if not csrf.ok(token or None):
        return _start_page(
            request, csrf, assessment_id, values=values, errors={}, status=403,
            failure=t.gettext(_NOT_VERIFIED),
        )
    errors: dict[str, str] = {}
    if not PATIENT_ID.match(values["patient_id"]):
        errors["patient_id"] = _id_error(values["patient_id"], t)
    observed_at, time_error = _time(values[OBSERVED_AT_FIELD], t)
    if time_error:
        errors[OBSERVED_AT_FIELD] = time_error
    observation: Observation | None = None
    if observed_at is not None:
        try:
            observation = Observation.model_validate_json(
                json.dumps({**json.loads(assessment.model_dump_json(exclude_unset=True)), "observed_at": observed_at})
            )
        except ValidationError as exc:
            errors[OBSERVED_AT_FIELD] = _time_error(exc, "observed_at", t) or t.gettext("The assessment cannot be added.")
    if errors or observation is None:
        return _start_page(request, csrf, assessment_id, values=values, errors=errors, status=422)
    patient_id = values["patient_id"]
    try:
        answer = await _record(request, "observation", observation, patient_id, key)
    except InvalidAssessment:
        return _start_page(
            request, csrf, assessment_id, values=values, errors={}, status=422,
            failure=t.gettext("This assessment cannot be added as an observation."),
        )
    except (EngineError, IdempotencyKeyReused, GradingUnavailable, StoreUnavailable) as exc:
        status, message = _failure(exc, t)
        return _start_page(request, csrf, assessment_id, values=values, errors={}, failure=message, status=status)
    return RedirectResponse(f"{_course_url(patient_id)}?added={answer['observation_id']}", status_code=303)


def _course_page(
    request: Request,
    patient_id: str,
    csrf: PageCsrf,
    *,
    status: int = 200,
    observation: tuple[dict[str, list[str]], dict[str, list[str]]] | None = None,
    treatment: tuple[dict[str, str], dict[str, str]] | None = None,
    failure: str | None = None,
    episode: Episode | None = None,
    records: dict[str, tuple[Any, Any]] | None = None,
) -> Response:
    t = translator(negotiate(request))
    records = records or {}
    course = course_from_episode(episode, records) if episode is not None else Course(patient_id, (), ())
    added = request.query_params.get("added")
    given = request.query_params.get("treatment")
    observation_values, observation_errors = observation or (_latest_patient_values(episode, records), {})
    treatment_values, treatment_errors = treatment or ({}, {})
    fields = {f.name: f for section in FORM for f in section.fields}
    engine = request.app.state.engine
    device = fields.get("crs.oxygen.device")
    events: list[tuple[datetime, int, str, Any]] = [(r.observed_at, 1, "observation", r) for r in course.readings]
    events += [(g.administered_at, 0, "treatment", g) for g in course.treatments]  # a dose before the observation at its time
    events.sort(key=lambda e: (e[0], e[1]))
    page = {
        "patient_id": patient_id,
        "episode": episode,
        "course": course,
        "chart": Markup(course_svg(course, t)),
        "added": next((r for r in course.readings if r.observation_id == added), None) if added else None,
        "given": next((g for g in course.treatments if g.id == given), None) if given else None,
        "grade_label": lambda mark: grade_label(mark, t),
        "grade_words": lambda mark: grade_words(mark, t),
        "status_words": lambda status: grade_words(GradeMark(None, None, status), t),
        "agent_name": lambda agent: agent_name(agent, t),
        "observation_fields": [fields[name] for name in OBSERVATION_FIELDS if name in fields],
        "observation_values": observation_values,
        "observation_errors": observation_errors,
        "treatment_values": treatment_values,
        "treatment_errors": treatment_errors,
        "agents": [(agent, AGENT_NAMES[agent]) for agent in AGENTS],
        "dose_units": DOSE_UNITS,
        "events": [(kind, item) for _, _, kind, item in events],
        "oxygen_names": {value: t.gettext(label) for value, label in (device.options if device else ())},
        "neuro_open": any(name.startswith("neuro.") for name in (*observation_values, *observation_errors)),
        "failure": failure,
        "submission": secrets.token_hex(16),
        "now": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M"),
        "capd_age": engine.settings_for(engine.primary("icans").id)["capd_age_cutoff_years"],
        "signed_in": keys_on(request),
    }
    return _render(request, "course.html", page, status=status, csrf=csrf)


async def _course_or_failure(
    request: Request, patient_id: str, csrf: PageCsrf, **kwargs: Any
) -> Response:
    """The course page (with what a POST adds to it), or a 503 page when the store cannot be read."""
    try:
        episode, records = await run_in_threadpool(_read_course, request, patient_id)
    except StoreUnavailable:
        return _unreadable(request, translator(negotiate(request)), patient_id)
    return _course_page(request, patient_id, csrf, episode=episode, records=records, **kwargs)


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def show_course(request: Request, patient_id: str) -> Response:
    if not _allowed(request):
        return to_login(request)
    if not PATIENT_ID.match(patient_id):
        return _not_found(request, _id_error(patient_id, translator(negotiate(request))))
    return await _course_or_failure(request, patient_id, form_csrf(request))


@dataclass(frozen=True)
class _Posted:
    """A course form as posted: its language, CSRF check, fields and submission key."""

    t: Translator
    csrf: PageCsrf
    fields: dict[str, list[str]]
    key: str | None
    verified: bool


async def _posted(request: Request, patient_id: str) -> Response | _Posted:
    """What every course POST does first: the access check (to /login), the patient id (404), the
    body (400 when it cannot be read); then the form, with whether its CSRF token holds."""
    if not _allowed(request):
        return to_login(request)
    t = translator(negotiate(request))
    if not PATIENT_ID.match(patient_id):
        return _not_found(request, _id_error(patient_id, t))
    csrf = form_csrf(request)
    fields = await _fields(request)
    if fields is None:
        return await _course_or_failure(
            request, patient_id, csrf, status=400, failure=t.gettext("The form could not be read. Please submit it again.")
        )
    return _Posted(t, csrf, fields, _submission_key(fields), csrf.ok(_one(fields, CSRF_FIELD) or None))


@router.post("/patients/{patient_id}/observations", response_class=HTMLResponse)
async def add_observation(request: Request, patient_id: str) -> Response:
    posted = await _posted(request, patient_id)
    if isinstance(posted, Response):
        return posted
    t, csrf, fields, key = posted.t, posted.csrf, posted.fields, posted.key
    when = _one(fields, OBSERVED_AT_FIELD)
    shown = {k: v for k, v in fields.items()}
    shown[OBSERVED_AT_FIELD] = [when]
    if not posted.verified:
        return await _course_or_failure(
            request, patient_id, csrf, status=403, observation=(shown, {}), failure=t.gettext(_NOT_VERIFIED),
        )
    errors: dict[str, list[str]] = {}
    observed_at, time_error = _time(when, t)
    if time_error:
        errors[OBSERVED_AT_FIELD] = [time_error]
    assessment, parsed = assessment_from_form(fields, tr=t, engine=request.app.state.engine)
    if assessment is None:
        for name, messages in parsed.errors.items():
            errors.setdefault(name, []).extend(messages)
    observation: Observation | None = None
    if assessment is not None and observed_at is not None:
        try:
            observation = Observation.model_validate_json(
                json.dumps({**json.loads(assessment.model_dump_json(exclude_unset=True)), "observed_at": observed_at})
            )
        except ValidationError as exc:
            errors.setdefault(OBSERVED_AT_FIELD, []).append(_time_error(exc, "observed_at", t) or str(exc))
    if errors or observation is None:
        return await _course_or_failure(request, patient_id, csrf, status=422, observation=(shown, errors))
    try:
        answer = await _record(request, "observation", observation, patient_id, key)
    except InvalidAssessment as exc:
        return await _course_or_failure(
            request, patient_id, csrf, status=422, observation=(shown, errors_from_validation(exc, parsed.data, tr=t))
        )
    except (EngineError, IdempotencyKeyReused, GradingUnavailable, StoreUnavailable) as exc:
        status, message = _failure(exc, t)
        return await _course_or_failure(request, patient_id, csrf, status=status, observation=(shown, {}), failure=message)
    return RedirectResponse(f"{_course_url(patient_id)}?added={answer['observation_id']}", status_code=303)


@router.post("/patients/{patient_id}/treatments", response_class=HTMLResponse)
async def add_treatment(request: Request, patient_id: str) -> Response:
    posted = await _posted(request, patient_id)
    if isinstance(posted, Response):
        return posted
    t, csrf, fields, key = posted.t, posted.csrf, posted.fields, posted.key
    values = {name: _one(fields, name) for name in ("agent", "administered_at", "dose_mg", "dose_unit")}
    if not posted.verified:
        return await _course_or_failure(
            request, patient_id, csrf, status=403, treatment=(values, {}), failure=t.gettext(_NOT_VERIFIED),
        )
    errors: dict[str, str] = {}
    if values["agent"] not in AGENTS:
        errors["agent"] = t.gettext("Choose the treatment given.")
    administered_at, time_error = _time(values["administered_at"], t)
    if time_error:
        errors["administered_at"] = time_error
    data: dict[str, Any] = {"agent": values["agent"], "administered_at": administered_at}
    if values["dose_mg"]:
        dose = read_number(values["dose_mg"])  # the form's reading: "0,5" is 0.5, "1,200" (1.2 or 1200?) is refused
        if dose is None:
            errors["dose_mg"] = t.gettext("Enter the dose as a number, e.g. 8 or 0.5.")
        else:
            data["dose_mg"] = dose
    if values["dose_unit"]:
        if values["dose_unit"] not in DOSE_UNITS:
            errors["dose_unit"] = t.gettext("Choose one of the units.")
        elif "dose_mg" in data:
            data["dose_unit"] = values["dose_unit"]
        elif not errors.get("dose_mg"):
            errors["dose_mg"] = t.gettext("Enter the dose for this unit, or leave the unit blank.")
    treatment: Treatment | None = None
    if not errors:
        try:
            treatment = Treatment.model_validate_json(json.dumps(data))
        except ValidationError as exc:
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else "agent"
                if name == "administered_at":
                    errors[name] = _time_error(exc, name, t) or t.gettext("Enter the time.")
                elif name == "dose_mg":
                    errors[name] = t.gettext("The dose must be more than 0 and at most 100000.")
                else:
                    errors.setdefault(name, str(error["msg"]).removeprefix("Value error, "))
    if errors or treatment is None:
        return await _course_or_failure(request, patient_id, csrf, status=422, treatment=(values, errors))
    try:
        answer = await _record(request, "treatment", treatment, patient_id, key)
    except (EngineError, IdempotencyKeyReused, GradingUnavailable, StoreUnavailable, InvalidAssessment) as exc:
        status, message = _failure(exc, t)
        return await _course_or_failure(request, patient_id, csrf, status=status, treatment=(values, {}), failure=message)
    return RedirectResponse(f"{_course_url(patient_id)}?treatment={answer['id']}", status_code=303)
