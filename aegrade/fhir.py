"""FHIR R4 resources -> one Assessment, and the mapping that says which resource gave which field.

Pure logic, no HTTP: service/fhir_routes.py takes a Bundle (POST /v1/fhir/assessments) or a CDS
Hooks prefetch and hands the resources here. The code tables are aegrade/fhir_codes.py.

How the resources are read (README: FHIR R4 input):

- Each resource of a type read here (Patient, Observation, MedicationAdministration, Medication) is
  first validated as FHIR R4 by fhir.resources (its R4B models: Observation, Patient,
  MedicationAdministration and Bundle are unchanged from R4). The values are then read from the JSON
  itself, strictly: a number must be a JSON number, a boolean a JSON boolean (fhir.resources would
  take 1 for true and "38" for 38).
- Observations count when their status is final, amended, corrected or preliminary, and they carry a
  date-time with a time zone. A value with a dataAbsentReason is "not reported".
- The assessment time (`as_of`) is the latest Observation time, or the time the caller gives (CDS
  Hooks: now). For each kind of value the latest Observation no older than `window_hours` before
  `as_of` is used; older ones are listed as ignored. Two different values of one kind at that same
  latest time are a conflict (422), as are units that are not the kind's UCUM units.
- Age is computed from Patient.birthDate at `as_of` (a full date is required).
- Vasopressors are those with a MedicationAdministration running at `as_of`. Without one the field
  is not reported (never "none": a Bundle cannot show that nothing runs).
- Fever masking follows the episode rule: a masking agent (the CRS rule file's) sets
  `crs.fever_masked` only when given at or after CRS onset (a temperature at or above the rule
  file's fever threshold in the Bundle at or before it) or with a reasonCode naming CRS, unless an
  Observation states it. Premedication never masks; with no usable time it is undecided and left
  unreported. `mapping.masking_decisions` says which administration masked and why.
- A resource that cannot be used (time, status, code, unit, reference, invalid FHIR) is listed in
  `mapping.ignored`; only the Patient, another patient's data and conflicts refuse the request.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from datetime import date, datetime, timedelta, timezone
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aegrade.episodes import EARLIEST, FUTURE_TOLERANCE, default_fever_masking
from aegrade.episodes import masking_window_hours as _masking_window
from aegrade.errors import FhirInputError, FieldError, InvalidAssessment, RuleFileError
from aegrade.fhir_codes import (
    AEGRADE_SYSTEM,
    AGENT_NAMES,
    CRS_REASON_TEXT,
    PREMEDICATION_TEXT,
    DEVICE_TEXT,
    LOINC,
    OWN_CODES,
    QUANTITIES,
    RXNORM,
    RXNORM_AGENTS,
    SNOMED,
    SNOMED_DEVICES,
    UCUM,
    VASOPRESSORS,
    OwnCode,
    QuantityKind,
)
from aegrade.models import AssessmentResult, IcpSign, Interpretation
from aegrade.rulefile import AllOf, AnyOf, FactTest, default_rules_dir, load_rulesets
from aegrade.rulefile import FeverMasking as FeverMaskingRule

__all__ = [
    "FhirAssessmentResult",
    "FhirInputError",
    "FhirMapping",
    "IgnoredResource",
    "MaskingDecision",
    "Located",
    "MappedValue",
    "age_at",
    "bundle_resources",
    "default_fever_threshold_c",
    "errors_at_sources",
    "fever_threshold",
    "map_resources",
    "with_fhir_context",
]

READ_TYPES = ("Patient", "Observation", "MedicationAdministration", "Medication")
OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
GIVEN_STATUSES = frozenset({"in-progress", "completed", "stopped"})
UNRESOLVED = "<unresolved medication reference>"
BUNDLE_TYPES = ("collection", "transaction", "searchset", "batch-response")
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Located:
    """A resource as sent, and where it is in the request body (for error locations)."""

    resource: Mapping[str, Any]
    loc: Loc
    full_url: str | None = None

    @property
    def label(self) -> str:
        rid = self.resource.get("id")
        kind = self.resource.get("resourceType", "resource")
        return f"{kind}/{rid}" if isinstance(rid, str) else f"{kind} at {'.'.join(str(p) for p in self.loc)}"


# ---- output models ---------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MappedValue(_Out):
    """One Assessment field and the resource it came from."""

    field: str | None = Field(description="Assessment field, e.g. vitals.temperature_c; null when recorded but not graded.")
    value: Any
    source: str = Field(description="The resource, as ResourceType/id.")
    code: str = Field(description="system|code that was recognised.")
    unit: str | None = None
    effective: datetime | None = None
    note: str = ""


class IgnoredResource(_Out):
    source: str
    reason: str


class MaskingDecision(_Out):
    """One fever-masking administration and what it did: masks (true), does not (false), or
    undecided (null: crs.fever_masked is then left unreported)."""

    source: str
    agent: str
    given_at: datetime | None
    masks: bool | None
    reason: str


class FhirMapping(_Out):
    """What the resources gave: the assessment (as JSON) and where each value came from."""

    as_of: datetime = Field(description="The time the assessment describes: the latest Observation, or the caller's time.")
    window_hours: float = Field(description="Observations older than this before as_of were not used.")
    mapped: list[MappedValue]
    ignored: list[IgnoredResource]
    masking: list[str] = Field(
        default_factory=list, description="Fever-masking administrations found (tocilizumab, anakinra, corticosteroids, antipyretics)."
    )
    masking_applied: bool = Field(default=False, description="Whether they set crs.fever_masked (no fever-masked Observation was sent).")
    masking_decisions: list[MaskingDecision] = Field(
        default_factory=list, description="Each fever-masking administration: whether it masks fever, and why (README: fever masking)."
    )


class FhirAssessmentResult(AssessmentResult):
    """The usual AssessmentResult, plus the FHIR mapping it was graded from."""

    mapping: FhirMapping


# ---- small readers ---------------------------------------------------------------------------


def _problem(at: Located, path: Loc, msg: str, code: str = "fhir_invalid") -> FieldError:
    return FieldError(loc=(*at.loc, *path), msg=f"{at.label}: {msg}", code=code)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _instant(text: Any) -> datetime | None:
    """A FHIR dateTime/instant with a time and a zone, in UTC; None for anything less."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)", text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def _effective(at: Located) -> tuple[datetime | None, str]:
    """The resource's time in UTC, or None and why it cannot be used (a date without a time, no
    zone, no time at all): the resource is then listed as ignored, never the request refused."""
    resource = at.resource
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return _usable(resource[key], key)
    if "effectivePeriod" in resource and isinstance(resource["effectivePeriod"], Mapping):
        return _usable(resource["effectivePeriod"].get("start"), "effectivePeriod.start")
    return None, "no effective time (effectiveDateTime, effectiveInstant or effectivePeriod.start)"


