"""FHIR R4 input: POST /v1/fhir/assessments grades a Bundle; GET /v1/fhir/CodeSystem/assessment
serves our own CodeSystem. The mapping is aegrade/fhir.py; this module is the HTTP side.

The request schema in the OpenAPI document is ours (FhirBundleIn): the Bundle's own elements are
checked here, each resource read by aegrade is checked as FHIR R4 by fhir.resources, and the values
are read strictly (aegrade.fhir). What was sent and what it was mapped to are both on record.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from aegrade.errors import FieldError, InvalidAssessment
from aegrade.fhir import (
    FhirAssessmentResult,
    FhirInputError,
    Located,
    bundle_resources,
    errors_at_sources,
    fever_threshold,
    map_resources,
)
from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, OWN_CODES
from aegrade.models import Assessment
from aegrade.validation import NOTHING_TO_GRADE
from service.grading import grade_on_record
from service.routes import _responses, require_api_key
from service.settings import ServiceSettings

__all__ = ["FhirBundleIn", "example_resources", "grade_fhir", "router"]

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
MAX_ENTRIES = 500


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BundleEntryIn(_In):
    fullUrl: str | None = None
    resource: dict[str, Any] = Field(description="A FHIR R4 resource: Patient, Observation, MedicationAdministration, Medication (others are listed as ignored).")
    request: dict[str, Any] | None = Field(default=None, description="Transaction bundles: the entry's request (not acted on).")
    search: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    link: list[dict[str, Any]] | None = None


class FhirBundleIn(_In):
    """A FHIR R4 Bundle of type collection, transaction, searchset or batch-response (README: FHIR R4 input)."""

    resourceType: Literal["Bundle"]
    type: Literal["collection", "transaction", "searchset", "batch-response"]
    id: str | None = None
    meta: dict[str, Any] | None = None
    implicitRules: str | None = None
    language: str | None = None
    identifier: dict[str, Any] | None = None
    timestamp: str | None = None
    total: int | None = Field(default=None, strict=True)  # strict: false is not a count
    link: list[dict[str, Any]] | None = None
    entry: list[BundleEntryIn] = Field(default_factory=list, max_length=MAX_ENTRIES)
    signature: dict[str, Any] | None = None


def example_resources(when: str, birth_date: str = "1990-03-15", patient_id: str = "example-patient") -> list[dict[str, Any]]:
    """The resources of the OpenAPI examples (FHIR and CDS Hooks): an adult with a fever of 38.9 °C,
    on a nasal cannula at 3 L/min, fever masking charted as not given, ICE 7 and alert: CRS grade 2,
    ICANS grade 1. `when` is every Observation's effectiveDateTime."""

    def observation(n: int, system: str, code: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": f"example-{n}",
            "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": when,
            **value,
        }

    def quantity(value: float, unit: str) -> dict[str, Any]:
        return {"valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}

    return [
        {"resourceType": "Patient", "id": patient_id, "birthDate": birth_date},
        observation(1, LOINC, "8310-5", quantity(38.9, "Cel")),
        observation(2, LOINC, "8480-6", quantity(112, "mm[Hg]")),
        observation(3, LOINC, "8462-4", quantity(68, "mm[Hg]")),
        observation(4, LOINC, "3151-8", quantity(3, "L/min")),
        observation(5, AEGRADE_SYSTEM, "oxygen-device", {"valueCodeableConcept": {"coding": [{"system": AEGRADE_SYSTEM, "code": "nasal_cannula"}]}}),
        observation(6, AEGRADE_SYSTEM, "fever-masked", {"valueBoolean": False}),
        observation(7, AEGRADE_SYSTEM, "ice-total", {"valueInteger": 7}),
        observation(8, AEGRADE_SYSTEM, "consciousness", {"valueCodeableConcept": {"coding": [{"system": AEGRADE_SYSTEM, "code": "alert"}]}}),
    ]


BUNDLE_EXAMPLES: dict[str, Any] = {
    "adult_crs_and_icans": {
        "summary": "A collection Bundle: fever, nasal cannula 3 L/min, ICE 7 (CRS grade 2, ICANS grade 1)",
        "value": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
                for resource in example_resources("2026-06-01T10:00:00Z")
            ],
        },
    }
}


def non_finite(value: Any, loc: tuple[str | int, ...]) -> list[FieldError]:
    """NaN and infinities anywhere in free JSON (json.loads lets them through), each named."""
    if isinstance(value, float) and not math.isfinite(value):
        return [FieldError(loc=loc, msg="NaN and infinities are not numbers", code="finite_number")]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in non_finite(v, (*loc, str(k)))]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in non_finite(v, (*loc, i))]
    return []


