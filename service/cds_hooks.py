"""CDS Hooks 2.0: discovery, the aegrade-toxicity service (patient-view and order-sign), feedback.

    GET  /cds-services                               discovery: one entry per hook, with prefetch templates
    POST /cds-services/aegrade-toxicity              either hook; grades the prefetched record
    POST /cds-services/aegrade-toxicity-order-sign   the order-sign entry of discovery (same service)
    POST /cds-services/{id}/feedback                 card outcomes, stored

The service reads only what the CDS client prefetches (the Patient, recent Observations and
MedicationAdministrations); it never calls the client's FHIR server. A missing prefetch is
therefore a 412, as the specification asks. The record is mapped as for POST /v1/fhir/assessments
(aegrade/fhir.py), with the assessment time set to now; the grading is recorded in the audit store
like any other, and every card issued is stored so that feedback can be matched to it.

Cards inform; they never order. There are no suggestions (no actions for the EHR to apply); each
card states a grade, why, and where it came from, and links to its audit record.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, Column, DateTime, ForeignKey, Integer, String, Table, Text, insert, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from aegrade.errors import FieldError
from aegrade.fhir import FhirAssessmentResult, FhirInputError, Located, bundle_resources
from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, QUANTITIES
from aegrade.models import DomainResult, Flag
from aegrade.validation import NOTHING_TO_GRADE
from service.fhir_routes import example_resources, grade_fhir, non_finite
from service.errors import PrefetchMissing
from service.routes import _responses, require_api_key
from service.store import AuditStore, StoreUnavailable, metadata
from service.wording import grade_text, is_open

__all__ = ["SERVICE_ID", "call_examples", "cds_cards", "cds_feedback", "cards_for", "router"]

logger = logging.getLogger("aegrade.cds")

SERVICE_ID = "aegrade-toxicity"
ORDER_SIGN_ID = "aegrade-toxicity-order-sign"
SUMMARY_MAX = 139  # CDS Hooks: "<140 characters"
ASTCT_2019 = "https://doi.org/10.1016/j.bbmt.2018.12.758"

cds_cards = Table(
    "cds_cards",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("service_id", String(64), nullable=False),
    Column("hook", String(32), nullable=False),
    Column("hook_instance", String(128), nullable=False),
    Column("assessment_id", String(32), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("summary", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

cds_feedback = Table(
    "cds_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card", String(36), ForeignKey("cds_cards.uuid"), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("outcome_timestamp", DateTime(timezone=True), nullable=False),
    Column("override_reason", JSON, nullable=True),
    Column("accepted_suggestions", JSON, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


# ---- discovery ---------------------------------------------------------------------------------


def _prefetch() -> dict[str, str]:
    loinc = ",".join(f"{LOINC}|{code}" for code in QUANTITIES)
    return {
        "patient": "Patient/{{context.patientId}}",
        "vitals": "Observation?patient={{context.patientId}}&code=" + loinc + "&_sort=-date&_count=100",
        "assessments": "Observation?patient={{context.patientId}}&code=" + AEGRADE_SYSTEM + "|&_sort=-date&_count=100",
        "medications": "MedicationAdministration?patient={{context.patientId}}&_sort=-effective-time&_count=100",
    }


PREFETCH = _prefetch()
DESCRIPTION = (
    "ASTCT 2019 CRS and ICANS grades from the charted vital signs, oxygen support, vasopressors and ICE/CAPD "
    "assessments, with the rules, criteria and citations behind them. Decision support: cards inform, never order."
)


class CdsService(BaseModel):
    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str]
    usageRequirements: str


class Discovery(BaseModel):
    services: list[CdsService]


router = APIRouter(tags=["CDS Hooks"])


@router.get("/cds-services", response_model=Discovery, summary="CDS Hooks discovery")
def discovery() -> Discovery:
    """The CDS services and their hooks (patient-view, order-sign), each with the prefetch templates
    it needs: the service reads only the prefetch. Open, even when AEGRADE_API_KEYS is set."""
    usage = (
        "Send every prefetch: the service does not query FHIR servers. Observation codes: LOINC vital signs and "
        f"the CodeSystem {AEGRADE_SYSTEM} (GET /v1/fhir/CodeSystem/assessment)."
    )
    return Discovery(
        services=[
            CdsService(hook="patient-view", id=SERVICE_ID, title="aegrade toxicity grading", description=DESCRIPTION, prefetch=PREFETCH, usageRequirements=usage),
            CdsService(
                hook="order-sign",
                id=ORDER_SIGN_ID,
                title="aegrade toxicity grading at order signing",
                description=DESCRIPTION + " The draft orders are not read; the cards describe the patient's current grades.",
                prefetch=PREFETCH,
                usageRequirements=usage,
            ),
        ]
    )


# ---- the service call --------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CdsContext(_In):
    userId: str = Field(min_length=1, max_length=256)
    patientId: str = Field(min_length=1, max_length=64)
    encounterId: str | None = Field(default=None, max_length=64)
    draftOrders: dict[str, Any] | None = Field(default=None, description="order-sign only: not read.")
    selections: list[str] | None = None


class CdsRequest(_In):
    hook: Literal["patient-view", "order-sign"]
    hookInstance: str = Field(min_length=1, max_length=128)
    fhirServer: str | None = Field(default=None, description="Not used: the service reads only the prefetch.")
    fhirAuthorization: dict[str, Any] | None = Field(default=None, description="Not used and not stored.")
    context: CdsContext
    prefetch: dict[str, dict[str, Any] | None] | None = None


class CardSource(BaseModel):
    label: str
    url: str | None = None


class CardLink(BaseModel):
    label: str
    url: str
    type: Literal["absolute", "smart"]


class Card(BaseModel):
    uuid: str
    summary: str = Field(max_length=SUMMARY_MAX)
    detail: str
    indicator: Literal["info", "warning", "critical"]
    source: CardSource
    links: list[CardLink]


class CdsResponse(BaseModel):
    cards: list[Card]


def call_examples(now: datetime | None = None) -> dict[str, Any]:
    """The OpenAPI example of a service call: the prefetch of the FHIR example, charted 10 minutes
    before `now` (the service grades what was charted in the last AEGRADE_FHIR_WINDOW_HOURS, so the
    OpenAPI document refreshes it: service/app.py)."""
    now = now or datetime.now(timezone.utc)
    when = (now - timedelta(minutes=10)).replace(microsecond=0)
    resources = example_resources(when.isoformat().replace("+00:00", "Z"), birth_date=f"{when.year - 36}-03-15")
    patient, observations = resources[0], resources[1:]
    vitals = [r for r in observations if r["code"]["coding"][0]["system"] == LOINC]

    def search(found: list[dict[str, Any]]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in found]}

    return {
        "patient_view": {
            "summary": "patient-view with every prefetch: fever, nasal cannula 3 L/min, ICE 7 (a CRS grade 2 card)",
            "value": {
                "hook": "patient-view",
                "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
                "prefetch": {
                    "patient": patient,
                    "vitals": search(vitals),
                    "assessments": search([r for r in observations if r not in vitals]),
                    "medications": search([]),
                },
            },
        }
    }


FEEDBACK_EXAMPLES: dict[str, Any] = {
    "accepted": {
        "summary": "A card accepted (the uuid of a card this service issued)",
        "value": {"feedback": [{"card": "3b1f4a9e-0c57-4d2a-9f0e-6a2d8c1b5e7f", "outcome": "accepted", "outcomeTimestamp": "2026-06-01T10:05:00Z"}]},
    }
}


def _located(call: CdsRequest) -> list[Located]:
    prefetch = call.prefetch or {}
    missing = [key for key in PREFETCH if prefetch.get(key) is None]
    if missing:
        raise PrefetchMissing(
            f"prefetch {', '.join(missing)} missing: this service reads only the prefetch and does not query FHIR servers",
        )
    patient = prefetch["patient"]
    assert patient is not None
    if patient.get("resourceType") != "Patient" or patient.get("id") != call.context.patientId:
        raise FhirInputError(
            [_field(("body", "prefetch", "patient"), f"must be the Patient resource with id {call.context.patientId} (context.patientId)")]
        )
    located = [Located(patient, ("body", "prefetch", "patient"))]
    for key in ("vitals", "assessments", "medications"):
        bundle = prefetch[key]
        assert bundle is not None
        if bundle.get("resourceType") != "Bundle":
            raise FhirInputError([_field(("body", "prefetch", key), "must be a Bundle (the search result)")])
        located += [
            at for at in bundle_resources(bundle, ("body", "prefetch", key)) if at.resource.get("resourceType") != "OperationOutcome"
        ]
    return located


def _field(loc: tuple[str | int, ...], msg: str, code: str = "prefetch_invalid") -> FieldError:
    return FieldError(loc=loc, msg=msg, code=code)


def _truncate(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


def _domain_summary(scale: str, domain: DomainResult, threshold: int) -> str:
    """The card summary (under 140 characters): the grade with its bound, naming the unreported
    inputs when they fit, else only the bound."""
    if domain.status == "clinician_review":
        return f"{scale}: the charted findings need a clinician to grade them (ASTCT 2019)"
    if domain.grade is not None and domain.grade >= threshold:
        for inputs in (True, False):
            summary = f"{scale} {grade_text(domain, inputs=inputs)} by ASTCT 2019 criteria from the charted data"
            if len(summary) <= SUMMARY_MAX:
                return summary
        return _truncate(f"{scale} {grade_text(domain, inputs=False)} (ASTCT 2019)")
    # nothing established at the card threshold, but unreported inputs could reach it
    for inputs in (True, False):
        summary = f"{scale} undetermined: {grade_text(domain, inputs=inputs)} until charted (ASTCT 2019)"
        if len(summary) <= SUMMARY_MAX:
            return summary
    return _truncate(f"{scale} undetermined: {grade_text(domain, inputs=False)}")


def _domain_card(name: str, domain: DomainResult, result: FhirAssessmentResult, links: list[CardLink]) -> Card | None:
    """A card when the domain needs attention: a grade >= 1 established, a grade >= 1 that the
    unreported inputs still allow (undetermined: an info card saying what to chart), or a result
    left to the clinician. Grade 0 with nothing open, and not assessable with nothing open, give none."""
    from aegrade.rulefile import loaded_ruleset  # the indicators are the grading rule file's card_indicators

    tool = getattr(domain, "tool", None)
    scale = f"{name} ({tool})" if tool else name
    ref = next((r for r in result.rulesets if f"{r.id}@{r.version}" == domain.ruleset), None)
    graded_by = loaded_ruleset(ref.sha256) if ref is not None else None
    cards = graded_by.file.card_indicators if graded_by is not None else None
    if cards is None:
        raise LookupError(f"{domain.ruleset}: no loaded rule file with card_indicators")
    by_grade = cards.for_grade(domain.grade)
    established = by_grade is not None
    possible = domain.grade_max is not None and domain.grade_max >= cards.threshold
    indicator: Literal["info", "warning", "critical"]
    if domain.status == "clinician_review":
        indicator = cards.clinician_review
    elif by_grade is not None:
        indicator = by_grade
    elif possible:
        indicator = cards.undetermined
    else:
        return None
    summary = _domain_summary(scale, domain, cards.threshold)
    lines = [f"**{scale}: {grade_text(domain)}** ({domain.ruleset}, status {domain.status})", ""]
    if is_open(domain):
        lines.append(
            f"{'Undetermined: the' if not established else 'The'} charted data establish "
            + (f"grade {domain.grade}" if domain.grade is not None else "no grade")
            + f"; grade {domain.grade_max} is still possible. Charting these could raise it:"
        )
        lines += [f"- {u.input}: up to grade {u.up_to}" for u in domain.undetermined_by]
        lines.append("")
    driving = [d for d in domain.drivers if d.drives]
    if driving:
        lines.append("Why:")
        lines += [f"- {d.criterion} ({d.citation}; evidence {d.evidence_level})" for d in driving]
    if domain.missing:
        lines.append(f"\nNot reported, so not graded: {', '.join(domain.missing)}.")
    for interpretation in domain.interpretations:
        lines.append(f"\nInterpretation ({interpretation.setting}): {interpretation.text}")
    for note in domain.notes:
        lines.append(f"\nNote: {note}")
    prefixes = ("patient.", "vitals.", "crs.") if name == "CRS" else ("patient.", "neuro.")
    used = [m for m in result.mapping.mapped if m.field is not None and m.field.startswith(prefixes)]
    if used:
        lines.append("\nFrom the record:")
        lines += [f"- {m.field} = {json.dumps(m.value)}{' ' + m.unit if m.unit else ''} ({m.source})" for m in used]
    lines.append("\n_Decision support: this card informs; it orders nothing. The treating clinician confirms the grade._")
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_truncate(summary),
        detail="\n".join(lines),
        indicator=indicator,
        source=CardSource(label=f"aegrade {domain.ruleset}", url=ASTCT_2019),
        links=links,
    )


def _flag_card(flag: Flag, links: list[CardLink]) -> Card:
    detail = f"**{flag.id}**: {flag.message}\n\n{flag.citation} (evidence {flag.evidence_level})\n\n_Decision support: this card informs; it orders nothing._"
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_truncate(flag.message),
        detail=detail,
        indicator=flag.severity,
        source=CardSource(label=f"aegrade {flag.rule}"),
        links=links,
    )


def cards_for(result: FhirAssessmentResult, base_url: str) -> list[Card]:
    """One card per domain that needs attention (grade >= 1; grade_max >= 1 with a lower grade,
    as an undetermined info card; or left to the clinician), then one per flag. A domain settled at
    grade 0, or not assessable with nothing that could make it >= 1, gives no card."""
    links = [
        CardLink(label="aegrade audit record of this grading", url=f"{base_url.rstrip('/')}/v1/assessments/{result.id}", type="absolute"),
        CardLink(label="ASTCT 2019 consensus grading (Lee et al.)", url=ASTCT_2019, type="absolute"),
    ]
    cards = [card for name, domain in (("CRS", result.crs), ("ICANS", result.icans)) if domain is not None
             for card in [_domain_card(name, domain, result, links)] if card is not None]
    cards += [_flag_card(flag, links[:1]) for flag in result.flags]
    return cards


def _store_cards(store: AuditStore, call: CdsRequest, service_id: str, assessment_id: str, cards: list[Card]) -> None:
    if not cards:
        return
    now = datetime.now(timezone.utc)
    rows = [
        {
            "uuid": card.uuid,
            "service_id": service_id,
            "hook": call.hook,
            "hook_instance": call.hookInstance,
            "assessment_id": assessment_id,
            "indicator": card.indicator,
            "summary": card.summary,
            "issued_at": now,
        }
        for card in cards
    ]
    try:
        with store.engine.begin() as connection:
            connection.execute(insert(cds_cards), rows)
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"cards of assessment {assessment_id} not stored: {type(exc).__name__}") from exc


ServiceId = Annotated[
    Literal["aegrade-toxicity", "aegrade-toxicity-order-sign"],
    Path(description="aegrade-toxicity answers both hooks; aegrade-toxicity-order-sign is the order-sign entry of discovery."),
]


@router.post(
    "/cds-services/{service_id}",
    response_model=CdsResponse,
    responses=_responses(400, 401, 404, 412, 413, 422, 500, 503),
    dependencies=[Depends(require_api_key)],
    summary="The aegrade-toxicity CDS service (patient-view, order-sign)",
)
async def call_service(
    service_id: ServiceId, call: Annotated[CdsRequest, Body(openapi_examples=call_examples())], request: Request
) -> JSONResponse:
    """Grades the prefetched record as of now and answers with cards. 412 when a prefetch is
    missing; 422 naming the resource when the record cannot be read. A record with nothing charted
    in the window that maps to a graded section (no usable Observation) is not graded and not
    stored: the answer is 200 with no cards, as CDS Hooks asks of a service with nothing to say."""
    sent = call.model_dump(mode="json", exclude_unset=True)
    bad = non_finite(sent, ("body",))
    if bad:
        raise FhirInputError(bad)
    located = _located(call)
    recorded = {"cds_hook": call.hook, "hook_instance": call.hookInstance, "service": service_id, "prefetch": sent.get("prefetch")}
    cards: list[Card] = []

    async def store_cards(result: FhirAssessmentResult) -> None:
        # Part of the grading path: if the cards cannot be stored, the grade is not given either
        # (503) and its record is marked undelivered.
        cards.extend(cards_for(result, str(request.base_url)))
        await run_in_threadpool(_store_cards, request.app.state.store, call, service_id, result.id, cards)

    try:
        result, _ = await grade_fhir(request, located, recorded, as_of=datetime.now(timezone.utc), then=store_cards)
    except FhirInputError as exc:
        if [e.code for e in exc.errors] != [NOTHING_TO_GRADE]:
            raise
        logger.info("cds %s %s: nothing to grade in the prefetch, no card", service_id, call.hook)
        return JSONResponse(CdsResponse(cards=[]).model_dump(mode="json"))
    logger.info("cds %s %s: assessment %s, %d card(s)", service_id, call.hook, result.id, len(cards))
    return JSONResponse(CdsResponse(cards=cards).model_dump(mode="json", exclude_none=True))


# ---- feedback ----------------------------------------------------------------------------------


class Coding(_In):
    system: str = Field(min_length=1, max_length=256)
    code: str = Field(min_length=1, max_length=128)
    display: str | None = Field(default=None, max_length=256)


class AcceptedSuggestion(_In):
    id: str = Field(min_length=1, max_length=128)


class OverrideReason(_In):
    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=4000)


class FeedbackItem(_In):
    card: str = Field(min_length=1, max_length=36)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: datetime
    acceptedSuggestions: list[AcceptedSuggestion] | None = Field(default=None, max_length=20)
    overrideReason: OverrideReason | None = None


class FeedbackIn(_In):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=100)


def _store_feedback(store: AuditStore, service_id: str, items: list[FeedbackItem]) -> list[str]:
    """Stores every item whose card this service issued; the unknown cards, for the 422."""
    try:
        with store.engine.begin() as connection:
            wanted = {item.card for item in items}
            known = set(
                connection.execute(
                    select(cds_cards.c.uuid).where(cds_cards.c.uuid.in_(wanted), cds_cards.c.service_id == service_id)
                ).scalars()
            )
            unknown = [item.card for item in items if item.card not in known]
            if unknown:
                return unknown
            now = datetime.now(timezone.utc)
            connection.execute(
                insert(cds_feedback),
                [
                    {
                        "card": item.card,
                        "outcome": item.outcome,
                        "outcome_timestamp": item.outcomeTimestamp,
                        "override_reason": item.overrideReason.model_dump(mode="json", exclude_none=True) if item.overrideReason else None,
                        "accepted_suggestions": [a.model_dump() for a in item.acceptedSuggestions] if item.acceptedSuggestions else None,
                        "received_at": now,
                    }
                    for item in items
                ],
            )
            return []
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"feedback not stored: {type(exc).__name__}") from exc


@router.post(
    "/cds-services/{service_id}/feedback",
    status_code=200,
    responses=_responses(400, 401, 404, 413, 422, 503),
    dependencies=[Depends(require_api_key)],
    summary="Card outcomes (accepted, overridden), stored",
)
async def feedback(
    service_id: ServiceId, body: Annotated[FeedbackIn, Body(openapi_examples=FEEDBACK_EXAMPLES)], request: Request
) -> JSONResponse:
    """Stores what the clinician did with cards this service issued (accepted or overridden, with
    the reason). A card this service did not issue is a 422 naming it, and nothing is stored."""
    unknown = await run_in_threadpool(_store_feedback, request.app.state.store, service_id, body.feedback)
    if unknown:
        raise FhirInputError(
            [_field(("body", "feedback", i, "card"), f"card {item.card} was not issued by {service_id}", "unknown_card")
             for i, item in enumerate(body.feedback) if item.card in unknown]
        )
    logger.info("cds %s feedback: %d item(s) stored", service_id, len(body.feedback))
    return JSONResponse({"stored": len(body.feedback)})