def _usable(text: Any, key: str) -> tuple[datetime | None, str]:
    when = _instant(text)
    if when is not None:
        return when, ""
    if isinstance(text, str) and re.fullmatch(r"\d{4}(-\d\d(-\d\d)?)?", text):
        return None, f"{key}: date without time ({text}): cannot be placed in the assessment window"
    return None, f"{key}: not a date and time with a time zone ({text!r})"


def _codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]


def age_at(birth: date, when: date) -> float:
    """Age in years on `when`: whole calendar years, plus the fraction of the current year of age.
    On the 12th birthday it is exactly 12.0; the day before it is below 12."""
    years = when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))

    def birthday(year: int) -> date:
        try:
            return birth.replace(year=year)
        except ValueError:  # 29 February in a common year: 1 March
            return date(year, 3, 1)

    last = birthday(birth.year + years)
    following = birthday(birth.year + years + 1)
    return round(years + (when - last).days / (following - last).days, 3)


# ---- candidates: one value of one kind at one time --------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    kind: str
    field: str | None
    value: Any
    comparable: Any
    when: datetime
    at: Located
    path: Loc
    code: str
    unit: str | None = None
    note: str = ""


@dataclass
class _Reader:
    now: datetime
    problems: list[FieldError] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)
    ignored: list[IgnoredResource] = field(default_factory=list)

    def ignore(self, at: Located, reason: str) -> None:
        self.ignored.append(IgnoredResource(source=at.label, reason=reason))

    def quantity(self, at: Located, path: Loc, element: Mapping[str, Any], code: str, kind: QuantityKind, when: datetime) -> None:
        quantity = element.get("valueQuantity")
        if not isinstance(quantity, Mapping):
            self.ignore(at, f"{kind.display} ({code}) needs a valueQuantity")
            return
        value = _number(quantity.get("value"))
        unit = quantity.get("code")
        system = quantity.get("system")
        if value is None:
            self.ignore(at, f"{kind.display} ({code}): the value must be a finite number")
            return
        if system is not None and system != UCUM:
            self.ignore(at, f"{kind.display} ({code}): the unit must be UCUM ({UCUM}), not {system}")
            return
        if unit not in kind.units:
            allowed = ", ".join(kind.units)
            self.ignore(at, f"{kind.display} ({code}) must be in {allowed} (UCUM), not {unit!r}")
            return
        target, factor = kind.units[unit]
        converted = value if kind.kind == "temperature" else round(value * factor, 4)
        self.candidates.append(
            _Candidate(kind.kind, target, converted, round(kind.canonical(unit, value), 2), when, at, path, f"{LOINC}|{code}", unit, kind.note)
        )

    def own(self, at: Located, path: Loc, element: Mapping[str, Any], code: str, own: OwnCode, when: datetime) -> None:
        label = f"{own.display} ({AEGRADE_SYSTEM}|{code})"
        value: Any
        if own.value == "boolean":
            value = element.get("valueBoolean")
            if not isinstance(value, bool):
                self.ignore(at, f"{label} needs valueBoolean true or false")
                return
        elif own.value == "integer":
            value = element.get("valueInteger")
            if isinstance(value, bool) or not isinstance(value, int):
                self.ignore(at, f"{label} needs a whole-number valueInteger")
                return
        else:
            value = self._code_value(at, path, element, code, own, label)
            if value is None:
                return
        self.candidates.append(_Candidate(own.field, own.field, value, value, when, at, path, f"{AEGRADE_SYSTEM}|{code}"))

    def _code_value(self, at: Located, path: Loc, element: Mapping[str, Any], code: str, own: OwnCode, label: str) -> str | None:
        concept = element.get("valueCodeableConcept")
        if not isinstance(concept, Mapping):
            self.ignore(at, f"{label} needs a valueCodeableConcept")
            return None
        found: set[str] = set()
        for coding in _codings(concept):
            system, value = coding.get("system"), coding.get("code")
            if system == AEGRADE_SYSTEM and value in own.codes:
                found.add(str(value))
            elif code == "oxygen-device" and system == SNOMED and value in SNOMED_DEVICES:
                found.add(SNOMED_DEVICES[str(value)])
        text = concept.get("text")
        if not found and code == "oxygen-device" and isinstance(text, str):
            device = DEVICE_TEXT.get(" ".join(text.lower().split()))
            if device is not None:
                found.add(device)
        if len(found) != 1:
            why = "names more than one value" if found else "has no code or text recognised"
            allowed = ", ".join(own.codes)
            self.ignore(at, f"{label} {why}: use {AEGRADE_SYSTEM} codes ({allowed})")
            return None
        return found.pop()


