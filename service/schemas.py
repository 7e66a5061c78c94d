"""HTTP-only response models: errors, stored audit records, rule set listings. The clinical models
(Assessment, AssessmentResult) come from aegrade.models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aegrade.episodes import ObservationResult
from aegrade.fhir import FhirAssessmentResult
from aegrade.models import AssessmentResult, RulesetRef

__all__ = [
    "FieldErrorOut",
    "Health",
    "Problem",
    "ProblemResponse",
    "RulesetInfo",
    "StoredAssessment",
    "ValidationErrorResponse",
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldErrorOut(_Out):
    loc: list[str | int] = Field(description='Where the problem is, e.g. ["body", "vitals", "temperature_c"].')
    msg: str
    type: str = Field(description="A machine-readable kind, e.g. float_type, contradiction, wrong_tool, json_invalid.")


class ValidationErrorResponse(_Out):
    """400 (the body is not JSON) and 422 (invalid or contradictory input): the one error shape, its
    `detail` the list of bad fields (one entry per field)."""

    code: str = Field(
        description=(
            "json_invalid (400); invalid_request, invalid_assessment, fhir_input_invalid, duplicate_key or "
            "nothing_to_grade (422). README: Errors."
        ),
        examples=["invalid_request"],
    )
    message: str = Field(
        description="A summary of the fields at fault; for a JSON syntax error, its line, column and what was expected.",
        examples=["body.vitals.temperature_c: Input should be less than or equal to 45"],
    )
    detail: list[FieldErrorOut]


class Problem(_Out):
    code: str = Field(description="Stable error code (README: Errors).")
    message: str


class ProblemResponse(_Out):
    """401, 404, 405, 408, 409, 412, 413, 415, 500 and 503: the one error shape, its `detail` the
    code and message again (as v1 answered them)."""

    code: str = Field(description="Stable error code (README: Errors).", examples=["not_found"])
    message: str = Field(examples=["no assessment 4f8c0d6e2b7a4c1e9d3f5a7b9c1d3e5f"])
    detail: Problem


class StoredAssessment(_Out):
    """An audit record: what was sent, what was answered, with which rule sets, and when."""

    id: str
    created_at: datetime
    outcome: str = Field(
        description=(
            '"graded"; "regraded" for an episode observation graded again because its history changed; '
            "or the code of the engine error that stopped the grading."
        )
    )
    request: dict[str, Any] = Field(
        description=(
            "The assessment as validated (fields that were sent). For an episode observation: "
            "{patient_id, observation_id, observation}."
        )
    )
    result: FhirAssessmentResult | ObservationResult | AssessmentResult | None
    error: Problem | None
    rulesets: list[RulesetRef]
    duration_ms: float
    delivered: bool = Field(
        default=True,
        description=(
            "false when the service knows the answer was not given although the record was committed: the grading "
            "process replied after AEGRADE_GRADING_TIMEOUT_S, crashed after its commit, or the request was cancelled "
            "(the client got 500/503 or nothing). The one case the service cannot know is a crash of the web process "
            "between the commit and the answer."
        ),
    )
    undelivered_reason: str | None = Field(default=None, description="Why the answer was not delivered.")
    redelivered_at: datetime | None = Field(
        default=None,
        description=(
            "When an answer first not delivered was given after all, to an episode write repeated with its "
            "Idempotency-Key (delivered is then true; undelivered_reason stays, saying what happened first)."
        ),
    )


class RulesetInfo(_Out):
    id: str
    version: str
    sha256: str
    title: str
    status: Literal["draft", "active", "retired"]
    citation: str
    rule_count: int
    settings: dict[str, Any] = Field(description="The settings in force.")


class Health(_Out):
    status: Literal["ok", "unavailable"]
    store: Literal["ok", "unavailable"]
    grading: Literal["ok", "unavailable"] = "ok"  # unavailable: no grading process runs and none could be started
