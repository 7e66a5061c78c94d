"""The one grading path: every route that grades calls `grade_and_record`.

    route (JSON, form, FHIR, CDS Hooks, episodes)
      parse its own input into a Job (service/grader.py)
      └─ grade_and_record(state, job)
           ├─ the grading process: parse, grade (both evaluators), commit the audit record
           ├─ one time limit, AEGRADE_GRADING_TIMEOUT_S, for all of it
           └─ the reply as the answer, or as the error every route answers the same way

The audit trail and the answer never contradict each other when the service knows the outcome:
when a record may have been committed but its answer is not given (the grading process replied too
late, crashed, or the request was cancelled), the record is marked undelivered
(service/store.py). The one case left is a crash of the web process between the commit and the
reply: the record then says graded and no answer was sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from aegrade.errors import EngineError, FieldError, InvalidAssessment
from aegrade.fhir import FhirAssessmentResult
from aegrade.models import Assessment, AssessmentResult
from service.errors import GradingFailed, GradingUnavailable, IdempotencyKeyReused, StoreUnavailable
from service.grader import Grader, Job, Reply, recorded_request
from service.store import AuditRecord, AuditStore

__all__ = ["Answer", "episode_job", "grade_and_record", "grade_on_record", "new_assessment_id"]

logger = logging.getLogger("aegrade.service")


@dataclass(frozen=True)
class Answer:
    """A grading's answer: the JSON text to send, and whether it replays an earlier answer."""

    body: str
    replayed: bool = False


def new_assessment_id() -> str:
    return uuid.uuid4().hex


def episode_job(kind: str, sent: BaseModel, patient_id: str, key: str | None) -> Job:
    """The Job of an episode write (kind "observation" or "treatment"): the Observation or Treatment
    as JSON text, for `patient_id`, with `key` its Idempotency-Key. The episode API and the course
    page (service/course.py) both build their writes here."""
    return Job(
        kind=kind,
        body=sent.model_dump_json(exclude_unset=True).encode(),
        assessment_id=new_assessment_id(),
        patient_id=patient_id,
        key=key,
    )


