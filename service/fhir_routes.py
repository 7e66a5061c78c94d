"""FHIR R4 input: POST /v1/fhir/assessments grades a Bundle; GET /v1/fhir/CodeSystem/assessment
serves our own CodeSystem; GET /v1/fhir/metadata the CapabilityStatement and GET
/v1/fhir/OperationDefinition/assessments the definition of the POST (both open, as FHIR servers keep
them, so that a client can learn how to authenticate). The mapping is aegrade/fhir.py; the FHIR
renderings of answers and errors (Observations, OperationOutcome) are service/fhir_native.py; this
module is the HTTP side.

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
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

import aegrade
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
from service.fhir_native import (
    FHIR_BUNDLE_SCHEMA,
    FHIR_JSON,
    OUTPUT_CODES,
    FhirResourceOut,
    Negotiation,
    OperationOutcomeOut,
    capability_statement,
    negotiate,
    observation_bundle,
    operation_definition,
)
from service.grading import grade_on_record
from service.routes import _responses, require_api_key
from service.settings import ServiceSettings

__all__ = ["FhirBundleIn", "example_resources", "grade_fhir", "router"]

router = APIRouter(prefix="/v1")
"""Open: the CapabilityStatement and the OperationDefinition. The routes of `_keyed` (below), which
need the API key when AEGRADE_API_KEYS is set, are included in it at the end."""
_keyed = APIRouter(dependencies=[Depends(require_api_key)])
MAX_ENTRIES = 500

# `_format` (FHIR's override of Accept) is read by the negotiation itself (service/fhir_native.py),
# not declared as a query parameter: FHIR servers ignore the parameters they do not know, and a
# declared one would make every other query parameter a schema violation.


def _fhir_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error responses of the /v1/fhir routes: an OperationOutcome, as application/fhir+json (or
    application/json when only that was asked for)."""
    outcome = {"schema": {"$ref": "#/components/schemas/OperationOutcomeOut"}}
    own = {
        406: "Only FHIR JSON is served (_format, Accept).",
        415: "A Content-Encoding other than identity, or a JSON charset other than UTF-8.",
    }
    described = _responses(*(c for c in codes if c not in own))
    described.update({c: {"description": own[c]} for c in codes if c in own})
    return {
        code: {"model": OperationOutcomeOut, "description": spec["description"] + " An OperationOutcome.", "content": {FHIR_JSON: outcome}}
        for code, spec in described.items()
    }


def _negotiation(request: Request) -> Negotiation:
    """The format asked for (FhirErrors, service/fhir_native.py, has already answered 406 to the rest)."""
    return negotiate(request.headers.get("accept"), request.query_params.get("_format")) or Negotiation(False, FHIR_JSON)


def _resource(resource: dict[str, Any], request: Request) -> JSONResponse:
    return JSONResponse(resource, media_type=_negotiation(request).media_type)


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
        rulesets=state.engine.rulesets,
        settings={ruleset.id: state.engine.settings_for(ruleset.id) for ruleset in state.engine.rulesets},
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


_FHIR_ANSWER = {"content": {FHIR_JSON: {"schema": FHIR_BUNDLE_SCHEMA}}}


