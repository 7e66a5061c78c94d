"""The v1 endpoints (../shared/spec/api-v1.md). Thin: grading is aegrade's, storage is the store's."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aegrade import Engine
from aegrade.errors import EngineError
from aegrade.models import Assessment, AssessmentResult
from service.http import ApiError, keys_match
from service.schemas import Health, ProblemResponse, RulesetInfo, StoredAssessment, ValidationErrorResponse
from service.settings import ServiceSettings
from service.store import AuditRecord, AuditStore

__all__ = ["router"]

logger = logging.getLogger("aegrade.service")

_DESCRIPTIONS = {
    400: "The body is not JSON.",
    401: "AEGRADE_API_KEYS is set and the bearer key is missing or wrong.",
    404: "No assessment with this id.",
    413: "The body is over the configured limit (AEGRADE_MAX_BODY_BYTES).",
    422: "Invalid or contradictory input: each entry names the field.",
    500: "The engine could not give a trustworthy grade (its evaluators disagreed, or a result was lost).",
    503: "The audit store cannot be written or read: no grade was given.",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ValidationErrorResponse if code in (400, 422) else ProblemResponse, "description": _DESCRIPTIONS[code]}
        for code in codes
    }


def get_engine(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def get_store(request: Request) -> AuditStore:
    return request.app.state.store  # type: ignore[no-any-return]


_bearer = HTTPBearer(auto_error=False, description="Required when AEGRADE_API_KEYS is set.")


def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    settings: ServiceSettings = request.app.state.settings
    if not settings.api_keys:
        return
    if credentials is None or not keys_match(credentials.credentials, settings.api_keys):
        raise ApiError(401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})


EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[AuditStore, Depends(get_store)]

router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


@v1.post(
    "/assessments",
    response_model=AssessmentResult,
    responses=_responses(400, 401, 413, 422, 500, 503),
    summary="Grade one snapshot of one patient",
)
def create_assessment(assessment: Assessment, engine: EngineDep, store: StoreDep) -> Response:
    started = time.perf_counter()
    request_data = assessment.model_dump(mode="json", exclude_unset=True)
    try:
        result = engine.assess(assessment)
    except EngineError as exc:
        # No grade is given, but the failure is on record.
        failure = AuditRecord(
            id=_new_id(),
            created_at=_now(),
            outcome=exc.code,
            request=request_data,
            result=None,
            error={"code": exc.code, "message": str(exc)},
            rulesets=[],
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        store.record(failure)
        logger.error("assessment %s failed in the engine: %s", failure.id, exc.code)
        raise
    graded = time.perf_counter()
    body = result.model_dump(mode="json")
    store.record(
        AuditRecord(
            id=result.id,
            created_at=result.evaluated_at,
            outcome="graded",
            request=request_data,
            result=body,
            error=None,
            rulesets=body["rulesets"],
            duration_ms=(graded - started) * 1000,
        )
    )
    logger.info(
        "assessment %s graded in %.2f ms, stored in %.2f ms",
        result.id, (graded - started) * 1000, (time.perf_counter() - graded) * 1000,
    )
    return JSONResponse(body)


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
        raise ApiError(404, "not_found", f"no assessment {assessment_id}")
    return StoredAssessment.model_validate(record.as_dict())


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
def health(store: StoreDep) -> JSONResponse:
    """200 once the rule sets are loaded (the service does not start otherwise) and the store answers."""
    ok = store.ping()
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "store": "ok" if ok else "unavailable"}, status_code=200 if ok else 503
    )


router.include_router(v1)


def _new_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