# ---- the mapping -----------------------------------------------------------------------------


def _validate_fhir(located: Sequence[Located], problems: list[FieldError], ignored: list[IgnoredResource]) -> list[Located]:
    """The resources that are valid FHIR R4. An invalid Patient refuses the request (the age cannot
    be read); any other invalid resource is listed as ignored."""
    from fhir.resources.R4B import get_fhir_model_class

    valid: list[Located] = []
    for at in located:
        kind = at.resource.get("resourceType")
        if kind not in READ_TYPES:
            valid.append(at)
            continue
        found: list[FieldError] = []
        try:
            get_fhir_model_class(str(kind)).model_validate(dict(at.resource))
        except ValidationError as exc:
            for error in exc.errors()[:20]:
                path = tuple(p for p in error.get("loc", ()) if isinstance(p, (str, int)))
                found.append(_problem(at, path, f"not valid FHIR R4: {error.get('msg', '')}"))
        except Exception as exc:  # fhir.resources raises KeyError/TypeError for some malformed input
            found.append(_problem(at, (), f"not valid FHIR R4 ({type(exc).__name__})"))
        if not found:
            valid.append(at)
        elif kind == "Patient":
            problems.extend(found)
        else:
            where = ".".join(str(p) for p in found[0].loc[len(at.loc):])
            ignored.append(IgnoredResource(source=at.label, reason=f"not valid FHIR R4{' at ' + where if where else ''}: {found[0].msg.split(': ', 1)[-1]}"))
    return valid


def _patient(located: Sequence[Located], problems: list[FieldError]) -> tuple[Located | None, date | None]:
    patients = [at for at in located if at.resource.get("resourceType") == "Patient"]
    if not patients:
        problems.append(FieldError(loc=("body",), msg="no Patient resource: the age (from birthDate) is needed", code="missing"))
        return None, None
    if len(patients) > 1:
        problems.append(_problem(patients[1], (), "a second Patient: one assessment describes one patient", "conflict"))
        return None, None
    at = patients[0]
    text = at.resource.get("birthDate")
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        problems.append(_problem(at, ("birthDate",), "needs a full birthDate (YYYY-MM-DD): a year or month alone cannot place the age cut-offs"))
        return at, None
    try:
        return at, date.fromisoformat(text)
    except ValueError:
        problems.append(_problem(at, ("birthDate",), "is not a real date"))
        return at, None