@_keyed.post(
    "/fhir/assessments",
    response_model=FhirAssessmentResult,
    responses={200: _FHIR_ANSWER, **_fhir_responses(400, 401, 406, 413, 415, 422, 500, 503)},
    summary="Grade a FHIR R4 Bundle (collection, transaction, searchset or batch-response)",
)
async def create_fhir_assessment(
    bundle: Annotated[FhirBundleIn, Body(openapi_examples=BUNDLE_EXAMPLES)], request: Request
) -> Response:
    """Maps the Bundle's Patient, Observations (LOINC vitals, our CodeSystem for ICE/CAPD and the
    ICANS findings) and MedicationAdministrations to an Assessment, grades it, records both, and
    answers with the AssessmentResult plus `mapping`: which resource gave which field, and which
    resources were not used and why. Content-Type application/fhir+json or application/json.

    With `Accept: application/fhir+json` (or `_format`), the answer is FHIR: a collection Bundle of
    one Observation per graded subject (CRS, ICANS), coded in our CodeSystem, `derivedFrom` the
    Observations used, `identifier` the audit record's id, for an EHR to file back. Errors are an
    OperationOutcome."""
    sent = bundle.model_dump(mode="json", exclude_unset=True)
    bad = non_finite(sent, ("body",))
    if bad:
        raise FhirInputError(bad)
    located = bundle_resources(sent, ("body",))
    negotiation = _negotiation(request)
    made: list[Response] = []

    async def as_fhir(result: FhirAssessmentResult) -> None:
        # Made before the grade counts as answered: if it cannot be, the record is marked undelivered.
        made.append(JSONResponse(observation_bundle(result, located), media_type=negotiation.media_type))

    _, body = await grade_fhir(request, located, {"fhir_bundle": sent}, then=as_fhir if negotiation.fhir else None)
    return made[0] if made else Response(body, media_type="application/json")


