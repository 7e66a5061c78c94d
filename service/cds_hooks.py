"""CDS Hooks 2.0: discovery, the aegrade-toxicity service (patient-view and order-sign), feedback.

    GET  /cds-services                               discovery: one entry per hook, with prefetch templates
    POST /cds-services/aegrade-toxicity              either hook; grades the prefetched record
    POST /cds-services/aegrade-toxicity-order-sign   the order-sign entry of discovery (same service)
    POST /cds-services/{id}/feedback                 card outcomes, stored

The service reads what the CDS client prefetches (the Patient, recent Observations with the
blood-pressure panels, and MedicationAdministrations with their Medications). CDS Hooks 2.0:

- a prefetch key sent as `null` means the client has no such data: read as nothing charted (never
  as normal: the grade then says what is missing);
- a prefetch key not sent is fetched from the call's `fhirServer`, with `fhirAuthorization`, but only
  when that server is under a base URL of AEGRADE_CDS_FHIR_SERVERS (no requests to an address a
  caller chooses), with a timeout and a size bound (service/cds_auth.py fetch_json); 412 when it
  was not sent and cannot be fetched. The access token is used for that query only: never stored
  or logged;
- the reserved `extension` objects are accepted (the call, its context, feedback) and not read;
- access: service/cds_auth.py (a JWT signed by an AEGRADE_CDS_ISSUERS client, or an API key).

The record is mapped as for POST /v1/fhir/assessments (aegrade/fhir.py), with the assessment time
set to now; the grading is recorded in the audit store like any other, with the prefetch it used
(and which keys were fetched), and every card issued is stored so that feedback can be matched to it.

Cards inform; they never order. There are no suggestions (no actions for the EHR to apply); each
card states a grade, why, and where it came from. A domain that cannot be assessed gets an info
card saying what was not charted in the window, rather than silence. Cards link to the human view of
the assessment (service/record_view.py, behind the form's access) under AEGRADE_PUBLIC_BASE_URL;
without it they carry no such link and say so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from urllib.parse import quote, urlsplit
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
import aegrade.fhir_codes as fhir_codes
from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, QUANTITIES
from aegrade.models import DomainResult, Flag
from aegrade.validation import NOTHING_TO_GRADE
from service.fhir_routes import example_resources, grade_fhir, non_finite
from service.cds_auth import FetchFailed, fetch_json, require_cds_client
from service.errors import PrefetchMissing
from service.routes import _responses
from service.settings import ServiceSettings
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


BP_PANEL = "85354-9"
"""LOINC 85354-9, the blood-pressure panel of the FHIR vital-signs profile (and US Core): systolic and
diastolic are its components, and a search by `code` matches the panel's code, not its components'
(FHIR R4 Observation search parameters: `code` vs `combo-code`), so the panel is asked for by name."""


def _prefetch() -> dict[str, str]:
    """The templates. Vitals: the LOINC codes the mapping reads, the BP panel, and the oxygen-device
    Observation codes of the terminology file. Assessments (ICE/CAPD, neurological findings): by
    category, as EHRs chart them (flowsheet screening and exam rows), never by our own CodeSystem,
    which no EHR holds. Administrations: with their Medications (`_include`), which carry the drug
    when the administration only references it."""
    codes = [f"{LOINC}|{code}" for code in QUANTITIES]
    codes.append(f"{LOINC}|{BP_PANEL}")
    device_codes: frozenset[tuple[str, str]] = getattr(fhir_codes, "DEVICE_OBSERVATION_CODES", frozenset())
    codes += [f"{system}|{code}" for system, code in sorted(device_codes) if system != AEGRADE_SYSTEM and f"{system}|{code}" not in codes]
    return {
        "patient": "Patient/{{context.patientId}}",
        "vitals": "Observation?patient={{context.patientId}}&code=" + ",".join(codes) + "&_sort=-date&_count=100",
        "assessments": "Observation?patient={{context.patientId}}&category=survey,exam&_sort=-date&_count=100",
        "medications": (
            "MedicationAdministration?patient={{context.patientId}}&_sort=-effective-time&_count=100"
            "&_include=MedicationAdministration:medication"
        ),
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
    it needs. Open, even when AEGRADE_API_KEYS or AEGRADE_CDS_ISSUERS is set."""
    usage = (
        "Send the prefetch (null when there is no such data). A prefetch not sent is queried from fhirServer only "
        "when this service is configured to trust that server (AEGRADE_CDS_FHIR_SERVERS); else 412. Observation codes: "
        f"LOINC vital signs; ICE/CAPD also in the CodeSystem {AEGRADE_SYSTEM} (GET /v1/fhir/CodeSystem/assessment)."
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


Extension = Annotated[
    dict[str, Any] | None, Field(default=None, description="CDS Hooks' reserved extension object: accepted, not read.")
]


class CdsContext(_In):
    userId: str = Field(min_length=1, max_length=256)
    patientId: str = Field(min_length=1, max_length=64)
    encounterId: str | None = Field(default=None, max_length=64)
    draftOrders: dict[str, Any] | None = Field(default=None, description="order-sign only: not read.")
    selections: list[str] | None = None
    extension: Extension = None


class FhirAuthorization(BaseModel):
    """The OAuth 2.0 token for fhirServer (CDS Hooks 2.0). Used only to fetch a prefetch that was not
    sent; never stored or logged. Members other than these are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)  # as its schema says: "300" is not an expires_in
    access_token: str = Field(min_length=1, max_length=16384)
    token_type: Literal["Bearer", "bearer"] = "Bearer"
    expires_in: int | None = None
    scope: str | None = Field(default=None, max_length=4096)
    subject: str | None = Field(default=None, max_length=256)


class CdsRequest(_In):
    hook: Literal["patient-view", "order-sign"]
    hookInstance: str = Field(min_length=1, max_length=128)
    fhirServer: str | None = Field(
        default=None, max_length=2048, description="Queried for a prefetch not sent, if under AEGRADE_CDS_FHIR_SERVERS."
    )
    fhirAuthorization: FhirAuthorization | None = Field(default=None, description="Used for those queries only; not stored.")
    context: CdsContext
    prefetch: dict[str, dict[str, Any] | None] | None = Field(
        default=None, description="By template key; null: the client has no such data; a key not sent: fetched, or 412."
    )
    extension: Extension = None


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


def fhir_server_allowed(server: str, allowed: list[str]) -> bool:
    """Whether `server` (a call's fhirServer) is one of the `allowed` base URLs (AEGRADE_CDS_FHIR_SERVERS)
    or under one: the same scheme, host and port, and a path that extends the allowed path by whole
    segments. A URL with user info, a query, a fragment, dot segments or escapes in its path is never
    allowed, so that it cannot step outside the allowed path."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc or parts.query or parts.fragment:
        return False
    if "%" in parts.path or "\\" in parts.path or any(segment in (".", "..") for segment in parts.path.split("/")):
        return False
    here = (parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"))
    for base in allowed:
        there = urlsplit(base)
        path = there.path.rstrip("/")
        if (there.scheme, there.netloc.lower()) == here[:2] and (here[2] == path or here[2].startswith(path + "/")):
            return True
    return False


def _query(template: str, context: CdsContext) -> str:
    """A prefetch template with the context's tokens filled in (each percent-encoded)."""
    query = template.replace("{{context.patientId}}", quote(context.patientId, safe=""))
    return query.replace("{{context.encounterId}}", quote(context.encounterId or "", safe=""))


async def _prefetched(call: CdsRequest, settings: ServiceSettings) -> tuple[dict[str, dict[str, Any] | None], list[str]]:
    """Every prefetch the service reads: as sent (null included: no such data), and those not sent
    fetched from fhirServer (when allowed). The keys fetched are the second value. 412 when a key was
    neither sent nor fetched, naming it and why."""
    prefetch: dict[str, dict[str, Any] | None] = dict(call.prefetch or {})
    absent = [key for key in PREFETCH if key not in prefetch]
    if not absent:
        return prefetch, []
    names = ", ".join(absent)
    if not call.fhirServer:
        raise PrefetchMissing(f"prefetch {names} not sent, and no fhirServer to query (send null when there is no such data)")
    if not fhir_server_allowed(call.fhirServer, settings.cds_fhir_servers):
        raise PrefetchMissing(
            f"prefetch {names} not sent, and this service does not query that fhirServer (it queries only the servers "
            "of AEGRADE_CDS_FHIR_SERVERS)"
        )
    base = call.fhirServer.rstrip("/")
    headers = {"Authorization": f"Bearer {call.fhirAuthorization.access_token}"} if call.fhirAuthorization else {}
    fetched = await asyncio.gather(
        *(
            fetch_json(
                f"{base}/{_query(PREFETCH[key], call.context)}",
                timeout_s=settings.cds_fhir_timeout_s,
                max_bytes=settings.cds_fhir_max_bytes,
                headers=headers,
            )
            for key in absent
        ),
        return_exceptions=True,
    )
    failures: list[str] = []
    for key, answer in zip(absent, fetched):
        if isinstance(answer, FetchFailed):
            failures.append(f"{key}: {answer}")
        elif isinstance(answer, BaseException):
            raise answer
        elif not isinstance(answer, dict):
            failures.append(f"{key}: the answer is not a FHIR resource")
        else:
            prefetch[key] = answer
    if failures:
        logger.warning("cds: prefetch not fetched from fhirServer: %s", "; ".join(failures))
        raise PrefetchMissing(f"prefetch not sent and not fetched from fhirServer: {'; '.join(failures)}")
    return prefetch, absent


def _located(call: CdsRequest, prefetch: dict[str, dict[str, Any] | None]) -> list[Located]:
    """The resources of the prefetch, each located in the call (`body.prefetch.<key>`). A null key
    gives none (the client has no such data); a patient that is not the context's is a 422."""
    located: list[Located] = []
    patient = prefetch.get("patient")
    if patient is not None:
        if patient.get("resourceType") != "Patient" or patient.get("id") != call.context.patientId:
            raise FhirInputError(
                [_field(("body", "prefetch", "patient"), f"must be the Patient resource with id {call.context.patientId} (context.patientId)")]
            )
        located.append(Located(patient, ("body", "prefetch", "patient")))
    for key in ("vitals", "assessments", "medications"):
        bundle = prefetch.get(key)
        if bundle is None:
            continue
        if bundle.get("resourceType") != "Bundle":
            raise FhirInputError([_field(("body", "prefetch", key), "must be a Bundle (the search result), or null when there is no data")])
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


CHARTED_AS: dict[str, str] = {
    "fever": "temperature",
    "hypotension": "blood pressure",
    "oxygen": "SpO2 or oxygen support",
    "encephalopathy": "ICE or CAPD score",
    "consciousness": "level of consciousness",
    "seizure": "seizure assessment",
    "motor": "motor examination",
    "icp": "raised intracranial pressure or cerebral edema assessment",
}
"""What a nurse charts for a grading domain, for the words of a card (another domain: its id in words)."""


def _not_charted(domains: list[str], window_hours: float) -> str:
    """"no temperature, blood pressure in the last 4 h": the unreported domains as what to chart."""
    words = list(dict.fromkeys(CHARTED_AS.get(d) or d.replace("_", " ") for d in domains))
    return f"no {', '.join(words) or 'usable observation'} in the last {window_hours:g} h"


def _not_assessable_summary(scale: str, domain: DomainResult, window_hours: float) -> str:
    return _truncate(f"{scale}: not assessable, {_not_charted(domain.missing, window_hours)}")


DEFAULT_WINDOW_HOURS: float = ServiceSettings.model_fields["fhir_window_hours"].default


def _domain_card(
    name: str, domain: DomainResult, result: FhirAssessmentResult, links: list[CardLink], window_hours: float = DEFAULT_WINDOW_HOURS
) -> Card | None:
    """A card when the domain needs attention: a grade >= 1 established, a grade >= 1 that the
    unreported inputs still allow (undetermined: an info card saying what to chart), a result left
    to the clinician, or a domain that cannot be assessed (an info card naming what was not charted
    in the window: unknown is not normal, so it is never silence). Grade 0 with nothing open gives none."""
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
    elif domain.status == "not_assessable":
        indicator = "info"
    else:
        return None
    if domain.status == "not_assessable" and not established and (domain.missing or not possible):
        summary = _not_assessable_summary(scale, domain, window_hours)
    else:
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
        lines.append(f"\nNot reported, so not graded: {', '.join(domain.missing)} ({_not_charted(domain.missing, window_hours)}).")
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


ASTCT_LINK = CardLink(label="ASTCT 2019 consensus grading (Lee et al.)", url=ASTCT_2019, type="absolute")
NO_LINK_NOTE = (
    "\n\nNo link to this assessment: the service's public URL (AEGRADE_PUBLIC_BASE_URL) is not configured. "
    "Its id is {id}."
)


def assessment_link(base_url: str | None, assessment_id: str) -> CardLink | None:
    """The link to the human view of an assessment (service/record_view.py), under the configured
    public URL; None without one (never built from the request's Host header)."""
    if not base_url:
        return None
    return CardLink(label="aegrade: this assessment (grades, criteria, inputs)", url=f"{base_url}/assessments/{assessment_id}", type="absolute")


def _absent_card(name: str, domains: list[str], window_hours: float, links: list[CardLink]) -> Card:
    """A scale of which the prefetch gave no input at all (the section was not graded): an info card
    naming what was not charted. Unknown is not normal: this is no grade, and it is said."""
    summary = f"{name}: not assessable, {_not_charted(domains, window_hours)}"
    if len(summary) > SUMMARY_MAX:
        summary = _truncate(f"{name}: not assessable, {_not_charted(domains[:1], window_hours).replace(' in the last', f' or other {name} input in the last')}")
    words = ", ".join(dict.fromkeys(CHARTED_AS.get(d) or d.replace("_", " ") for d in domains))
    detail = (
        f"**{name}: not assessable.** Nothing in the prefetch charted in the last {window_hours:g} h gives an input to grade {name} "
        f"({words}), so {name} was not graded. This is no grade, not grade 0."
        "\n\n_Decision support: this card informs; it orders nothing._"
    )
    return Card(uuid=str(uuid.uuid4()), summary=summary, detail=detail, indicator="info",
                source=CardSource(label="aegrade", url=ASTCT_2019), links=links)


def cards_for(
    result: FhirAssessmentResult, base_url: str | None, window_hours: float, scale_domains: dict[str, list[str]] | None = None
) -> list[Card]:
    """One card per domain that needs attention (grade >= 1; grade_max >= 1 with a lower grade,
    as an undetermined info card; left to the clinician; or not assessable, naming what was not
    charted), then one per flag. A domain settled at grade 0 gives no card. A scale with no input at
    all (CRS or ICANS not graded) gets an info card naming its domains from `scale_domains` (by
    scale: the grading rule file's domain ids). Each card links to the assessment's view under
    `base_url` (AEGRADE_PUBLIC_BASE_URL), or says why it does not."""
    own = assessment_link(base_url, result.id)
    links = [own, ASTCT_LINK] if own is not None else [ASTCT_LINK]
    cards: list[Card] = []
    for name, domain in (("CRS", result.crs), ("ICANS", result.icans)):
        if domain is None:
            if scale_domains and name in scale_domains:
                cards.append(_absent_card(name, scale_domains[name], window_hours, links))
            continue
        card = _domain_card(name, domain, result, links, window_hours)
        if card is not None:
            cards.append(card)
    cards += [_flag_card(flag, [own] if own is not None else []) for flag in result.flags]
    if own is None:
        cards = [card.model_copy(update={"detail": card.detail + NO_LINK_NOTE.format(id=result.id)}) for card in cards]
    return cards


def _scale_domains(request: Request) -> dict[str, list[str]]:
    """The domains of the CRS and ICANS rule sets (death aside: not charted on a living patient's view)."""
    engine = request.app.state.engine
    return {
        name: [d.id for d in engine.primary(role).file.domains if d.id != "death"]
        for name, role in (("CRS", "crs"), ("ICANS", "icans"))
    }


def no_patient_card() -> Card:
    """The one card of a call whose Patient prefetch is null (the client has no Patient data)."""
    detail = (
        "**CRS and ICANS: not graded.** The EHR sent no Patient data (prefetch `patient` is null). The service reads "
        "the age from Patient.birthDate (it decides between ICE and CAPD for ICANS) and grades nothing without it. "
        "This is no grade, not grade 0.\n\n_Decision support: this card informs; it orders nothing._"
    )
    return Card(uuid=str(uuid.uuid4()), summary="CRS and ICANS: not graded, the EHR sent no Patient data (the age is needed)",
                detail=detail, indicator="info", source=CardSource(label="aegrade", url=ASTCT_2019), links=[ASTCT_LINK])


def nothing_charted_card(reason: str, window_hours: float) -> Card:
    """The one card of a call whose prefetch has nothing usable in the window (nothing graded, nothing
    on record): CRS and ICANS not assessable, and why, rather than an empty answer."""
    summary = _truncate(f"CRS and ICANS: not assessable, no usable observation in the last {window_hours:g} h")
    detail = "\n".join([
        f"**CRS and ICANS: not assessable.** Nothing in the prefetch charted in the last {window_hours:g} h gives a graded input "
        "(temperature, blood pressure, SpO2 or oxygen support, ICE/CAPD, neurological findings).",
        "",
        f"What the service found: {reason}",
        "",
        "Unknown is not normal: this is no grade, not grade 0. Chart the vital signs to grade CRS, and an ICE or CAPD "
        "assessment to grade ICANS.",
        "\n_Decision support: this card informs; it orders nothing._",
    ])
    return Card(uuid=str(uuid.uuid4()), summary=summary, detail=detail, indicator="info",
                source=CardSource(label="aegrade", url=ASTCT_2019), links=[ASTCT_LINK])


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
    dependencies=[Depends(require_cds_client)],
    summary="The aegrade-toxicity CDS service (patient-view, order-sign)",
)
async def call_service(
    service_id: ServiceId, call: Annotated[CdsRequest, Body(openapi_examples=call_examples())], request: Request
) -> JSONResponse:
    """Grades the prefetched record as of now and answers with cards. A prefetch sent as null is no
    data; one not sent is fetched from fhirServer when allowed (AEGRADE_CDS_FHIR_SERVERS), else 412.
    422 naming the resource when the record cannot be read. A record with nothing charted in the
    window that maps to a graded section (no usable Observation) is not graded and not stored: the
    answer is one info card saying so (stored, for feedback), never a silent empty answer."""
    settings: ServiceSettings = request.app.state.settings
    sent = call.model_dump(mode="json", exclude_unset=True, exclude={"fhirAuthorization"})
    bad = non_finite(sent, ("body",))
    if bad:
        raise FhirInputError(bad)
    prefetch, fetched = await _prefetched(call, settings)
    if fetched:
        bad = non_finite({key: prefetch[key] for key in fetched}, ("fhirServer",))
        if bad:
            raise PrefetchMissing(f"prefetch {', '.join(fetched)} fetched from fhirServer holds a number that is not finite")
    if prefetch.get("patient") is None:
        # null: the client has no Patient data. The age decides the ICANS tool and the mapping needs it:
        # nothing is graded, and the card says why (never silence, never a grade with a guessed age).
        card = no_patient_card()
        await run_in_threadpool(_store_cards, request.app.state.store, call, service_id, "", [card])
        logger.info("cds %s %s: no Patient data in the prefetch, one info card", service_id, call.hook)
        return JSONResponse(CdsResponse(cards=[card]).model_dump(mode="json", exclude_none=True))
    located = _located(call, prefetch)
    recorded: dict[str, Any] = {
        "cds_hook": call.hook, "hook_instance": call.hookInstance, "service": service_id, "prefetch": {**(sent.get("prefetch") or {}), **{k: prefetch[k] for k in fetched}},
    }
    if fetched:  # the access token is never on record
        recorded["fetched_from_fhir_server"] = {"fhirServer": call.fhirServer, "keys": fetched}
    cards: list[Card] = []
    window = settings.fhir_window_hours

    async def store_cards(result: FhirAssessmentResult) -> None:
        # Part of the grading path: if the cards cannot be stored, the grade is not given either
        # (503) and its record is marked undelivered.
        cards.extend(cards_for(result, settings.public_base_url, window, _scale_domains(request)))
        await run_in_threadpool(_store_cards, request.app.state.store, call, service_id, result.id, cards)

    try:
        result, _ = await grade_fhir(request, located, recorded, as_of=datetime.now(timezone.utc), then=store_cards)
    except FhirInputError as exc:
        if [e.code for e in exc.errors] != [NOTHING_TO_GRADE]:
            raise
        card = nothing_charted_card(exc.errors[0].msg, window)
        # Not graded, so on no assessment record: the card is stored (assessment_id "") for feedback.
        await run_in_threadpool(_store_cards, request.app.state.store, call, service_id, "", [card])
        logger.info("cds %s %s: nothing to grade in the prefetch, one info card", service_id, call.hook)
        return JSONResponse(CdsResponse(cards=[card]).model_dump(mode="json", exclude_none=True))
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
    extension: Extension = None


class FeedbackItem(_In):
    card: str = Field(min_length=1, max_length=36)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: datetime
    acceptedSuggestions: list[AcceptedSuggestion] | None = Field(default=None, max_length=20)
    overrideReason: OverrideReason | None = None
    extension: Extension = None


class FeedbackIn(_In):
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=100)
    extension: Extension = None


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
    dependencies=[Depends(require_cds_client)],
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