def _subject_matches(at: Located, patient: Located | None, problems: list[FieldError]) -> None:
    """A resource about another patient is refused: one assessment, one patient."""
    if patient is None:
        return
    subject = at.resource.get("subject")
    if not isinstance(subject, Mapping) or not isinstance(subject.get("reference"), str):
        return
    pid = patient.resource.get("id")
    reference = subject["reference"]
    if reference in {f"Patient/{pid}", patient.full_url} or (isinstance(pid, str) and reference.endswith(f"/Patient/{pid}")):
        return
    problems.append(_problem(at, ("subject", "reference"), f"is about {reference}, not the Bundle's Patient/{pid}", "conflict"))


def _read_observation(reader: _Reader, at: Located) -> None:
    resource = at.resource
    status = resource.get("status")
    if status not in OBSERVATION_STATUSES:
        reader.ignore(at, f"status {status!r} is not final, amended, corrected or preliminary")
        return
    parts: list[tuple[Loc, Mapping[str, Any]]] = [((), resource)]
    parts += [(("component", i), c) for i, c in enumerate(resource.get("component") or []) if isinstance(c, Mapping)]
    recognised: list[tuple[Loc, Mapping[str, Any], str, str]] = []
    for path, element in parts:
        codes = {(c.get("system"), c.get("code")) for c in _codings(element.get("code"))}
        known = [(s, str(c)) for s, c in codes if (s == LOINC and c in QUANTITIES) or (s == AEGRADE_SYSTEM and c in OWN_CODES)]
        kinds = {QUANTITIES[c].kind if s == LOINC else c for s, c in known}
        if len(kinds) > 1:
            reader.ignore(at, f"{'.'.join(str(p) for p in (*path, 'code'))}: its codings name different things")
            continue
        if known:
            recognised.append((path, element, *known[0]))
    if not recognised:
        reader.ignore(at, "no code read by aegrade")
        return
    when, why = _effective(at)
    if when is None:
        reader.ignore(at, why)
        return
    if when > reader.now + FUTURE_TOLERANCE or when < EARLIEST:
        reader.ignore(at, f"the time {when.isoformat()} is in the future or before {EARLIEST.year}")
        return
    for path, element, system, code in recognised:
        if "dataAbsentReason" in element:
            reader.ignore(at, f"{code}: dataAbsentReason, not reported")
        elif system == LOINC:
            reader.quantity(at, path, element, code, QUANTITIES[code], when)
        else:
            reader.own(at, path, element, code, OWN_CODES[code], when)


def _latest(reader: _Reader, as_of: datetime, window_hours: float) -> dict[str, _Candidate]:
    since = as_of - timedelta(hours=window_hours)
    by_kind: dict[str, list[_Candidate]] = defaultdict(list)
    for candidate in reader.candidates:
        if candidate.when > as_of + FUTURE_TOLERANCE:
            reader.ignore(candidate.at, f"{candidate.code}: after the assessment time {as_of.isoformat()}")
        elif candidate.when < since:
            reader.ignore(candidate.at, f"{candidate.code}: older than {window_hours:g} h before {as_of.isoformat()}")
        else:
            by_kind[candidate.kind].append(candidate)
    chosen: dict[str, _Candidate] = {}
    for kind, found in by_kind.items():
        latest = max(c.when for c in found)
        at_latest = [c for c in found if c.when == latest]
        if len({repr(c.comparable) for c in at_latest}) > 1:
            names = ", ".join(f"{c.at.label}: {c.value}{' ' + c.unit if c.unit else ''}" for c in at_latest)
            for c in at_latest:
                reader.problems.append(_problem(c.at, c.path, f"conflicting values for {kind} at {latest.isoformat()} ({names})", "conflict"))
            continue
        for older in found:
            if older.when != latest:
                reader.ignore(older.at, f"{older.code}: a later value of the same kind was used")
        chosen[kind] = at_latest[0]
    return chosen


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _groups(chosen: dict[str, _Candidate], reader: _Reader) -> None:
    """ICE items and CAPD items are sent all together, from one time; ICP signs are combined."""
    for prefix, size, name in (("neuro.ice.", 5, "ICE items"), ("neuro.capd.", 8, "CAPD items")):
        members = [c for k, c in chosen.items() if k.startswith(prefix)]
        if not members:
            continue
        if len(members) != size or len({c.when for c in members}) != 1:
            for c in members:
                reader.problems.append(
                    _problem(c.at, c.path, f"{name} must all be sent, from one assessment time: {len(members)} of {size} found at "
                             f"{len({c.when for c in members})} time(s)", "incomplete")
                )


