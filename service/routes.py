"""The v1 endpoints (../shared/spec/api-v1.md). Thin: grading is aegrade's, storage is the store's."""

from __future__ import annotations

import asyncio
import email.message
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request
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
from service.grading import grade_and_record, grade_on_record, new_assessment_id
from service.errors import NotFound, Unauthorized
from service.http import keys_match
from service.schemas import Health, ProblemResponse, RulesetInfo, StoredAssessment, ValidationErrorResponse
from service.settings import ServiceSettings
from service.store import AuditStore

__all__ = ["RAW_BODY_MODELS", "grade_on_record", "router"]

logger = logging.getLogger("aegrade.service")

HEALTH_PING_S = 2.0

_DESCRIPTIONS = {
    400: "The body is not JSON.",
    401: "AEGRADE_API_KEYS is set and the bearer key is missing or wrong.",
    404: "No such assessment or patient.",
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
ASSESSMENT_BODY = {
    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Assessment"}}}, "required": True}
}


@v1.post(
    "/assessments",
    response_model=AssessmentResult,
    responses=_responses(400, 401, 413, 422, 500, 503),
    summary="Grade one snapshot of one patient",
    openapi_extra=ASSESSMENT_BODY,
)
async def create_assessment(request: Request) -> Response:
    """Grades, commits the audit record, then answers. The body (an Assessment) is parsed,
    validated, graded and recorded in a grading process (service/grading.py), the answer sent
    once the record is committed."""
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
    responses=_responses(401, 404, 422, 503),
    summary="The audit record of one assessment",
)
def read_assessment(
    assessment_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The id returned by POST.")],
    store: StoreDep,
) -> StoredAssessment:
    record = store.get(assessment_id)
    if record is None:
        raise NotFound(f"no assessment {assessment_id}")
    return StoredAssessment.model_validate(record.as_read())


@v1.get("/rulesets", response_model=list[RulesetInfo], responses=_responses(401), summary="The loaded rule sets")
def list_rulesets(engine: EngineDep) -> list[RulesetInfo]:
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


@router.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "The audit store is unreachable."}})
async def health(store: StoreDep) -> JSONResponse:
    """200 once the rule sets are loaded (the service does not start otherwise) and the store answers.

    The store is pinged at most every HEALTH_PING_S seconds; a commit in that time counts as an answer."""
    ok = store.recently_ok(within_s=HEALTH_PING_S)
    if ok is None:
        ok = await _ping(store)
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "store": "ok" if ok else "unavailable"}, status_code=200 if ok else 503
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
            "Never a name, medical record number or birth date: see the README (Patient identifiers)."
        ),
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


async def _episode_write(request: Request, job: Job) -> Response:
    """An episode write, through the one grading path (the grading process holds the patient's
    lock while it grades)."""
    answer = await grade_and_record(request.app.state, job)
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, media_type="application/json", headers=headers)


@v1.post(
    "/patients/{patient_id}/observations",
    response_model=ObservationResult,
    responses=_responses(400, 401, 409, 413, 422, 500, 503),
    summary="Grade one observation of a patient in the context of the patient's history",
)
async def add_observation(
    patient_id: PatientId, observation: Observation, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """Grades the observation with the fever masking that the recorded treatments imply, stores it
    with its audit record, and grades again the later observations whose history it changed."""
    job = Job(
        kind="observation",
        body=observation.model_dump_json(exclude_unset=True).encode(),
        assessment_id=new_assessment_id(),
        patient_id=patient_id,
        key=idempotency_key,
    )
    return await _episode_write(request, job)


@v1.post(
    "/patients/{patient_id}/treatments",
    response_model=TreatmentResult,
    responses=_responses(400, 401, 409, 413, 422, 500, 503),
    summary="Record a treatment given to a patient",
)
async def add_treatment(
    patient_id: PatientId, treatment: Treatment, request: Request, idempotency_key: IdempotencyKey = None
) -> Response:
    """Stores the treatment. A tocilizumab, anakinra, corticosteroid or antipyretic dose makes fever
    no longer required for the observations after it (once CRS has begun); those are graded again,
    and their ids are listed in `regraded`."""
    job = Job(
        kind="treatment",
        body=treatment.model_dump_json(exclude_unset=True).encode(),
        assessment_id=new_assessment_id(),
        patient_id=patient_id,
        key=idempotency_key,
    )
    return await _episode_write(request, job)


@v1.get(
    "/patients/{patient_id}/episode",
    response_model=Episode,
    responses=_responses(401, 404, 422, 503),
    summary="A patient's course: current and peak grades, onset, resolution, timeline and treatments",
)
def read_episode(patient_id: PatientId, request: Request) -> Response:
    episodes: EpisodeStore = request.app.state.episodes
    body = episodes.episode(patient_id)
    if body is None:
        raise NotFound("no episode for this patient")
    return Response(body, media_type="application/json")


router.include_router(v1)
