"""The v1 endpoints (../shared/spec/api-v1.md). Thin: grading is aegrade's, storage is the store's."""

from __future__ import annotations

import asyncio
import email.message
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from aegrade import Engine
from aegrade.episodes import Episode, Observation, ObservationResult, Treatment, TreatmentResult
from aegrade.models import Assessment, AssessmentResult
from service.episodes import IDEMPOTENCY_KEY_PATTERN, PATIENT_ID_PATTERN, EpisodeStore
from service.grader import Job
from service.grading import episode_job, grade_and_record, new_assessment_id
from service.errors import NotFound, Unauthorized
from service.http import keys_match
from service.schemas import Health, ProblemResponse, RulesetInfo, StoredAssessment, ValidationErrorResponse
from service.settings import ServiceSettings
from service.store import AuditStore

__all__ = ["RAW_BODY_MODELS", "router"]

logger = logging.getLogger("aegrade.service")

HEALTH_PING_S = 2.0

_DESCRIPTIONS = {
    400: "The body is not JSON.",
    401: "AEGRADE_API_KEYS is set and the bearer key is missing or wrong.",
    404: "No such assessment or patient, or a malformed id (not of the form the path takes).",
    412: "CDS Hooks: a prefetch the service needs is missing, and it does not query FHIR servers itself.",
    409: "The Idempotency-Key was used before, for this patient, with a different request.",
    413: "The body is over the configured limit (AEGRADE_MAX_BODY_BYTES).",
    422: "Invalid or contradictory input: each entry names the field.",
    500: "The engine could not give a trustworthy grade (its evaluators disagreed, or a result was lost).",
    503: "The audit store cannot be written or read, or no grade came in time (grading_unavailable): no grade was given.",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ValidationErrorResponse if code in (400, 422) else ProblemResponse, "description": _DESCRIPTIONS[code]}
        for code in codes
    }


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


async def get_store(request: Request) -> AuditStore:
    return request.app.state.store  # type: ignore[no-any-return]


# Dependencies are async: FastAPI runs a sync dependency in the thread pool, a hand-over per call.
_bearer = HTTPBearer(auto_error=False, description="Required when AEGRADE_API_KEYS is set.")


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    settings: ServiceSettings = request.app.state.settings
    if not settings.api_keys:
        return
    if credentials is None or not keys_match(credentials.credentials, settings.api_keys):
        raise Unauthorized("a valid API key is required: Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})


EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[AuditStore, Depends(get_store)]

router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


RAW_BODY_MODELS: tuple[type[BaseModel], ...] = (Assessment,)  # app.py puts them in the OpenAPI components

# Request examples (OpenAPI `examples`): each is valid and grades; "Try it out" in /docs sends the first.
# tests/api/test_errors_shape.py posts every one of them.
ASSESSMENT_EXAMPLES: dict[str, dict[str, Any]] = {
    "adult_crs_and_icans": {
        "summary": "Adult: fever, low-flow oxygen, ICE 7 (CRS grade 2, ICANS grade 1)",
        "value": {
            "patient": {"age_years": 34, "weight_kg": 70},
            "vitals": {"temperature_c": 38.9, "sbp_mmhg": 112, "dbp_mmhg": 68, "heart_rate_bpm": 118, "spo2_pct": 93},
            "crs": {"fever_masked": False, "vasopressors": [], "oxygen": {"device": "nasal_cannula", "flow_l_min": 3}},
            "neuro": {
                "ice_score": 7,
                "consciousness": "alert",
                "seizure": "none",
                "motor": "none",
                "cerebral_edema": "none",
                "icp_signs": [],
            },
        },
    },
    "child_on_vasopressor": {
        "summary": "Child of 7: fever and one vasopressor (CRS grade 3); CAPD 10",
        "value": {
            "patient": {"age_years": 7, "weight_kg": 24.5},
            "vitals": {"temperature_c": 39.4, "sbp_mmhg": 78, "dbp_mmhg": 40, "heart_rate_bpm": 150},
            "crs": {"vasopressors": ["norepinephrine"], "oxygen": {"device": "none"}},
            "neuro": {"capd_score": 10, "consciousness": "alert"},
        },
    },
}
ASSESSMENT_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Assessment"}, "examples": ASSESSMENT_EXAMPLES}
        },
        "required": True,
    }
}
OBSERVATION_EXAMPLES: dict[str, Any] = {
    "febrile_on_oxygen": {
        "summary": "An observation: fever and low-flow oxygen",
        "value": {
            "observed_at": "2026-06-01T08:00:00Z",
            "patient": {"age_years": 34},
            "vitals": {"temperature_c": 38.6, "sbp_mmhg": 108, "dbp_mmhg": 66},
            "crs": {"vasopressors": [], "oxygen": {"device": "nasal_cannula", "flow_l_min": 2}},
        },
    }
}
TREATMENT_EXAMPLES: dict[str, Any] = {
    "tocilizumab": {
        "summary": "Tocilizumab 8 mg/kg: fever no longer required after it",
        "value": {"agent": "tocilizumab", "administered_at": "2026-06-01T09:00:00Z", "dose_mg": 8, "dose_unit": "mg/kg"},
    }
}