def _medication_agent(at: Located, located: Sequence[Located], reader: _Reader) -> str | None:
    """The agent aegrade reads from a MedicationAdministration, or None for any other drug."""
    concept = at.resource.get("medicationCodeableConcept")
    if concept is None and isinstance(at.resource.get("medicationReference"), Mapping):
        reference = at.resource["medicationReference"].get("reference")
        concept = _resolve_medication(reference, at, located)
        if concept is None:
            return UNRESOLVED
    agents: set[str] = set()
    for coding in _codings(concept):
        if coding.get("system") == RXNORM and coding.get("code") in RXNORM_AGENTS:
            agents.add(RXNORM_AGENTS[str(coding["code"])])
    if not agents and isinstance(concept, Mapping):
        texts = [concept.get("text")] + [c.get("display") for c in _codings(concept)]
        words = {w for t in texts if isinstance(t, str) for w in re.findall(r"[a-z]+", t.lower())}
        agents = {AGENT_NAMES[w] for w in words if w in AGENT_NAMES}
    if len(agents) > 1:
        reader.problems.append(_problem(at, ("medicationCodeableConcept",), f"names more than one agent read by aegrade: {sorted(agents)}", "conflict"))
        return None
    return agents.pop() if agents else None


def _resolve_medication(reference: Any, at: Located, located: Sequence[Located]) -> Any:
    if not isinstance(reference, str):
        return None
    if reference.startswith("#"):
        for contained in at.resource.get("contained") or []:
            if isinstance(contained, Mapping) and contained.get("resourceType") == "Medication" and contained.get("id") == reference[1:]:
                return contained.get("code")
        return None
    for other in located:
        if other.resource.get("resourceType") != "Medication":
            continue
        if reference in {f"Medication/{other.resource.get('id')}", other.full_url}:
            return other.resource.get("code")
    return None


@dataclass(frozen=True)
class _Given:
    """A masking agent's administration: when (None: no usable time) and the reason it gives."""

    agent: str
    at: Located
    when: datetime | None
    reason: str | None  # "crs", "premedication" or None
    why_no_time: str = ""


def _reason(at: Located) -> str | None:
    """"crs" when MedicationAdministration.reasonCode names cytokine release syndrome, "premedication"
    when it names premedication or prophylaxis, else None. Read from the text and the codings'
    display: no SNOMED CT or ICD-10 code for CRS could be confirmed from a stored source, so the
    words are matched (CRS_REASON_TEXT, PREMEDICATION_TEXT in aegrade/fhir_codes.py)."""
    texts: list[str] = []
    for concept in at.resource.get("reasonCode") or []:
        if isinstance(concept, Mapping):
            texts += [t for t in [concept.get("text")] + [c.get("display") for c in _codings(concept)] if isinstance(t, str)]
    words = " ".join(" ".join(re.findall(r"[a-z]+", t.lower())) for t in texts)
    if any(w in words for w in PREMEDICATION_TEXT):
        return "premedication"
    if any(w in words for w in CRS_REASON_TEXT):
        return "crs"
    return None


def _administrations(
    located: Sequence[Located], patient: Located | None, reader: _Reader, as_of: datetime, masking_agents: frozenset[str]
) -> tuple[list[tuple[str, Located]], list[_Given]]:
    """Vasopressors running at `as_of`, and masking agents (the CRS rule file's) given at or before
    it (or at no usable time: whether they mask is then undecided)."""
    running: list[tuple[str, Located]] = []
    given: list[_Given] = []
    for at in located:
        if at.resource.get("resourceType") != "MedicationAdministration":
            continue
        _subject_matches(at, patient, reader.problems)
        agent = _medication_agent(at, located, reader)
        status = at.resource.get("status")
        if agent == UNRESOLVED:
            reference = at.resource["medicationReference"].get("reference")
            reader.ignore(at, f"medicationReference {reference!r} is not a Medication in the request (send it, e.g. with _include): "
                          "whether it is a vasopressor or a fever-masking drug cannot be told")
            continue
        if agent is None:
            reader.ignore(at, "not a vasopressor, anticytokine, corticosteroid or antipyretic read by aegrade")
            continue
        if status not in GIVEN_STATUSES:
            reader.ignore(at, f"{agent}: status {status!r}, not given")
            continue
        start, why = _effective(at)
        if start is not None and start < EARLIEST:
            why = f"the time {start.isoformat()} is before {EARLIEST.year}"
            start = None
        if start is None:
            if agent in masking_agents:
                given.append(_Given(agent, at, None, _reason(at), why))
            else:
                reader.ignore(at, f"{agent}: {why}")
            continue
        period = at.resource.get("effectivePeriod")
        end = _instant(period.get("end")) if isinstance(period, Mapping) and period.get("end") else None
        if start > as_of + FUTURE_TOLERANCE:
            reader.ignore(at, f"{agent}: started after the assessment time")
            continue
        if agent in VASOPRESSORS:
            if status == "in-progress" and (end is None or end >= as_of) or (status != "stopped" and end is not None and end >= as_of):
                running.append((agent, at))
            else:
                reader.ignore(at, f"{agent}: not running at the assessment time")
        elif agent in masking_agents:
            given.append(_Given(agent, at, start, _reason(at)))
    return running, given