async def grade_and_record(
    state: Any, job: Job, *, then: Callable[[Answer], Awaitable[None]] | None = None
) -> Answer:
    """Grade and record `job` in a grading process, within AEGRADE_GRADING_TIMEOUT_S: the answer.

    Raises what the error handlers answer (service/http.py): RequestValidationError (400/422),
    InvalidAssessment (422), ServiceError (409, 503 grading_unavailable), EngineError (500),
    StoreUnavailable (503). `then` runs after the grade is committed and before it is answered (the
    CDS route stores its cards): if it fails, the record is marked undelivered too."""
    started = time.perf_counter()
    grader: Grader = state.grader
    store: AuditStore = state.store
    try:
        reply = await grader.grade(job, timeout=state.settings.grading_timeout_s)
    except GradingFailed as exc:
        failure = None
        if exc.crashed:
            failure = AuditRecord.failed(
                request=recorded_request(job), code=EngineError.code, message=str(exc),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        if exc.sent:
            await _mark_undelivered(store, job, str(exc), failure)
        if exc.crashed:
            raise EngineError(f"no grade was given: {exc}") from exc
        raise GradingUnavailable(f"no grade was given: {exc}") from exc
    except asyncio.CancelledError:
        _mark_later(store, job, "the request was cancelled before its answer was sent")
        raise
    _store_news(store, reply)
    answer = _answer(reply)
    if then is not None:
        try:
            await then(answer)
        except BaseException as exc:
            await asyncio.shield(_mark_undelivered(store, job, f"not answered: {type(exc).__name__}", None))
            raise
    if answer.replayed:
        await _mark_redelivered(store, answer)
    return answer


async def _mark_redelivered(store: AuditStore, answer: Answer) -> None:
    """A replayed episode answer is being given: if its record was marked undelivered, it is now
    delivered (the mark keeps its reason and gains the time). The answer is right either way, so a
    store that cannot take the note is logged, not answered with an error."""
    try:
        record_id = json.loads(answer.body).get("id")
    except (ValueError, AttributeError):
        return
    if not isinstance(record_id, str):
        return  # a treatment's answer names no record of its own
    try:
        await asyncio.to_thread(store.mark_redelivered, [record_id])
    except StoreUnavailable as exc:
        logger.error("a replayed answer was given, but its record's undelivered mark was not updated: %s", exc)


async def grade_on_record(
    state: Any,
    assessment: Assessment,
    *,
    recorded_request: dict[str, Any] | None = None,
    finish: tuple[Any, ...] | None = None,
    then: Callable[[AssessmentResult], Awaitable[None]] | None = None,
) -> tuple[AssessmentResult, str]:
    """`grade_and_record` for a route that parsed an Assessment itself (the form, FHIR, CDS Hooks):
    the result and its JSON. `recorded_request` replaces the assessment as the record's request;
    `finish` is Job.finish; `then` as for grade_and_record, given the result."""
    job = Job(
        kind="assessment",
        body=assessment.model_dump_json(exclude_unset=True).encode(),
        assessment_id=new_assessment_id(),
        recorded_request=None if recorded_request is None else json.dumps(recorded_request, ensure_ascii=False),
        finish=finish,
    )
    model = FhirAssessmentResult if finish is not None and finish[0] == "fhir" else AssessmentResult
    results: list[AssessmentResult] = []

    async def parsed(answer: Answer) -> None:
        results.append(model.model_validate_json(answer.body))
        if then is not None:
            await then(results[0])

    answer = await grade_and_record(state, job, then=parsed)
    return results[0], answer.body


def _store_news(store: AuditStore, reply: Reply) -> None:
    """What a reply says about the store, for /healthz."""
    if reply.kind == "store_unavailable":
        store.failed()
    elif reply.kind in ("graded", "episode", "engine_error"):
        store.succeeded()


async def _mark_undelivered(store: AuditStore, job: Job, reason: str, failure: AuditRecord | None) -> None:
    """Mark the job's record (committed, or about to be) as not delivered; put the failure on record."""
    try:
        await asyncio.wait_for(
            asyncio.to_thread(store.mark_undelivered, [job.assessment_id], reason, failure=failure),
            timeout=store.lock_timeout_s + 5,
        )
    except (StoreUnavailable, TimeoutError) as exc:
        logger.error("assessment %s: the answer was not given and the store could not say so: %s", job.assessment_id, exc)
    else:
        logger.warning("assessment %s: not delivered (%s)", job.assessment_id, reason)


_pending_marks: set[asyncio.Task[None]] = set()


def _mark_later(store: AuditStore, job: Job, reason: str) -> None:
    """For a cancelled request: mark it undelivered in a task of its own (the request's is ending)."""
    task = asyncio.get_running_loop().create_task(_mark_undelivered(store, job, reason, None))
    _pending_marks.add(task)
    task.add_done_callback(_pending_marks.discard)


def _answer(reply: Reply) -> Answer:
    """The grading process's reply as the answer (or the exception the error handlers answer)."""
    if reply.kind == "graded":
        return Answer(reply.payload)
    if reply.kind == "episode":
        body, replayed = reply.payload
        return Answer(body, replayed)
    if reply.kind == "json_invalid":
        line, column, message, position = reply.payload  # the error handler says all four (service/http.py)
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", position),
                    "msg": "JSON decode error",
                    "ctx": {"error": message, "line": line, "column": column},
                }
            ]
        )
    if reply.kind == "unreadable":
        raise StarletteHTTPException(400, "There was an error parsing the body")
    if reply.kind == "invalid":
        raise RequestValidationError([{"loc": ("body", *loc), "msg": msg, "type": kind} for loc, msg, kind in reply.payload])
    if reply.kind == "invalid_assessment":
        raise InvalidAssessment([FieldError(loc=tuple(loc), msg=msg, code=code) for loc, msg, code in reply.payload])
    if reply.kind == "idempotency_conflict":
        raise IdempotencyKeyReused(reply.payload)
    if reply.kind == "engine_error":
        code, message = reply.payload
        error = EngineError(message)
        error.code = code
        raise error
    if reply.kind == "store_unavailable":
        raise StoreUnavailable(reply.payload)
    raise EngineError(f"the grading process answered {reply.kind!r}, which this service does not know")