@v1.post(
    "/assessments",
    response_model=AssessmentResult,
    responses=_responses(400, 401, 413, 422, 500, 503),
    summary="Grade one snapshot of one patient",
    openapi_extra=ASSESSMENT_BODY,
)
async def create_assessment(request: Request) -> Response:
    """Grades one snapshot of one patient: the CRS grade (ASTCT 2019) when `vitals` or `crs` is
    sent, the ICANS grade (ICE or CAPD) when `neuro` is, the thrombosis flags and blinatumomab
    actions when their sections are, each with the rules, criteria and citations behind it and what
    was not reported. A section left out is "not reported", never "normal"; a request with no
    section beyond `patient` grades nothing and is a 422 (`nothing_to_grade`).

    The body is parsed, validated, graded and recorded in a grading process (service/grading.py);
    the answer is sent once the audit record is committed (GET /v1/assessments/{id} reads it)."""
    body = await request.body()
    if not body or not _json_media_type(request.headers.get("content-type")):
        # As FastAPI answers a body it does not read as JSON: the error handler makes it a 400.
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    answer = await grade_and_record(request.app.state, Job(kind="assessment", body=body, assessment_id=new_assessment_id()))
    return Response(answer.body, media_type="application/json")


def _json_media_type(content_type: str | None) -> bool:
    """Whether FastAPI would read a body of this Content-Type as JSON (application/json or +json)."""
    if content_type == "application/json":  # the usual case, without parsing
        return True
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


@v1.get(
    "/assessments/{assessment_id}",
    response_model=StoredAssessment,
    responses=_responses(401, 404, 503),
    summary="The audit record of one assessment",
)
def read_assessment(
    assessment_id: Annotated[
        str,
        Path(
            pattern=r"^[0-9a-f]{32}$",
            description="The id returned by POST (32 lowercase hex digits; any other id is a 404).",
            openapi_examples={"id": {"value": "4f8c0d6e2b7a4c1e9d3f5a7b9c1d3e5f"}},
        ),
    ],
    store: StoreDep,
) -> StoredAssessment:
    """What was sent, what was answered, with which rule sets and when: the audit record of an
    assessment (JSON, FHIR, CDS Hooks, the form or an episode observation)."""
    record = store.get(assessment_id)
    if record is None:
        raise NotFound(f"no assessment {assessment_id}")
    return StoredAssessment.model_validate(record.as_read())


@v1.get("/rulesets", response_model=list[RulesetInfo], responses=_responses(401), summary="The loaded rule sets")
def list_rulesets(engine: EngineDep) -> list[RulesetInfo]:
    """Every rule file loaded (and self-tested at start): id, version, sha256, title, status,
    citation, rule count and the settings in force."""
    return [
        RulesetInfo(
            id=rs.id,
            version=rs.version,
            sha256=rs.sha256,
            title=rs.file.title,
            status=rs.file.status,
            citation=rs.file.citation,
            rule_count=len(rs.rules),
            settings=engine.settings_for(rs.id),
        )
        for rs in engine.rulesets
    ]


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "The audit store is unreachable, or no grading process runs and none could be started."}})
async def health(store: StoreDep, request: Request) -> JSONResponse:
    """200 once the rule sets are loaded (the service does not start otherwise), the store answers
    and a grading process runs (or is being replaced); 503 naming what is unavailable.

    The store is pinged at most every HEALTH_PING_S seconds; a commit in that time counts as an answer.
    Grading is unavailable while no grading process is ready and the latest start failed (it is
    retried every 5 s): the service would answer every grade with 503."""
    stored = store.recently_ok(within_s=HEALTH_PING_S)
    if stored is None:
        stored = await _ping(store)
    grader = getattr(request.app.state, "grader", None)
    grading = grader is None or grader.can_grade
    ok = stored and grading
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "store": "ok" if stored else "unavailable", "grading": "ok" if grading else "unavailable"},
        status_code=200 if ok else 503,
    )