def fever_threshold(file: Any) -> float | None:
    """The temperature (°C) at which the CRS rule file's fever rules (domain fever, grade >= 1) start:
    their `{fact: temperature_c, op: gte, value: X}` test."""
    found: list[float] = []

    def walk(condition: Any) -> None:
        if isinstance(condition, AllOf):
            for c in condition.all:
                walk(c)
        elif isinstance(condition, AnyOf):
            for c in condition.any:
                walk(c)
        elif isinstance(condition, FactTest) and condition.fact == "temperature_c" and condition.op == "gte":
            if isinstance(condition.value, (int, float)) and not isinstance(condition.value, bool):
                found.append(float(condition.value))

    for rule in file.rules:
        if rule.domain == "fever" and rule.grade is not None and rule.grade >= 1:
            walk(rule.when)
    return min(found) if found else None


@cache
def default_fever_threshold_c() -> float:
    """The fever threshold of the active primary CRS rule file in rules/ (ASTCT 2019: 38.0 °C)."""
    for ruleset in load_rulesets():
        file = ruleset.file
        if file.subject == "crs" and file.status == "active" and file.role == "primary":
            threshold = fever_threshold(file)
            if threshold is not None:
                return threshold
    raise RuleFileError(str(default_rules_dir()), "the active primary CRS rule file declares no fever rule (temperature_c gte)")


@dataclass(frozen=True)
class _Decision:
    given: _Given
    masks: bool | None  # None: undecided
    why: str


def _masking_decisions(
    given: Sequence[_Given], candidates: Sequence[_Candidate], as_of: datetime, since: datetime | None, threshold: float, enabled: bool
) -> list[_Decision]:
    """The episode rule on a Bundle (ASTCT 2019: "patients who have CRS then receive antipyretic or
    anticytokine therapy"): an administration masks fever when it was given at or after CRS onset,
    read as a temperature >= the rule file's fever threshold in the Bundle at or before it, or when
    its reasonCode is CRS. Premedication never masks. With no usable time it is undecided."""
    fevers = sorted((c for c in candidates if c.kind == "temperature" and c.comparable >= threshold), key=lambda c: c.when)
    decisions: list[_Decision] = []
    for g in sorted(given, key=lambda g: (g.when is None, g.when or as_of)):
        if not enabled:
            decisions.append(_Decision(g, False, "not read as masking (AEGRADE_FHIR_ADMINISTRATIONS_MASK_FEVER is false)"))
        elif g.reason == "premedication":
            decisions.append(_Decision(g, False, "its reasonCode is premedication/prophylaxis: premedication never masks fever"))
        elif g.when is None:
            decisions.append(_Decision(g, None, f"{g.why_no_time}: whether it was given after CRS onset cannot be told, so "
                                       "crs.fever_masked is left unreported (the safer reading: CRS is reported undetermined by it, "
                                       "never graded on a guess either way)"))
        elif since is not None and g.when < since:
            decisions.append(_Decision(g, False, f"given before the fever-masking window ({since.isoformat()})"))
        elif g.reason == "crs":
            decisions.append(_Decision(g, True, "its reasonCode is cytokine release syndrome"))
        else:
            onset = next((c for c in fevers if c.when <= g.when), None)
            if onset is not None:
                decisions.append(_Decision(g, True, f"given at or after CRS onset: {onset.value} {onset.unit} at "
                                           f"{onset.when.isoformat()} ({onset.at.label}), a fever >= {threshold:g} °C"))
            else:
                decisions.append(_Decision(g, False, f"no fever >= {threshold:g} °C in the Bundle at or before it and no CRS reasonCode: "
                                           "not treatment of CRS (e.g. premedication), so it does not mask fever"))
    return decisions