@router.get(
    "/fhir/metadata",
    response_model=FhirResourceOut,
    responses={200: {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/FhirResourceOut"}}}}, **_fhir_responses(406)},
    summary="The FHIR CapabilityStatement of this service",
)
def read_metadata(request: Request) -> JSONResponse:
    """A FHIR R4 (4.0.1) CapabilityStatement, kind instance: JSON only, the CodeSystem read, and POST
    of a Bundle to /v1/fhir/assessments. Open, with or without AEGRADE_API_KEYS (it holds no patient
    data, and says how to authenticate)."""
    settings: ServiceSettings = request.app.state.settings
    base = getattr(settings, "public_base_url", None)
    return _resource(capability_statement(api_keys=bool(settings.api_keys), public_base_url=base), request)


class CodeSystemProperty(BaseModel):
    code: str
    description: str
    type: Literal["code", "string", "integer"]


class ConceptProperty(BaseModel):
    code: str
    valueCode: str | None = None
    valueString: str | None = None
    valueInteger: int | None = None


class CodeSystemConcept(BaseModel):
    code: str
    display: str
    definition: str
    property: list[ConceptProperty]


class CodeSystemOut(BaseModel):
    """A FHIR R4 CodeSystem resource."""

    resourceType: Literal["CodeSystem"] = "CodeSystem"
    id: str
    url: str
    version: str
    name: str
    title: str
    status: Literal["active", "draft"]
    publisher: str
    content: Literal["complete"]
    caseSensitive: bool
    description: str
    property: list[CodeSystemProperty]
    concept: list[CodeSystemConcept]


CODESYSTEM_PROPERTIES: list[dict[str, str]] = [
    {"code": "role", "type": "code", "description": "question: an Observation.code (or component code); answer: a coded value "
     "(Observation.valueCodeableConcept); interpretation: an Observation.interpretation."},
    {"code": "direction", "type": "code", "description": "input: read by aegrade from a Bundle or a CDS Hooks prefetch; "
     "output: written by aegrade in its FHIR answers (Accept: application/fhir+json)."},
    {"code": "value-type", "type": "code", "description": "Questions: the value[x] they take (integer, boolean, CodeableConcept, string)."},
    {"code": "field", "type": "string", "description": "Input questions: the Assessment field they fill."},
    {"code": "answer-to", "type": "code", "description": "Answers: a question of this system they answer (repeated for each)."},
    {"code": "grade", "type": "integer", "description": "Grade answers: the grade, an ordinal of the scale named by the question."},
]
"""How the concepts are told apart: questions from answers, what aegrade reads from what it writes."""

_VALUE_TYPES = {"integer": "integer", "boolean": "boolean", "code": "CodeableConcept"}


def _prop(code: str, value: str | int) -> dict[str, Any]:
    return {"code": code, "valueInteger": value} if isinstance(value, int) else {"code": code, ("valueString" if code == "field" else "valueCode"): value}


def codesystem() -> dict[str, Any]:
    """Our CodeSystem: the input items (aegrade/fhir_codes.py OWN_CODES) and their coded values, then
    the output codes (service/fhir_native.py OUTPUT_CODES), each with its properties."""
    concepts: list[dict[str, Any]] = []
    for code, own in OWN_CODES.items():
        value = {"integer": "valueInteger", "boolean": "valueBoolean", "code": "valueCodeableConcept"}[own.value]
        allowed = f" Values: {', '.join(own.codes)} (this system)." if own.codes else ""
        properties = [_prop("role", "question"), _prop("direction", "input"), _prop("value-type", _VALUE_TYPES[own.value]), _prop("field", own.field)]
        concepts.append({"code": code, "display": own.display, "definition": f"Fills {own.field}; Observation.{value}.{allowed}", "property": properties})
    for value in sorted({value for own in OWN_CODES.values() for value in own.codes} - set(OWN_CODES)):
        questions = [c for c, own in OWN_CODES.items() if value in own.codes]
        concepts.append(
            {
                "code": value,
                "display": value.replace("_", " "),
                "definition": "A value of " + ", ".join(questions) + ".",
                "property": [_prop("role", "answer"), _prop("direction", "input"), *(_prop("answer-to", q) for q in questions)],
            }
        )
    for out in OUTPUT_CODES.values():
        properties = [_prop("role", out.role), _prop("direction", "output")]
        if out.value_type is not None:
            properties.append(_prop("value-type", out.value_type))
        properties += [_prop("answer-to", q) for q in out.answers]
        if out.grade is not None:
            properties.append(_prop("grade", out.grade))
        concepts.append({"code": out.code, "display": out.display, "definition": out.definition, "property": properties})
    return {
        "resourceType": "CodeSystem",
        "id": "assessment",
        "url": AEGRADE_SYSTEM,
        "version": aegrade.__version__,
        "name": "AegradeAssessment",
        "title": "aegrade assessment items and grades",
        "status": "active",
        "publisher": "aegrade project",
        "content": "complete",
        "caseSensitive": True,
        "description": "Observation codes for CRS/ICANS assessment items that have no LOINC code (ICE and CAPD items, "
        "ICANS findings, CRS judgements) and their coded values (oxygen device, consciousness, seizure, motor, cerebral "
        "edema), which aegrade reads; and the codes of the grades aegrade answers with (crs-grade-astct-2019, "
        "icans-grade-astct-2019, grade-N, the grade status). The properties role and direction tell them apart. "
        "Versioned with the aegrade package that serves it.",
        "property": CODESYSTEM_PROPERTIES,
        "concept": concepts,
    }


@router.get(
    "/fhir/OperationDefinition/assessments",
    response_model=FhirResourceOut,
    responses={200: {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/FhirResourceOut"}}}}, **_fhir_responses(406)},
    summary="The OperationDefinition of POST /v1/fhir/assessments",
)
def read_operation_definition(request: Request) -> JSONResponse:
    """The FHIR R4 OperationDefinition that the CapabilityStatement's operation points at: a Bundle
    in, a Bundle out (with Accept: application/fhir+json). Open, as the CapabilityStatement is."""
    return _resource(operation_definition(), request)


@_keyed.get(
    "/fhir/CodeSystem/assessment",
    response_model=CodeSystemOut,
    response_model_exclude_none=True,
    responses={200: {"content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/CodeSystemOut"}}}}, **_fhir_responses(401, 406)},
    summary="aegrade's own CodeSystem: assessment items with no LOINC code, and the grades answered",
)
def read_codesystem(request: Request) -> JSONResponse:
    """The CodeSystem of aegrade's own codes: the Observation codes it reads (ICE and CAPD items,
    ICANS findings, CRS judgements) and their coded values, which a Bundle or a CDS prefetch uses
    where LOINC has no code; and the codes of its FHIR answers (the grades). The `role` and
    `direction` properties separate questions from answers and what is read from what is written."""
    return _resource(codesystem(), request)


router.include_router(_keyed)