_ping_running: asyncio.Task[bool] | None = None


async def _ping(store: AuditStore) -> bool:
    """Probe the store (a write lock taken and released), at most one probe at a time and at most
    HEALTH_PING_S seconds of waiting: a stalled store is unavailable."""
    global _ping_running
    if _ping_running is None or _ping_running.done():
        _ping_running = asyncio.ensure_future(run_in_threadpool(store.ping))
    try:
        return await asyncio.wait_for(asyncio.shield(_ping_running), HEALTH_PING_S)
    except TimeoutError:
        store.failed()
        return False


# ---- patient episodes ---------------------------------------------------------------------------

PatientId = Annotated[
    str,
    Path(
        pattern=PATIENT_ID_PATTERN,
        description=(
            "An opaque identifier of 1-64 characters (letters, digits, '.', '_', '-'), chosen by the integration. "
            "Never a name, medical record number or birth date: see the README (Patient identifiers). "
            "An id not of this form is a 404."
        ),
        openapi_examples={"patient": {"value": "demo-patient-0001"}},
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "Optional, 1-255 printable ASCII characters, unique per patient. A POST repeated with the same key and "
            "body is stored once and answered with the first answer (header Idempotent-Replayed: true); the same "
            "key with another body is a 409."
        ),
    ),
]


async def _episode_write(request: Request, kind: str, sent: BaseModel, patient_id: str, key: str | None) -> Response:
    """An episode write, through the one grading path (the grading process holds the patient's
    lock while it grades)."""
    answer = await grade_and_record(request.app.state, episode_job(kind, sent, patient_id, key))
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, media_type="application/json", headers=headers)


@v1.post(
    "/patients/{patient_id}/observations",
    response_model=ObservationResult,
    responses=_responses(400, 401, 404, 409, 413, 422, 500, 503),
    summary="Grade one observation of a patient in the context of the patient's history",
)
async def add_observation(
    patient_id: PatientId,
    observation: Annotated[Observation, Body(openapi_examples=OBSERVATION_EXAMPLES)],
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Grades the observation with the fever masking that the recorded treatments imply, stores it
    with its audit record, and grades again the later observations whose history it changed."""
    return await _episode_write(request, "observation", observation, patient_id, idempotency_key)


@v1.post(
    "/patients/{patient_id}/treatments",
    response_model=TreatmentResult,
    responses=_responses(400, 401, 404, 409, 413, 422, 500, 503),
    summary="Record a treatment given to a patient",
)
async def add_treatment(
    patient_id: PatientId,
    treatment: Annotated[Treatment, Body(openapi_examples=TREATMENT_EXAMPLES)],
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Stores the treatment. A tocilizumab, anakinra, corticosteroid or antipyretic dose makes fever
    no longer required for the observations after it (once CRS has begun); those are graded again,
    and their ids are listed in `regraded`."""
    return await _episode_write(request, "treatment", treatment, patient_id, idempotency_key)


@v1.get(
    "/patients/{patient_id}/episode",
    response_model=Episode,
    responses=_responses(401, 404, 503),
    summary="A patient's course: current and peak grades, onset, resolution, timeline and treatments",
)
def read_episode(patient_id: PatientId, request: Request) -> Response:
    """The patient's episode as recorded: the current and peak CRS and ICANS grades, onset and
    resolution, the timeline of observations (each graded with the history before it) and the
    treatments. 404 when nothing was recorded for the patient."""
    episodes: EpisodeStore = request.app.state.episodes
    body = episodes.episode(patient_id)
    if body is None:
        raise NotFound("no episode for this patient")
    return Response(body, media_type="application/json")


router.include_router(v1)