def map_resources(
    located: Sequence[Located],
    *,
    now: datetime,
    as_of: datetime | None = None,
    window_hours: float,
    masking_window_hours: float | None,
    administrations_mask_fever: bool,
    fever_masking: FeverMaskingRule | None = None,
    fever_threshold_c: float | None = None,
) -> tuple[dict[str, Any], dict[str, MappedValue], FhirMapping]:
    """The Assessment (as a dict, to be validated by the engine), the source of each field, and the
    mapping to return. Raises FhirInputError naming each resource at fault.

    The masking agents and window are the CRS rule file's `fever_masking` (default: rules/; an
    Engine's is `Engine.fever_masking`); `masking_window_hours`, when set, overrides the window."""
    fever_masking = fever_masking or default_fever_masking()
    masking_window_hours = _masking_window(masking_window_hours, fever_masking)
    threshold = fever_threshold_c if fever_threshold_c is not None else default_fever_threshold_c()
    problems: list[FieldError] = []
    reader = _Reader(now=now)
    located = _validate_fhir(located, problems, reader.ignored)
    if problems:
        raise FhirInputError(problems)
    patient, birth = _patient(located, problems)
    for at in located:
        kind = at.resource.get("resourceType")
        if kind == "Observation":
            _subject_matches(at, patient, problems)
            _read_observation(reader, at)
        elif kind == "OperationOutcome":
            reader.ignore(at, "an OperationOutcome (an error or warning from the sender), not clinical data")
        elif kind not in READ_TYPES:
            reader.ignore(at, f"resource type {kind} is not read")
    if as_of is None:
        times = [c.when for c in reader.candidates]
        as_of = max(times) if times else None
    if as_of is None and not reader.problems:
        unused = "; ".join(f"{i.source}: {i.reason}" for i in reader.ignored[:3])
        unused = f" (not used: {unused}{'; ...' if len(reader.ignored) > 3 else ''})" if unused else ""
        problems.append(FieldError(loc=("body",), msg=f"no Observation read by aegrade: nothing to grade{unused}", code="missing"))
    if problems or reader.problems or as_of is None or patient is None:
        raise FhirInputError([*problems, *reader.problems])
    chosen = _latest(reader, as_of, window_hours)
    _groups(chosen, reader)
    running, given = _administrations(located, patient, reader, as_of, fever_masking.all_agents)
    if reader.problems:
        raise FhirInputError(reader.problems)

    assessment: dict[str, Any] = {"patient": {}}
    sources: dict[str, MappedValue] = {}
    mapped: list[MappedValue] = []

    def record(field_: str | None, value: Any, at: Located, code: str, unit: str | None = None, when: datetime | None = None, note: str = "") -> None:
        entry = MappedValue(field=field_, value=value, source=at.label, code=code, unit=unit, effective=when, note=note)
        mapped.append(entry)
        if field_ is not None:
            sources[field_] = entry

    assert birth is not None
    age = age_at(birth, as_of.date())
    assessment["patient"]["age_years"] = age
    record("patient.age_years", age, patient, "Patient.birthDate", note=f"from birthDate {birth.isoformat()} at {as_of.date().isoformat()}")

    icp: dict[str, bool] = {}
    for candidate in sorted(chosen.values(), key=lambda c: c.kind):
        target = candidate.field
        if target is not None and target.startswith("neuro.icp_signs."):
            icp[target.rsplit(".", 1)[1]] = candidate.value
            record(target, candidate.value, candidate.at, candidate.code, when=candidate.when)
            continue
        if target is not None and target.startswith("neuro.capd."):
            items = assessment.setdefault("neuro", {}).setdefault("capd", [None] * 8)
            items[int(target.rsplit(".", 1)[1])] = candidate.value
        elif target is not None:
            _set(assessment, target, candidate.value)
        record(target, candidate.value, candidate.at, candidate.code, candidate.unit, candidate.when, candidate.note)
    _icp_signs(assessment, icp)
    _oxygen(assessment, chosen)

    if running:
        agents = sorted({agent for agent, _ in running})
        _set(assessment, "crs.vasopressors", agents)
        for agent, at in running:
            record("crs.vasopressors", agents, at, f"MedicationAdministration {agent}", note="running at the assessment time")
    since = as_of - timedelta(hours=masking_window_hours) if masking_window_hours is not None else None
    decisions = _masking_decisions(given, reader.candidates, as_of, since, threshold, administrations_mask_fever)
    details = [
        MaskingDecision(source=d.given.at.label, agent=d.given.agent, given_at=d.given.when, masks=d.masks, reason=d.why) for d in decisions
    ]
    masking = [
        f"{d.agent} at {d.given_at.isoformat() if d.given_at else 'no usable time'} ({d.source}): "
        f"{'masks' if d.masks else 'undecided' if d.masks is None else 'does not mask'}, {d.reason}"
        for d in details
    ]
    masks = [d for d in decisions if d.masks]
    applied = bool(masks) and "crs.fever_masked" not in chosen
    if applied:
        first = masks[0]
        _set(assessment, "crs.fever_masked", True)
        record("crs.fever_masked", True, first.given.at, f"MedicationAdministration {first.given.agent}", when=first.given.when, note=first.why)
    return assessment, sources, FhirMapping(
        as_of=as_of, window_hours=window_hours, mapped=mapped, ignored=reader.ignored, masking=masking, masking_applied=applied,
        masking_decisions=details,
    )