async def grade_fhir(
    request: Request,
    located: Sequence[Located],
    recorded: dict[str, Any],
    *,
    as_of: datetime | None = None,
    then: Callable[[FhirAssessmentResult], Awaitable[None]] | None = None,
) -> tuple[FhirAssessmentResult, str]:
    """Map the resources, grade, record: the result and its JSON. FhirInputError names the resource
    at fault (422); an engine or store failure is handled as for POST /v1/assessments. `then`: see
    service.grading.grade_and_record."""
    state = request.app.state
    settings: ServiceSettings = state.settings
    assessment_dict, sources, mapping = map_resources(
        located,
        now=datetime.now(timezone.utc),
        as_of=as_of,
        window_hours=settings.fhir_window_hours,
        masking_window_hours=settings.episode_masking_window_hours,
        administrations_mask_fever=settings.fhir_administrations_mask_fever,
        fever_masking=state.engine.fever_masking,
        fever_threshold_c=fever_threshold(state.engine.primary("crs").file),
    )
    try:
        assessment: Assessment = state.engine.validate(assessment_dict)
    except InvalidAssessment as exc:
        if [e.code for e in exc.errors] == [NOTHING_TO_GRADE]:  # no resource read maps to a graded section
            unused = "; ".join(f"{i.source}: {i.reason}" for i in mapping.ignored[:3])
            unused = f" (not used: {unused}{'; ...' if len(mapping.ignored) > 3 else ''})" if unused else ""
            raise FhirInputError(
                [FieldError(loc=("body",), msg=f"no resource read gives a graded field: {exc.errors[0].msg}{unused}", code=NOTHING_TO_GRADE)]
            ) from exc
        raise errors_at_sources(exc, sources, located) from exc

    finish = ("fhir", mapping.model_dump_json(), settings.fhir_administrations_mask_fever)
    recorded = {**recorded, "assessment": assessment_dict, "mapping": mapping.model_dump(mode="json")}
    result, body = await grade_on_record(
        state, assessment, recorded_request=recorded, finish=finish, then=then  # type: ignore[arg-type]
    )
    assert isinstance(result, FhirAssessmentResult)
    return result, body


@router.post(
    "/fhir/assessments",
    response_model=FhirAssessmentResult,
    responses=_responses(400, 401, 413, 422, 500, 503),
    summary="Grade a FHIR R4 Bundle (collection or transaction)",
)
async def create_fhir_assessment(
    bundle: Annotated[FhirBundleIn, Body(openapi_examples=BUNDLE_EXAMPLES)], request: Request
) -> Response:
    """Maps the Bundle's Patient, Observations (LOINC vitals, our CodeSystem for ICE/CAPD and the
    ICANS findings) and MedicationAdministrations to an Assessment, grades it, records both, and
    answers with the AssessmentResult plus `mapping`: which resource gave which field, and which
    resources were not used and why. Content-Type application/fhir+json or application/json."""
    sent = bundle.model_dump(mode="json", exclude_unset=True)
    bad = non_finite(sent, ("body",))
    if bad:
        raise FhirInputError(bad)
    located = bundle_resources(sent, ("body",))
    _, body = await grade_fhir(request, located, {"fhir_bundle": sent})
    return Response(body, media_type="application/json")


class CodeSystemConcept(BaseModel):
    code: str
    display: str
    definition: str


class CodeSystemOut(BaseModel):
    """A FHIR R4 CodeSystem resource."""

    resourceType: Literal["CodeSystem"] = "CodeSystem"
    id: str
    url: str
    name: str
    title: str
    status: Literal["active", "draft"]
    content: Literal["complete"]
    caseSensitive: bool
    description: str
    concept: list[CodeSystemConcept]


@router.get(
    "/fhir/CodeSystem/assessment",
    response_model=CodeSystemOut,
    responses=_responses(401),
    summary="aegrade's own CodeSystem, for assessment items with no LOINC code",
)
def read_codesystem() -> CodeSystemOut:
    """The CodeSystem of aegrade's own Observation codes (ICE and CAPD items, ICANS findings, CRS
    judgements) and of their coded values: what a Bundle or a CDS prefetch uses where LOINC has no code."""
    concepts = []
    for code, own in OWN_CODES.items():
        value = {"integer": "valueInteger", "boolean": "valueBoolean", "code": "valueCodeableConcept"}[own.value]
        allowed = f" Values: {', '.join(own.codes)} (this system)." if own.codes else ""
        concepts.append(
            CodeSystemConcept(code=code, display=own.display, definition=f"Fills {own.field}; Observation.{value}.{allowed}")
        )
    values = sorted({value for own in OWN_CODES.values() for value in own.codes})
    concepts += [
        CodeSystemConcept(
            code=value,
            display=value.replace("_", " "),
            definition="A value of " + ", ".join(c for c, own in OWN_CODES.items() if value in own.codes) + ".",
        )
        for value in values
        if value not in OWN_CODES
    ]
    return CodeSystemOut(
        id="assessment",
        url=AEGRADE_SYSTEM,
        name="AegradeAssessment",
        title="aegrade assessment items",
        status="active",
        content="complete",
        caseSensitive=True,
        description="Observation codes for CRS/ICANS assessment items that have no LOINC code: ICE and CAPD items, "
        "ICANS findings and CRS judgements. Coded values (oxygen device, consciousness, seizure, motor, cerebral "
        "edema) use the codes listed with each concept, in this same system.",
        concept=concepts,
    )