def _icp_signs(assessment: dict[str, Any], icp: dict[str, bool]) -> None:
    """ICP signs: reported when one is present, or when all four are reported absent."""
    present = [sign for sign in get_args(IcpSign) if icp.get(sign)]
    if present or (icp and len(icp) == len(get_args(IcpSign))):
        _set(assessment, "neuro.icp_signs", present)


def _oxygen(assessment: dict[str, Any], chosen: dict[str, _Candidate]) -> None:
    """A flow without a device is not an oxygen report: the device decides the tier."""
    oxygen = assessment.get("crs", {}).get("oxygen")
    if oxygen is not None and "device" not in oxygen:
        flow = chosen["oxygen_flow"]
        raise FhirInputError(
            [_problem(flow.at, flow.path, "an oxygen flow without an oxygen-device Observation: ASTCT grades by the device and flow together", "incomplete")]
        )


def bundle_resources(bundle: Mapping[str, Any], loc: Loc, _depth: int = 0) -> list[Located]:
    """The resources of a Bundle's entries, each with its location and fullUrl. Reads collection,
    transaction, searchset (match and include entries alike) and batch-response Bundles; a Bundle
    inside an entry (a batch-response to a search) is read one level deep. An entry whose
    response.status is not 2xx carries no data: its resource (an OperationOutcome) is still
    returned, to be listed as ignored."""
    located: list[Located] = []
    for i, entry in enumerate(bundle.get("entry") or []):
        if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping):
            resource = entry["resource"]
            where = (*loc, "entry", i, "resource")
            if resource.get("resourceType") == "Bundle" and _depth == 0:
                located += bundle_resources(resource, where, 1)
                continue
            full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
            located.append(Located(resource, where, full_url))
    return located


def errors_at_sources(exc: InvalidAssessment, sources: Mapping[str, MappedValue], located: Iterable[Located]) -> FhirInputError:
    """The engine's field errors, each moved to the resource that gave the field."""
    by_label = {at.label: at for at in located}
    moved: list[FieldError] = []
    for error in exc.errors:
        dotted = ".".join(str(p) for p in error.loc)
        source = next((s for f, s in sources.items() if dotted == f or dotted.startswith(f + ".") or f.startswith(dotted + ".")), None)
        if source is None or source.source not in by_label:
            moved.append(FieldError(loc=("body",), msg=f"{dotted}: {error.msg}", code=error.code))
            continue
        at = by_label[source.source]
        moved.append(FieldError(loc=at.loc, msg=f"{at.label} ({source.code}) -> {dotted}: {error.msg}", code=error.code))
    return FhirInputError(moved)


def with_fhir_context(result: AssessmentResult, mapping: FhirMapping, administrations_mask_fever: bool) -> FhirAssessmentResult:
    """The result with its mapping; on the CRS part, what the administrations did to fever masking."""
    crs = result.crs
    if crs is not None and mapping.masking:
        given = ", ".join(mapping.masking)
        masks = any(d.masks for d in mapping.masking_decisions)
        if mapping.masking_applied:
            note = f"Fever masking from MedicationAdministration: {given}; fever is no longer required (ASTCT 2019)."
        elif masks:
            note = f"A fever-masked Observation was sent and used; the Bundle also records {given}."
        elif not administrations_mask_fever:
            note = f"Recorded {given}, not read as masking fever (AEGRADE_FHIR_ADMINISTRATIONS_MASK_FEVER is false)."
        else:
            note = f"Fever masking not set from the Bundle: {given}."
        interpretation = Interpretation(
            setting="fhir_administrations_mask_fever",
            value=administrations_mask_fever,
            text=(
                "ASTCT 2019: in patients who have CRS then receive antipyretic or anticytokine therapy, fever is no "
                "longer required. With this setting true (the default), a masking agent of the CRS rule file counts "
                "only when given at or after CRS onset (a temperature at or above the rule file's fever threshold in "
                "the Bundle at or before it) or when its reasonCode is cytokine release syndrome; premedication never "
                "counts; with no usable time it is undecided and crs.fever_masked is left unreported. "
                "An interpretation (AEGRADE_FHIR_ADMINISTRATIONS_MASK_FEVER)."
            ),
        )
        crs = crs.model_copy(update={"notes": [note, *crs.notes], "interpretations": [*crs.interpretations, interpretation]})
    return FhirAssessmentResult(**{**dict(result), "crs": crs, "mapping": mapping})
