"""FHIR R4 resources -> one Assessment, and the mapping that says which resource gave which field.

Pure logic, no HTTP: service/fhir_routes.py takes a Bundle (POST /v1/fhir/assessments) or a CDS
Hooks prefetch and hands the resources here. The code tables are aegrade/fhir_codes.py, the
terminology (devices, drug names and brands, blood-pressure methods, reasons) and the rule for
simultaneous values aegrade/terminology/fhir-terms.yaml.

How the resources are read (README: FHIR R4 input). The reading is tolerant and safe: a resource
that cannot be used is skipped and listed in `mapping.ignored` with its reason, and an input the
resources cannot settle is left unreported, so the engine reports it in `undetermined_by` (unknown
is never normal). Only a request that cannot describe one patient is refused (no Patient, two
Patients, a resource about another patient, an age the birthDate cannot place, nothing to grade).

- Each resource of a type read here is first validated as FHIR R4 by fhir.resources (its R4B
  models, unchanged from R4 for these types). The values are then read from the JSON itself,
  strictly: a number must be a JSON number, a boolean a JSON boolean.
- Times: a date-time with a time zone is exact. A date alone (day precision, which vital signs
  allow) is the whole day in any time zone, and is used only where that cannot change the answer
  (inside the window with no timed value of the kind that could be later, wholly before a fever
  onset, ...); otherwise it is ignored, or leaves the answer undecided. A year or a month alone, a
  time before 2000, or one in the future is ignored.
- Observations count when their status is final, amended, corrected or preliminary. A value with a
  dataAbsentReason is "not reported". Components are read as values of their own (a blood-pressure
  panel; the pulse-oximetry profile's SpO2, inhaled O2 flow 3151-8 and concentration 3150-0).
- The assessment time (`as_of`) is the latest exact Observation time, or the caller's (CDS Hooks:
  now). For each kind of value the latest one no older than `window_hours` is used.
- Simultaneous different values of one kind (fhir-terms.yaml `simultaneous_values`): an invasive
  (arterial) blood pressure over a cuff one; else, when the values lie on the same side of every
  threshold the rule files test for that kind, the worse; else the input is left unreported. Each
  conflict is listed once in `mapping.conflicts` (capped); the work is linear in the values.
- Oxygen: the device from an Observation (our code, LOINC 107117-4; SNOMED CT or flowsheet text) or
  from a DeviceUseStatement whose Device is an oxygen device (in use at `as_of` when active over
  it). A flow without a device, or a device graded by flow without one (the CRS rule file's
  `oxygen_flow.required_with`), leaves crs.oxygen unreported (`mapping.undetermined`).
- Age from Patient.birthDate at `as_of`; a year or year-month birthDate is used when every age it
  allows falls between the same age cut-offs of the rule files, else it is refused (422) naming them.
- Vasopressors: from MedicationAdministration, MedicationStatement and MedicationRequest, the drug
  by RxNorm (Medication.code, its ingredients), or by ingredient or brand name in the text, with
  contained and included Medications resolved by the Bundle rules. An in-progress administration or
  active statement runs; a point event (a completed administration at one time) runs for the CRS rule
  file's LOCAL `fhir_vasopressor_event_window_hours` unless a stop of the same agent is charted
  after it. When whether a vasopressor runs cannot be told, crs.vasopressors is left unreported.
- Fever masking follows the episode rule: a masking agent (the CRS rule file's) sets
  `crs.fever_masked` only when given at or after CRS onset (a temperature at or above the rule
  file's fever threshold in the Bundle at or before it) or with a reason naming CRS. Premedication
  never masks. No usable time, or an anticytokine (the rule file's `anticytokine` class: given in
  practice only for CRS) with no onset in view, leaves it undecided and unreported: CRS is then
  reported undetermined by crs.fever_masked, never graded on a guess either way.
  `mapping.masking_decisions` says which administration masked and why.
- Free text is compared after lower-casing ASCII letters only (fhir_codes.fold): no Unicode folding.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import cache
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aegrade.episodes import EARLIEST, FUTURE_TOLERANCE, default_fever_masking
from aegrade.episodes import masking_window_hours as _masking_window
from aegrade.errors import FhirInputError, FieldError, InvalidAssessment, RuleFileError
from aegrade.fhir_codes import (
    AEGRADE_SYSTEM,
    AGENT_NAMES,
    BP_METHOD,
    DEVICE_OBSERVATION_CODES,
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
    fold,
    terms,
    words_of,
)
from aegrade.models import AssessmentResult, IcpSign, Interpretation
from aegrade.rulefile import AllOf, AnyOf, FactTest, LoadedRuleSet, NumberSetting, default_rules_dir, load_rulesets
from aegrade.rulefile import FeverMasking as FeverMaskingRule

__all__ = [
    "FhirAssessmentResult",
    "FhirInputError",
    "FhirMapping",
    "IgnoredResource",
    "MappingConflict",
    "MaskingDecision",
    "Located",
    "MappedValue",
    "UndeterminedInput",
    "age_at",
    "age_cutoffs",
    "bundle_resources",
    "default_fever_threshold_c",
    "errors_at_sources",
    "fever_threshold",
    "map_resources",
    "value_thresholds",
    "with_fhir_context",
]

MEDICATION_USES = ("MedicationAdministration", "MedicationStatement", "MedicationRequest")
READ_TYPES = ("Patient", "Observation", "Medication", *MEDICATION_USES, "DeviceUseStatement", "Device")
OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
GIVEN_STATUSES = frozenset({"in-progress", "completed", "stopped"})
BUNDLE_TYPES = ("collection", "transaction", "searchset", "batch-response")
EVENT_WINDOW_SETTING = "fhir_vasopressor_event_window_hours"
DEVICE_KIND = "oxygen-device"
SOURCES_LISTED = 5
Loc = tuple[str | int, ...]
_DAY_EARLY = timedelta(hours=14)  # the earliest zone, UTC+14: a local day starts this much before UTC midnight
_DAY_LATE = timedelta(hours=36)  # ... and the latest, UTC-12: it ends 24 + 12 h after UTC midnight


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


class MappingConflict(_Out):
    """Different values of one kind at one time, and what was done with them."""

    kind: str = Field(description="The kind of value, e.g. sbp, temperature, oxygen-device.")
    field: str | None = Field(description="The Assessment field concerned.")
    at: datetime | None = Field(description="The time they share (null: dates without a time).")
    values: list[str] = Field(description=f"Up to {SOURCES_LISTED} of the different values, each with its resource.")
    count: int = Field(description="How many values of this kind were at that time.")
    resolution: Literal["invasive", "worse", "undetermined"] = Field(
        description="invasive: the arterial blood pressure was used; worse: all lie between the same thresholds, the worse was "
        "used; undetermined: they could change the grade, so the input was left unreported."
    )
    used: str | None = Field(default=None, description="The value used, with its resource (null when undetermined).")


class UndeterminedInput(_Out):
    """An input the resources speak of but cannot settle: left unreported, so the engine reports it
    as undetermined rather than grading on a guess."""

    input: str
    reason: str
    sources: list[str] = Field(default_factory=list)


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
    conflicts: list[MappingConflict] = Field(
        default_factory=list, description="Different values of one kind at one time (each once; see conflicts_not_listed)."
    )
    conflicts_not_listed: int = Field(default=0, description="Conflicts beyond the listed cap.")
    undetermined: list[UndeterminedInput] = Field(
        default_factory=list, description="Inputs the resources speak of but cannot settle, left unreported."
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


@dataclass(frozen=True)
class _Time:
    """A time as charted, in UTC: exact (lo == hi), or a whole day in an unknown zone (lo < hi)."""

    lo: datetime
    hi: datetime

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    def show(self) -> str:
        return self.lo.isoformat() if self.exact else f"a date without a time ({(self.lo + _DAY_EARLY).date().isoformat()})"


_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")
_DAY = re.compile(r"\d{4}-\d\d-\d\d")


def _instant(text: Any) -> datetime | None:
    """A FHIR dateTime/instant with a time and a zone, in UTC; None for anything less."""
    if not isinstance(text, str) or not _INSTANT.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def _time(text: Any, key: str, now: datetime) -> tuple[_Time | None, str]:
    """The charted time, or None and why it cannot be used."""
    when = _instant(text)
    if when is not None:
        found = _Time(when, when)
    elif isinstance(text, str) and _DAY.fullmatch(text):
        try:
            midnight = datetime.combine(date.fromisoformat(text), time(), timezone.utc)
            found = _Time(midnight - _DAY_EARLY, midnight + _DAY_LATE)
        except (ValueError, OverflowError):
            return None, f"{key}: not a usable date ({text!r})"
    elif isinstance(text, str) and re.fullmatch(r"\d{4}(-\d\d)?", text):
        return None, f"{key}: a year or month alone ({text}) cannot be placed in the assessment window"
    else:
        return None, f"{key}: not a date and time with a time zone ({text!r})"
    if found.hi < EARLIEST:
        return None, f"{key}: the time {text} is before {EARLIEST.year}"
    if found.lo > now + FUTURE_TOLERANCE:
        return None, f"{key}: the time {text} is in the future"
    return found, ""


def _effective(at: Located, now: datetime) -> tuple[_Time | None, str]:
    """An Observation's time: effectiveDateTime, effectiveInstant, or effectivePeriod (its start, or
    its end when only the end is charted: the value is known to have held then)."""
    resource = at.resource
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in resource:
            return _time(resource[key], key, now)
    period = resource.get("effectivePeriod")
    if isinstance(period, Mapping):
        if period.get("start") is not None:
            return _time(period["start"], "effectivePeriod.start", now)
        if period.get("end") is not None:
            return _time(period["end"], "effectivePeriod.end", now)
    return None, "no effective time (effectiveDateTime, effectiveInstant or effectivePeriod)"


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


# ---- what the rule files test: thresholds of values, age cut-offs -------------------------------

_KIND_FACTS = {
    "temperature": "temperature_c",
    "sbp": "sbp_mmhg",
    "dbp": "dbp_mmhg",
    "map": "map_mmhg",
    "spo2": "spo2_pct",
    "oxygen_flow": "oxygen_flow_l_min",
    "weight": "weight_kg",
    "heart_rate": "heart_rate_bpm",
    "respiratory_rate": "respiratory_rate",
    "fio2": "fio2_pct",
}
"""A measured kind -> the fact the rule files test it as (in the kind's first unit)."""

Interval = tuple[float, float]


def _walk(node: Any, visit: Any) -> None:
    if isinstance(node, Mapping):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


SettingValues = Mapping[str, Mapping[str, Any]]
"""Rule-set id -> its settings as a deployment runs them (Engine.settings_for)."""


def _setting_ranges(ruleset: LoadedRuleSet, settings: SettingValues | None = None) -> dict[str, Interval]:
    """Each number setting's value as this deployment runs it when known, else its whole allowed range."""
    chosen = (settings or {}).get(ruleset.id, {})
    ranges: dict[str, Interval] = {}
    for s in ruleset.file.settings:
        if isinstance(s, NumberSetting):
            value = _number(chosen.get(s.id))
            ranges[s.id] = (value, value) if value is not None else (s.minimum, s.maximum)
    return ranges


def value_thresholds(rulesets: Iterable[LoadedRuleSet], settings: SettingValues | None = None) -> dict[str, list[Interval]]:
    """For each measured kind, the values at which some rule file's test of it can change: the
    constants its facts are compared with, a number setting's whole range when compared with a
    setting, the systolic thresholds of the hypotension bands (every completed year of a formula),
    the MAP threshold and the weight of fixed dosing. Two values with none of these between them
    (inclusive) grade alike."""
    by_fact = {fact: kind for kind, fact in _KIND_FACTS.items()}
    found: dict[str, list[Interval]] = defaultdict(list)
    for ruleset in rulesets:
        ranges = _setting_ranges(ruleset, settings)

        def visit(node: Mapping[str, Any], ranges: dict[str, Interval] = ranges) -> None:
            fact = node.get("fact")
            kind = by_fact.get(fact) if isinstance(fact, str) else None
            if kind is not None:
                values = node.get("value")
                for value in values if isinstance(values, list) else [values]:
                    number = _number(value)
                    if number is not None:
                        found[kind].append((number, number))
                ref = node.get("ref")
                if isinstance(ref, Mapping) and ref.get("setting") in ranges:
                    found[kind].append(ranges[ref["setting"]])
            below = node.get("sbp_below_mmhg")
            flat = _number(below)
            if flat is not None:
                found["sbp"].append((flat, flat))
            elif isinstance(below, Mapping) and _number(below.get("base_mmhg")) is not None:  # by completed year, within the band
                base, per = float(below["base_mmhg"]), float(below.get("per_completed_year_mmhg") or 0)
                years = math.ceil(_number(node.get("age_years_below")) or 19)
                found["sbp"] += [(base + per * year, base + per * year) for year in range(0, years)]
            map_below = _number(node.get("below_mmhg"))
            if map_below is not None:
                found["map"].append((map_below, map_below))
            weight = _number(node.get("fixed_dosing_from_weight_kg"))
            if weight is not None:
                found["weight"].append((weight, weight))

        _walk(ruleset.file.model_dump(by_alias=True), visit)
    return {kind: sorted(set(values)) for kind, values in found.items()}


def age_cutoffs(rulesets: Iterable[LoadedRuleSet], settings: SettingValues | None = None) -> list[Interval]:
    """The ages (years) at which some rule file's result can change: constants compared with
    age_years, a setting (in years, or one age_years is compared with: its value as run when
    `settings` give it, else its whole allowed range), the
    band limits of the hypotension bands (in days too), and every birthday of a band whose threshold
    grows with completed years."""
    found: list[Interval] = []
    for ruleset in rulesets:
        ranges = _setting_ranges(ruleset, settings)
        found += [ranges[s.id] for s in ruleset.file.settings if isinstance(s, NumberSetting) and s.unit == "years"]
        limits = [0.0]

        def visit(node: Mapping[str, Any], ranges: dict[str, Interval] = ranges, limits: list[float] = limits) -> None:
            if node.get("fact") in ("age_years", "age_days"):
                scale = 1.0 if node["fact"] == "age_years" else 1 / 365.25
                values = node.get("value")
                for value in values if isinstance(values, list) else [values]:
                    number = _number(value)
                    if number is not None:
                        found.append((number * scale, number * scale))
                ref = node.get("ref")
                if isinstance(ref, Mapping) and ref.get("setting") in ranges:
                    found.append(ranges[ref["setting"]])
            limit = _number(node.get("age_years_below"))
            if limit is not None:
                found.append((limit, limit))
                if isinstance(node.get("sbp_below_mmhg"), Mapping):  # a threshold by completed year: every birthday below
                    found.extend((float(y), float(y)) for y in range(0, math.ceil(limit) + 1))
                limits.append(limit)
            days = _number(node.get("age_days_at_most"))
            if days is not None:
                found.append((days / 365.25, (days + 1) / 365.25))

        _walk(ruleset.file.model_dump(by_alias=True), visit)
    return sorted(set(found))


def _between(lo: float, hi: float, cutoffs: Sequence[Interval]) -> list[Interval]:
    """The cut-offs (or setting ranges) that meet [lo, hi], inclusive."""
    return [c for c in cutoffs if c[0] <= hi and c[1] >= lo]


@cache
def _default_rulesets() -> list[LoadedRuleSet]:
    """The rule sets of rules/, read once (for callers that pass none)."""
    return load_rulesets()


_Tables = tuple[dict[str, list[Interval]], list[Interval], float | None, tuple[str, ...]]
_TABLES: dict[tuple[Any, ...], _Tables] = {}


def _tables(rulesets: Sequence[LoadedRuleSet], settings: SettingValues | None) -> _Tables:
    """From the rule sets (and the settings they run with): value thresholds, age cut-offs, the
    vasopressor event window, the devices that need a flow. Made once per rule-set hashes and
    settings (a walk of every rule file: milliseconds, not to be repeated for every request)."""
    key = (
        tuple((r.id, r.sha256) for r in rulesets),
        tuple(sorted((rid, tuple(sorted(values.items()))) for rid, values in (settings or {}).items())),
    )
    if key not in _TABLES:
        primary = [r for r in rulesets if r.file.subject == "crs" and r.file.status == "active" and r.file.role == "primary"]
        declared = [(r, s) for r in primary for s in r.file.settings if s.id == EVENT_WINDOW_SETTING and isinstance(s, NumberSetting)]
        run = [_number((settings or {}).get(r.id, {}).get(s.id)) for r, s in declared]
        window = next((s.default if value is None else value for (_, s), value in zip(declared, run)), None)
        flow = primary[0].file.derivations.oxygen_flow if primary else None
        if len(_TABLES) >= 16:  # a few engines per process at most; never grows without bound
            _TABLES.clear()
        _TABLES[key] = (value_thresholds(rulesets, settings), age_cutoffs(rulesets, settings), window,
                        tuple(flow.required_with) if flow else ())
    return _TABLES[key]


# ---- candidates: one value of one kind at one time --------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    kind: str
    field: str | None
    value: Any
    comparable: Any
    when: _Time
    at: Located
    path: Loc
    code: str
    unit: str | None = None
    note: str = ""
    numeric: float | None = None  # in the kind's first unit, to compare with thresholds
    method: str | None = None  # blood pressure: invasive, noninvasive or None

    def show(self) -> str:
        return f"{self.at.label}: {self.value}{' ' + self.unit if self.unit else ''}"


@dataclass
class _Reader:
    now: datetime
    problems: list[FieldError] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)
    ignored: list[IgnoredResource] = field(default_factory=list)
    conflicts: list[MappingConflict] = field(default_factory=list)
    conflicts_not_listed: int = 0
    undetermined: list[UndeterminedInput] = field(default_factory=list)

    def ignore(self, at: Located, reason: str) -> None:
        self.ignored.append(IgnoredResource(source=at.label, reason=reason))

    def unknown(self, input_: str, reason: str, sources: Iterable[str] = ()) -> None:
        listed = list(dict.fromkeys(sources))
        more = len(listed) - SOURCES_LISTED
        self.undetermined.append(
            UndeterminedInput(input=input_, reason=reason, sources=listed[:SOURCES_LISTED] + ([f"... and {more} more"] if more > 0 else []))
        )

    def conflict(self, entry: MappingConflict) -> None:
        if len(self.conflicts) < terms().simultaneous_values.max_listed:
            self.conflicts.append(entry)
        else:
            self.conflicts_not_listed += 1

    def quantity(self, at: Located, path: Loc, element: Mapping[str, Any], code: str, kind: QuantityKind, when: _Time) -> None:
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
        canonical = kind.canonical(unit, value)
        self.candidates.append(
            _Candidate(kind.kind, target, converted, round(canonical, 2), when, at, path, f"{LOINC}|{code}", unit, kind.note,
                       canonical, BP_METHOD.get(code))
        )

    def own(self, at: Located, path: Loc, element: Mapping[str, Any], code: str, own: OwnCode, when: _Time, system: str) -> None:
        label = f"{own.display} ({system}|{code})"
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
            value = self._code_value(at, element, own, label)
            if value is None:
                return
        kind = DEVICE_KIND if own.field == "crs.oxygen.device" else own.field
        self.candidates.append(_Candidate(kind, own.field, value, value, when, at, path, f"{system}|{code}"))

    def _code_value(self, at: Located, element: Mapping[str, Any], own: OwnCode, label: str) -> str | None:
        device = own.field == "crs.oxygen.device"
        concept = element.get("valueCodeableConcept")
        text_value = element.get("valueString") if device else None
        if not isinstance(concept, Mapping) and not isinstance(text_value, str):
            self.ignore(at, f"{label} needs a valueCodeableConcept{' or valueString' if device else ''}")
            return None
        found: set[str] = set()
        texts: list[str] = [text_value] if isinstance(text_value, str) else []
        if isinstance(concept, Mapping):
            for coding in _codings(concept):
                system, value = coding.get("system"), coding.get("code")
                if system == AEGRADE_SYSTEM and isinstance(value, str) and value in own.codes:
                    found.add(value)
                elif device and system == SNOMED and isinstance(value, str) and value in SNOMED_DEVICES:
                    found.add(SNOMED_DEVICES[value])
            if isinstance(concept.get("text"), str):
                texts.append(concept["text"])
        if not found and device:
            found = {DEVICE_TEXT[fold(t)] for t in texts if fold(t) in DEVICE_TEXT}
        if len(found) != 1:
            why = "names more than one value" if found else "has no code or text recognised"
            allowed = ", ".join(own.codes)
            self.ignore(at, f"{label} {why}: use {AEGRADE_SYSTEM} codes ({allowed})"
                        f"{', SNOMED CT devices or device text' if device else ''}")
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


@dataclass(frozen=True)
class _Birth:
    """Patient.birthDate: the earliest and latest day it allows (equal for a full date)."""

    first: date
    last: date
    text: str


def _patient(located: Sequence[Located], problems: list[FieldError]) -> tuple[Located | None, _Birth | None]:
    patients = [at for at in located if at.resource.get("resourceType") == "Patient"]
    if not patients:
        problems.append(FieldError(loc=("body",), msg="no Patient resource: the age (from birthDate) is needed", code="missing"))
        return None, None
    others = [at for at in patients[1:] if not (isinstance(at.resource.get("id"), str) and at.resource.get("id") == patients[0].resource.get("id")
                                                 and at.resource.get("birthDate") == patients[0].resource.get("birthDate"))]
    if others:  # the same Patient twice (a read and an _include, say) is one patient
        problems.append(_problem(others[0], (), "a second Patient: one assessment describes one patient", "conflict"))
        return None, None
    at = patients[0]
    text = at.resource.get("birthDate")
    try:
        if isinstance(text, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", text):
            day = date.fromisoformat(text)
            return at, _Birth(day, day, text)
        if isinstance(text, str) and re.fullmatch(r"\d{4}-\d\d", text):
            first = date.fromisoformat(text + "-01")
            following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
            return at, _Birth(first, following - timedelta(days=1), text)
        if isinstance(text, str) and re.fullmatch(r"\d{4}", text):
            return at, _Birth(date(int(text), 1, 1), date(int(text), 12, 31), text)
    except ValueError:
        problems.append(_problem(at, ("birthDate",), "is not a real date"))
        return at, None
    problems.append(_problem(at, ("birthDate",), "a birthDate (YYYY-MM-DD, or YYYY-MM or YYYY) is needed for the age"))
    return at, None


class _References:
    """Resolves references by the Bundle rules: `#id` to a contained resource; an absolute URL or
    URN to the entry with that fullUrl; a relative `Type/id` against the base of the referring entry's
    RESTful fullUrl, or, when it has none (a CDS Hooks prefetch), to the one entry of that type and id."""

    _RESTFUL = re.compile(r"^(?P<base>.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")

    def __init__(self, located: Sequence[Located]) -> None:
        self.by_url: dict[str, Located] = {}
        self.by_type_id: dict[tuple[str, str], list[Located]] = defaultdict(list)
        for at in located:
            if at.full_url:
                self.by_url.setdefault(at.full_url, at)
            rid, kind = at.resource.get("id"), at.resource.get("resourceType")
            if isinstance(rid, str) and isinstance(kind, str):
                self.by_type_id[(kind, rid)].append(at)

    def resolve(self, reference: Any, at: Located) -> Mapping[str, Any] | None:
        if not isinstance(reference, str) or not reference:
            return None
        if reference.startswith("#"):
            for contained in at.resource.get("contained") or []:
                if isinstance(contained, Mapping) and contained.get("id") == reference[1:]:
                    return contained
            return None
        if reference in self.by_url:
            return self.by_url[reference].resource
        relative = self._RESTFUL.match(reference)
        if relative is None or relative.group("base"):
            return None
        ref_type, ref_id = relative.group("type"), relative.group("id")
        own = self._RESTFUL.match(at.full_url or "")
        if own is not None and own.group("base") and "://" in own.group("base"):
            target = self.by_url.get(f"{own.group('base')}{ref_type}/{ref_id}")
            return target.resource if target is not None else None  # on that server, not in the Bundle
        found = self.by_type_id.get((ref_type, ref_id), [])
        return found[0].resource if len(found) == 1 else None

    def is_patient(self, reference: str, patient: Located, at: Located) -> bool | None:
        """Whether `reference` is the Bundle's Patient: True, False (another patient), or None (it
        cannot be resolved to any Patient)."""
        pid = patient.resource.get("id")
        if reference == patient.full_url or reference == f"Patient/{pid}":
            return True
        relative = self._RESTFUL.match(reference)
        if relative is not None and relative.group("type") == "Patient":
            if relative.group("id") == pid and (relative.group("base") is None or reference == patient.full_url
                                                 or (patient.full_url or "").endswith(f"/Patient/{pid}")):
                return True
            return False
        target = self.resolve(reference, at)
        if target is None:
            return None
        return target is patient.resource


def _subject_matches(at: Located, patient: Located | None, refs: _References, problems: list[FieldError], reader: _Reader) -> bool:
    """A resource about another patient refuses the request (one assessment, one patient); one whose
    subject cannot be resolved is ignored. True when the resource may be read."""
    if patient is None:
        return True
    subject = at.resource.get("subject")
    if not isinstance(subject, Mapping) or not isinstance(subject.get("reference"), str):
        return True
    reference = subject["reference"]
    same = refs.is_patient(reference, patient, at)
    if same is False:
        problems.append(_problem(at, ("subject", "reference"), f"is about {reference}, not the Bundle's {patient.label}", "conflict"))
        return False
    if same is None:
        reader.ignore(at, f"subject.reference {reference!r} does not resolve to the Bundle's Patient (by the Bundle's fullUrls)")
        return False
    return True


def _observation_kind(system: Any, code: Any) -> tuple[str, str, str] | None:
    """(how it is read, system, code): "quantity" for a LOINC quantity, "own" for our codes and the
    oxygen-device Observation codes; None when not read."""
    if not isinstance(code, str):
        return None
    if system == LOINC and code in QUANTITIES:
        return "quantity", LOINC, code
    if system == AEGRADE_SYSTEM and code in OWN_CODES:
        return "own", AEGRADE_SYSTEM, code
    if (system, code) in DEVICE_OBSERVATION_CODES:
        return "device", str(system), code
    return None


def _read_observation(reader: _Reader, at: Located) -> None:
    resource = at.resource
    status = resource.get("status")
    if status not in OBSERVATION_STATUSES:
        reader.ignore(at, f"status {status!r} is not final, amended, corrected or preliminary")
        return
    parts: list[tuple[Loc, Mapping[str, Any]]] = [((), resource)]
    parts += [(("component", i), c) for i, c in enumerate(resource.get("component") or []) if isinstance(c, Mapping)]
    recognised: list[tuple[Loc, Mapping[str, Any], tuple[str, str, str]]] = []
    for path, element in parts:
        known = {k for c in _codings(element.get("code")) if (k := _observation_kind(c.get("system"), c.get("code"))) is not None}
        kinds = {QUANTITIES[k[2]].kind if k[0] == "quantity" else DEVICE_KIND if k[0] == "device" or k[2] == DEVICE_KIND else k[2] for k in known}
        if len(kinds) > 1:
            reader.ignore(at, f"{'.'.join(str(p) for p in (*path, 'code'))}: its codings name different things")
            continue
        if known:
            recognised.append((path, element, sorted(known)[0]))
    if not recognised:
        reader.ignore(at, "no code read by aegrade")
        return
    when, why = _effective(at, reader.now)
    if when is None:
        reader.ignore(at, why)
        return
    for path, element, (how, system, code) in recognised:
        if "dataAbsentReason" in element:
            reader.ignore(at, f"{code}: dataAbsentReason, not reported")
        elif how == "quantity":
            reader.quantity(at, path, element, code, QUANTITIES[code], when)
        else:
            reader.own(at, path, element, code, OWN_CODES[DEVICE_KIND if how == "device" else code], when, system)


def _resolve_simultaneous(kind: str, group: list[_Candidate], reader: _Reader, thresholds: Mapping[str, list[Interval]]) -> _Candidate | None:
    """One value of `group` (values of one kind taken as simultaneous), or None: the rule for
    simultaneous values (fhir-terms.yaml). Linear in the group."""
    distinct: dict[str, _Candidate] = {}
    for candidate in group:
        distinct.setdefault(repr(candidate.comparable), candidate)
    if len(distinct) == 1:
        return group[0]
    rule = terms().simultaneous_values
    first = group[0]
    at = first.when.lo if all(c.when.exact and c.when.lo == first.when.lo for c in group) else None
    shown = [c.show() for c in list(distinct.values())[:SOURCES_LISTED]]

    def report(resolution: Literal["invasive", "worse", "undetermined"], used: _Candidate | None) -> None:
        reader.conflict(MappingConflict(kind=kind, field=first.field, at=at, values=shown, count=len(group), resolution=resolution,
                                        used=used.show() if used is not None else None))

    invasive = [c for c in group if c.method == "invasive"]
    if invasive and len(invasive) < len(group):
        if len({repr(c.comparable) for c in invasive}) == 1:
            report("invasive", invasive[0])
            return invasive[0]
        group = invasive
    values = [c.numeric for c in group]
    direction = rule.worse.get(kind)
    if direction is not None and all(v is not None for v in values):
        numbers = [float(v) for v in values if v is not None]
        low, high = min(numbers), max(numbers)
        if not _between(low, high, thresholds.get(kind, [])):
            pick = max if direction == "higher" else min
            used = pick(group, key=lambda c: c.numeric if c.numeric is not None else 0.0)
            report("worse", used)
            return used
    report("undetermined", None)
    reader.unknown(
        first.field or kind,
        f"different values of {kind} at {at.isoformat() if at else 'one date'} could change the grade (fhir-terms.yaml "
        "simultaneous_values): left unreported, for the clinician to settle",
        (c.at.label for c in group),
    )
    return None


def _latest(reader: _Reader, as_of: datetime, window_hours: float, thresholds: Mapping[str, list[Interval]]) -> dict[str, _Candidate]:
    since = as_of - timedelta(hours=window_hours)
    by_kind: dict[str, list[_Candidate]] = defaultdict(list)
    for candidate in reader.candidates:
        when = candidate.when
        if when.lo > as_of + FUTURE_TOLERANCE:
            reader.ignore(candidate.at, f"{candidate.code}: after the assessment time {as_of.isoformat()}")
        elif when.hi < since:
            reader.ignore(candidate.at, f"{candidate.code}: older than {window_hours:g} h before {as_of.isoformat()}")
        elif not when.exact and (when.lo < since or when.hi > as_of + FUTURE_TOLERANCE):
            reader.ignore(candidate.at, f"{candidate.code}: {when.show()} cannot be placed inside the {window_hours:g} h window "
                          f"before {as_of.isoformat()}: not used")
        else:
            by_kind[candidate.kind].append(candidate)
    chosen: dict[str, _Candidate] = {}
    for kind, found in by_kind.items():
        exact = [c for c in found if c.when.exact]
        latest = max((c.when.lo for c in exact), default=None)
        group = [c for c in exact if c.when.lo == latest]
        for c in found:
            if not c.when.exact and latest is not None and c.when.hi <= latest:
                reader.ignore(c.at, f"{c.code}: {c.when.show()}, before a later timed value of the same kind, which was used")
            elif not c.when.exact:
                group.append(c)  # a date that may be later than the latest timed value: taken with it
        for c in exact:
            if c.when.lo != latest:
                reader.ignore(c.at, f"{c.code}: a later value of the same kind was used")
        picked = _resolve_simultaneous(kind, group, reader, thresholds)
        if picked is not None:
            chosen[kind] = picked
    return chosen


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _groups(chosen: dict[str, _Candidate], reader: _Reader) -> None:
    """ICE items and CAPD items count only all together, from one time: otherwise they are not
    used (the total, if sent, still is), and the mapping says why."""
    for prefix, size, name in (("neuro.ice.", 5, "ICE items"), ("neuro.capd.", 8, "CAPD items")):
        members = {k: c for k, c in chosen.items() if k.startswith(prefix)}
        if not members:
            continue
        times = {c.when for c in members.values()}
        if len(members) != size or len(times) != 1 or not next(iter(times)).exact:
            for kind, c in members.items():
                del chosen[kind]
                reader.ignore(c.at, f"{name} count only all together, from one time: {len(members)} of {size} found at "
                              f"{len(times)} time(s); not used")
            reader.unknown(prefix.rstrip("."), f"{name} incomplete ({len(members)} of {size}, {len(times)} time(s))",
                           (c.at.label for c in members.values()))


def _oxygen(chosen: dict[str, _Candidate], reader: _Reader, required_with: Sequence[str]) -> None:
    """ASTCT grades hypoxia by the device and flow together: a flow without a device, or a device
    graded by its flow without a flow, is not an oxygen report. crs.oxygen is left unreported."""
    flow, device = chosen.get("oxygen_flow"), chosen.get(DEVICE_KIND)
    if flow is not None and device is None:
        del chosen["oxygen_flow"]
        reader.ignore(flow.at, "an oxygen flow without an oxygen-device Observation: ASTCT grades by the device and flow together")
        reader.unknown("crs.oxygen", "a flow was charted without the device: the oxygen support cannot be graded", [flow.at.label])
    elif device is not None and flow is None and device.value in required_with:
        del chosen[DEVICE_KIND]
        reader.ignore(device.at, f"{device.value} is graded by its flow, and no flow (LOINC 3151-8) was charted in the window")
        reader.unknown("crs.oxygen", f"{device.value} without a flow: low or high flow cannot be told", [device.at.label])


# ---- oxygen devices in use (DeviceUseStatement) ------------------------------------------------


def _device_of(resource: Mapping[str, Any]) -> set[str]:
    """The oxygen devices a Device names: SNOMED CT type codes, else its type text or device names
    compared whole (fhir-terms.yaml oxygen_devices)."""
    found: set[str] = set()
    texts: list[str] = []
    for coding in _codings(resource.get("type")):
        code = coding.get("code")
        if coding.get("system") == SNOMED and isinstance(code, str) and code in SNOMED_DEVICES:
            found.add(SNOMED_DEVICES[code])
    if isinstance(resource.get("type"), Mapping) and isinstance(resource["type"].get("text"), str):
        texts.append(resource["type"]["text"])
    texts += [n["name"] for n in resource.get("deviceName") or [] if isinstance(n, Mapping) and isinstance(n.get("name"), str)]
    if not found:
        found = {DEVICE_TEXT[fold(t)] for t in texts if fold(t) in DEVICE_TEXT}
    return found


def _device_uses(located: Sequence[Located], patient: Located | None, refs: _References, reader: _Reader, problems: list[FieldError]) -> list[tuple[Located, str, _Span]]:
    """DeviceUseStatements naming an oxygen device: (statement, device, when it was in use)."""
    found: list[tuple[Located, str, _Span]] = []
    for at in located:
        kind = at.resource.get("resourceType")
        if kind == "Device":
            continue  # read through a DeviceUseStatement: a Device alone does not say when it was used
        if kind != "DeviceUseStatement" or not _subject_matches(at, patient, refs, problems, reader):
            continue
        reference = at.resource.get("device", {}).get("reference") if isinstance(at.resource.get("device"), Mapping) else None
        target = refs.resolve(reference, at)
        devices = _device_of(target) if target is not None else set()
        if len(devices) != 1:
            why = "does not resolve to a Device in the request" if target is None else (
                "names more than one oxygen device" if devices else "is not an oxygen device read by aegrade")
            reader.ignore(at, f"device {reference!r} {why}")
            continue
        status = at.resource.get("status")
        if status not in ("active", "completed", "intended", "on-hold", "stopped"):
            reader.ignore(at, f"status {status!r}: not a device in use")
            continue
        if "timingPeriod" in at.resource and isinstance(at.resource["timingPeriod"], Mapping):
            period = at.resource["timingPeriod"]
            start, why_start = _time(period["start"], "timingPeriod.start", reader.now) if period.get("start") is not None else (None, "")
            end, why_end = _time(period["end"], "timingPeriod.end", reader.now) if period.get("end") is not None else (None, "")
            span = _Span(start, end, False, why_start or why_end or "timingPeriod without a usable start or end")
        elif "timingDateTime" in at.resource:
            when, why = _time(at.resource["timingDateTime"], "timingDateTime", reader.now)
            span = _Span(when, None, True, why)
        else:
            reader.ignore(at, "no timingPeriod or timingDateTime: when the device was in use cannot be told")
            continue
        found.append((at, devices.pop(), span))
    return found


def _add_device_uses(uses: Sequence[tuple[Located, str, _Span]], reader: _Reader, as_of: datetime) -> None:
    """A device in use at `as_of` (an active statement whose period covers it) is an oxygen-device
    value at `as_of`; one charted at one time is a value at that time; one that ended before, or whose
    use at `as_of` cannot be told, is not used."""
    own = OWN_CODES[DEVICE_KIND]
    for at, device, span in uses:
        status = at.resource.get("status")
        start, end = span.start, span.end
        if start is None and end is None:
            reader.ignore(at, span.why)
        elif span.point and start is not None:
            reader.candidates.append(_Candidate(DEVICE_KIND, own.field, device, device, start, at, ("timingDateTime",), f"DeviceUseStatement {device}"))
        elif status in ("on-hold", "stopped", "intended"):
            reader.ignore(at, f"status {status}: not in use at the assessment time")
        elif end is not None and end.hi < as_of:
            reader.ignore(at, f"{device}: ended at {end.show()}, before the assessment time")
        elif start is not None and start.hi <= as_of and (end is None and status == "active" or end is not None and end.lo >= as_of):
            reader.candidates.append(_Candidate(DEVICE_KIND, own.field, device, device, _Time(as_of, as_of), at, ("timingPeriod",),
                                                f"DeviceUseStatement {device}", note=f"in use at the assessment time (since {start.show()})"))
        else:
            reader.ignore(at, f"{device}: whether in use at the assessment time cannot be told")


# ---- medications -----------------------------------------------------------------------------


def _agents_in(concept: Any, refs: _References, at: Located, depth: int = 0) -> set[str]:
    """The agents a CodeableConcept (or a Medication resource) names: RxNorm ingredient codes, else
    ingredient or brand names as whole words in its text and displays. A Medication's ingredients
    are read too."""
    found: set[str] = set()
    texts: list[str] = []
    concepts = [concept]
    if isinstance(concept, Mapping) and concept.get("resourceType") in ("Medication", "Substance"):
        concepts = [concept.get("code")]
        for ingredient in concept.get("ingredient") or []:
            if not isinstance(ingredient, Mapping):
                continue
            if isinstance(ingredient.get("itemCodeableConcept"), Mapping):
                concepts.append(ingredient["itemCodeableConcept"])
            elif isinstance(ingredient.get("itemReference"), Mapping) and depth == 0:
                target = refs.resolve(ingredient["itemReference"].get("reference"), at)
                if target is not None:
                    found |= _agents_in(target, refs, at, 1)
            if isinstance(ingredient.get("substance"), Mapping):  # Substance.ingredient
                concepts.append(ingredient["substance"])
    for item in concepts:
        for coding in _codings(item):
            code = coding.get("code")
            if coding.get("system") == RXNORM and isinstance(code, str) and code in RXNORM_AGENTS:
                found.add(RXNORM_AGENTS[code])
            if isinstance(coding.get("display"), str):
                texts.append(coding["display"])
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            texts.append(item["text"])
    if not found and texts:
        words = " ".join(words_of(t) for t in texts)
        found = {agent for name, agent in AGENT_NAMES.items() if f" {name} " in words}
    return found


def _medication(at: Located, refs: _References) -> tuple[set[str], str | None]:
    """The agents of a MedicationAdministration/Statement/Request, or why they cannot be told."""
    resource = at.resource
    if isinstance(resource.get("medicationCodeableConcept"), Mapping):
        return _agents_in(resource["medicationCodeableConcept"], refs, at), None
    reference = resource.get("medicationReference")
    if isinstance(reference, Mapping):
        target = refs.resolve(reference.get("reference"), at)
        if target is None:
            return set(), (f"medicationReference {reference.get('reference')!r} does not resolve to a Medication in the request "
                           "(send it contained or with _include)")
        agents = _agents_in(target, refs, at)
        if not agents and isinstance(reference.get("display"), str):
            agents = _agents_in({"text": reference["display"]}, refs, at)
        return agents, None
    return set(), "no medication[x]"


@dataclass(frozen=True)
class _ReasonTerms:
    crs_codes: frozenset[tuple[Any, Any]]
    crs_words: tuple[str, ...]
    premedication_codes: frozenset[tuple[Any, Any]]
    premedication_words: tuple[str, ...]


def _reason_terms(fever_masking: FeverMaskingRule) -> _ReasonTerms:
    """The reasons that decide an administration: the CRS rule file's `fever_masking.reasons` (none
    declared: no reason decides, and each administration is placed by its time alone)."""
    declared = fever_masking.reasons
    if declared is None:
        return _ReasonTerms(frozenset(), (), frozenset(), ())

    def codes(reason: Any) -> frozenset[tuple[Any, Any]]:
        return frozenset((c.get("system"), c.get("code")) for c in reason.codes)

    return _ReasonTerms(codes(declared.treats_crs), tuple(fold(w) for w in declared.treats_crs.words),
                        codes(declared.premedication), tuple(fold(w) for w in declared.premedication.words))


def _reasons(at: Located, known: _ReasonTerms) -> str | None:
    """"crs" when a reasonCode names cytokine release syndrome (its code or words), "premedication"
    when it names premedication or prophylaxis; else None."""
    words = ""
    for concept in at.resource.get("reasonCode") or []:
        for coding in _codings(concept):
            pair = (coding.get("system"), coding.get("code"))
            if pair in known.premedication_codes:
                return "premedication"
            if pair in known.crs_codes:
                return "crs"
            if isinstance(coding.get("display"), str):
                words += words_of(coding["display"])
        if isinstance(concept, Mapping) and isinstance(concept.get("text"), str):
            words += words_of(concept["text"])
    if any(f" {w} " in words for w in known.premedication_words):
        return "premedication"
    if any(f" {w} " in words for w in known.crs_words):
        return "crs"
    return None


@dataclass(frozen=True)
class _Given:
    """A masking agent's administration: when (None: no usable time) and the reason it gives."""

    agent: str
    at: Located
    when: _Time | None
    reason: str | None  # "crs", "premedication" or None
    why_no_time: str = ""


@dataclass(frozen=True)
class _Span:
    """When a medication use ran: start and end as charted (either may be missing)."""

    start: _Time | None
    end: _Time | None
    point: bool  # charted at one time (effectiveDateTime), not as a period
    why: str = ""


def _span(at: Located, now: datetime) -> _Span:
    resource = at.resource
    if "effectiveDateTime" in resource:
        when, why = _time(resource["effectiveDateTime"], "effectiveDateTime", now)
        return _Span(when, None, True, why)
    period = resource.get("effectivePeriod")
    if isinstance(period, Mapping):
        start, why_start = _time(period["start"], "effectivePeriod.start", now) if period.get("start") is not None else (None, "")
        end, why_end = _time(period["end"], "effectivePeriod.end", now) if period.get("end") is not None else (None, "")
        if start is None and end is None:
            return _Span(None, None, False, why_start or why_end or "effectivePeriod without a usable start or end")
        return _Span(start, end, False, why_start or why_end)
    if at.resource.get("resourceType") == "MedicationRequest" and "authoredOn" in resource:
        when, why = _time(resource["authoredOn"], "authoredOn", now)
        return _Span(when, None, True, why)
    return _Span(None, None, False, "no effective time")


Running = bool | None


def _runs(at: Located, span: _Span, as_of: datetime, window: timedelta, stops: Sequence[datetime]) -> tuple[Running, str]:
    """Whether a vasopressor use runs at `as_of`: True, False, or None (cannot be told), and why."""
    kind = at.resource.get("resourceType")
    status = at.resource.get("status")
    start, end = span.start, span.end
    if kind == "MedicationRequest":
        if status == "active":
            return None, "an active order shows the drug was ordered, not that it runs at the assessment time"
        return False, f"an order with status {status!r}"
    if status in ("entered-in-error", "not-done", "not-taken", "intended", "on-hold", "cancelled", "draft"):
        return False, f"status {status!r}: not running"
    if status == "unknown":
        return None, "status 'unknown'"
    if start is None and end is None:
        return None, span.why
    if start is not None and start.lo > as_of + FUTURE_TOLERANCE:
        return False, "started after the assessment time"
    if end is not None:
        if end.hi < as_of:
            return False, f"ended at {end.show()}, before the assessment time"
        if not end.exact and end.lo < as_of:
            return None, f"ended on {end.show()}: whether before the assessment time cannot be told"
        if start is not None and start.hi <= as_of:
            return True, "its period covers the assessment time"
        return None, "a period with only an end (or a start that cannot be placed): whether it had started cannot be told"
    assert start is not None
    if not start.exact:
        if start.hi < as_of - window:
            return False, f"{start.show()}, before the event window"
        return None, f"{start.show()}: whether it runs at the assessment time cannot be told"
    if status == "stopped":
        return False, "status stopped: a stop of the infusion"
    if status in ("in-progress", "active"):
        return True, f"status {status}, started {start.show()}"
    if start.lo < as_of - window:
        return False, f"charted at {start.show()}, more than {window.total_seconds() / 3600:g} h ({EVENT_WINDOW_SETTING}) before the assessment time"
    stop = next((s for s in stops if start.lo <= s <= as_of), None)
    if stop is not None:
        return False, f"a stop of the same agent is charted at {stop.isoformat()}"
    return True, (f"charted at {start.show()}, within {window.total_seconds() / 3600:g} h before the assessment time "
                  f"({EVENT_WINDOW_SETTING}), with no stop charted after it")


def _medications(
    located: Sequence[Located], patient: Located | None, refs: _References, reader: _Reader, as_of: datetime,
    masking_agents: frozenset[str], window: timedelta, reasons: _ReasonTerms,
) -> tuple[dict[str, list[Located]], dict[str, list[Located]], list[_Given]]:
    """Vasopressors running at `as_of` and those whose running cannot be told (agent -> resources),
    and the masking agents' administrations (at or before it, or at no usable time)."""
    uses: list[tuple[Located, set[str], _Span]] = []
    stops: dict[str, list[datetime]] = defaultdict(list)
    possibly: list[Located] = []
    for at in located:
        if at.resource.get("resourceType") not in MEDICATION_USES:
            continue
        if not _subject_matches(at, patient, refs, reader.problems, reader):
            continue
        agents, why = _medication(at, refs)
        span = _span(at, reader.now)
        if why is not None:
            state, _ = _runs(at, span, as_of, window, ())
            reader.ignore(at, f"{why}: whether it is a vasopressor or a fever-masking drug cannot be told")
            if state is not False:
                possibly.append(at)
            continue
        if not agents:
            reader.ignore(at, "not a vasopressor, anticytokine, corticosteroid or antipyretic read by aegrade")
            continue
        uses.append((at, agents, span))
        for agent in agents & VASOPRESSORS:
            if at.resource.get("status") == "stopped" and span.start is not None and span.start.exact and span.end is None:
                stops[agent].append(span.start.lo)
            if span.end is not None and span.end.exact:
                stops[agent].append(span.end.lo)
    running: dict[str, list[Located]] = defaultdict(list)
    unsure: dict[str, list[Located]] = defaultdict(list)
    given: list[_Given] = []
    for at, agents, span in uses:
        kind = at.resource.get("resourceType")
        for agent in sorted(agents):
            if agent in VASOPRESSORS:
                state, why = _runs(at, span, as_of, window, sorted(stops.get(agent, [])))
                if state is True:
                    running[agent].append(at)
                elif state is None:
                    unsure[agent].append(at)
                    reader.ignore(at, f"{agent}: {why}")
                else:
                    reader.ignore(at, f"{agent}: not running at the assessment time ({why})")
            elif agent in masking_agents:
                status = at.resource.get("status")
                if kind != "MedicationAdministration":
                    reader.ignore(at, f"{agent}: a {kind} is not an administration; fever masking is read from administrations")
                elif status not in GIVEN_STATUSES:
                    reader.ignore(at, f"{agent}: status {status!r}, not given")
                elif span.start is None:
                    given.append(_Given(agent, at, None, _reasons(at, reasons), span.why or "no usable start time"))
                elif span.start.lo > as_of + FUTURE_TOLERANCE:
                    reader.ignore(at, f"{agent}: given after the assessment time")
                else:
                    given.append(_Given(agent, at, span.start, _reasons(at, reasons)))
            else:
                reader.ignore(at, f"{agent}: not read by aegrade")
    if possibly:
        unsure["an unidentified medication"] = possibly
    return running, unsure, given


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
    given: Sequence[_Given], candidates: Sequence[_Candidate], as_of: datetime, since: datetime | None, threshold: float,
    enabled: bool, undecided_without_onset: frozenset[str],
) -> list[_Decision]:
    """The episode rule on a Bundle (ASTCT 2019: "patients who have CRS then receive antipyretic or
    anticytokine therapy"): an administration masks fever when it was given at or after CRS onset,
    read as a temperature >= the rule file's fever threshold in the Bundle at or before it, or when
    its reason is CRS. Premedication never masks. With no usable time, or a time that a date alone
    cannot place against the onset or the window, it is undecided; so is an anticytokine with no
    onset in view (given in practice for CRS: the fever may lie outside what was sent)."""
    fevers = [c.when.lo for c in candidates if c.kind == "temperature" and c.when.exact and c.numeric is not None and c.numeric >= threshold]
    onset = min(fevers) if fevers else None
    onset_source = next((c for c in candidates if c.kind == "temperature" and c.when.exact and c.when.lo == onset
                         and c.numeric is not None and c.numeric >= threshold), None)
    undecided = "crs.fever_masked is left unreported (the safer reading: CRS is reported undetermined by it, never graded on a guess either way)"
    decisions: list[_Decision] = []
    for g in sorted(given, key=lambda g: (g.when is None, g.when.lo if g.when else as_of)):
        when = g.when
        if not enabled:
            decisions.append(_Decision(g, False, "not read as masking (AEGRADE_FHIR_ADMINISTRATIONS_MASK_FEVER is false)"))
        elif g.reason == "premedication":
            decisions.append(_Decision(g, False, "its reasonCode is premedication/prophylaxis: premedication never masks fever"))
        elif when is None:
            decisions.append(_Decision(g, None, f"{g.why_no_time}: whether it was given after CRS onset cannot be told, so {undecided}"))
        elif since is not None and when.hi < since:
            decisions.append(_Decision(g, False, f"given before the fever-masking window ({since.isoformat()})"))
        elif since is not None and when.lo < since:
            decisions.append(_Decision(g, None, f"{when.show()}: whether inside the fever-masking window cannot be told, so {undecided}"))
        elif g.reason == "crs":
            decisions.append(_Decision(g, True, "its reasonCode is cytokine release syndrome"))
        elif onset is not None and onset <= when.lo:
            assert onset_source is not None
            decisions.append(_Decision(g, True, f"given at or after CRS onset: {onset_source.value} {onset_source.unit} at "
                                       f"{onset.isoformat()} ({onset_source.at.label}), a fever >= {threshold:g} °C"))
        elif onset is not None and onset <= when.hi:
            decisions.append(_Decision(g, None, f"{when.show()}: whether before or after the CRS onset at {onset.isoformat()} "
                                       f"cannot be told, so {undecided}"))
        elif g.agent in undecided_without_onset:
            decisions.append(_Decision(g, None, f"no fever >= {threshold:g} °C in the Bundle at or before it and no CRS reasonCode, "
                                       f"but {g.agent} is given in practice for CRS (its onset may lie outside what was sent), so {undecided}"))
        else:
            decisions.append(_Decision(g, False, f"no fever >= {threshold:g} °C in the Bundle at or before it and no CRS reasonCode: "
                                       "not treatment of CRS (e.g. premedication), so it does not mask fever"))
    return decisions


def _age(patient: Located, birth: _Birth, as_of: datetime, cutoffs: Sequence[Interval]) -> tuple[float, str]:
    """The age at `as_of`, and a note. A year or year-month birthDate gives an interval of ages; it
    is used when no age cut-off of the rule files meets the interval, otherwise refused (naming
    the cut-off): the age decides between the tools and thresholds."""
    on = as_of.date()
    youngest, oldest = age_at(birth.last, on), age_at(birth.first, on)
    if birth.first == birth.last:
        return youngest, f"from birthDate {birth.text} at {on.isoformat()}"
    met = [c for c in _between(youngest, oldest, cutoffs) if not (c[1] <= youngest or c[0] > oldest)]
    met = [c for c in met if not (c[0] == c[1] == youngest)]  # a cut-off at the youngest age is not crossed (both sides >= it)
    if met or birth.last > on:
        named = ", ".join(f"{c[0]:g}" if c[0] == c[1] else f"{c[0]:g}-{c[1]:g}" for c in met[:5]) or "birth"
        raise FhirInputError([_problem(patient, ("birthDate",), f"{birth.text} allows ages {youngest:g} to {oldest:g} years at "
                                       f"{on.isoformat()}, which meet the age cut-off(s) {named} of the rule files: a full date is needed",
                                       "incomplete")])
    return youngest, (f"from birthDate {birth.text} (no day): every age it allows at {on.isoformat()}, {youngest:g} to {oldest:g} years, "
                      "lies between the same age cut-offs of the rule files; the youngest is sent")


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
    vasopressor_event_window_hours: float | None = None,
    rulesets: Sequence[LoadedRuleSet] | None = None,
    settings: SettingValues | None = None,
) -> tuple[dict[str, Any], dict[str, MappedValue], FhirMapping]:
    """The Assessment (as a dict, to be validated by the engine), the source of each field, and the
    mapping to return. Raises FhirInputError naming each resource at fault.

    The masking agents and window are the CRS rule file's `fever_masking` (default: rules/; an
    Engine's is `Engine.fever_masking`); `masking_window_hours`, when set, overrides the window.
    `rulesets` (default: rules/) give the value thresholds and age cut-offs, the vasopressor event
    window (overridden by `vasopressor_event_window_hours`) and the devices that need a flow;
    `settings` (Engine.settings_for of each rule set) narrow a setting's range to its value as run."""
    fever_masking = fever_masking or default_fever_masking()
    masking_window_hours = _masking_window(masking_window_hours, fever_masking)
    threshold = fever_threshold_c if fever_threshold_c is not None else default_fever_threshold_c()
    thresholds, cutoffs, default_window, required_with = _tables(_default_rulesets() if rulesets is None else rulesets, settings)
    event_window = vasopressor_event_window_hours if vasopressor_event_window_hours is not None else default_window
    if event_window is None:
        raise RuleFileError(str(default_rules_dir()), f"the CRS rule file declares no setting {EVENT_WINDOW_SETTING}")
    problems: list[FieldError] = []
    reader = _Reader(now=now)
    located = _validate_fhir(located, problems, reader.ignored)
    if problems:
        raise FhirInputError(problems)
    refs = _References(located)
    patient, birth = _patient(located, problems)
    for at in located:
        kind = at.resource.get("resourceType")
        if kind == "Observation":
            if _subject_matches(at, patient, refs, problems, reader):
                _read_observation(reader, at)
        elif kind == "OperationOutcome":
            reader.ignore(at, "an OperationOutcome (an error or warning from the sender), not clinical data")
        elif kind not in READ_TYPES:
            reader.ignore(at, f"resource type {kind} is not read")
    device_uses = _device_uses(located, patient, refs, reader, problems)
    if as_of is None:
        as_of = max((c.when.lo for c in reader.candidates if c.when.exact), default=None)
    if as_of is not None:
        _add_device_uses(device_uses, reader, as_of)
    if as_of is None and not problems:
        unused = "; ".join(f"{i.source}: {i.reason}" for i in reader.ignored[:3])
        unused = f" (not used: {unused}{'; ...' if len(reader.ignored) > 3 else ''})" if unused else ""
        problems.append(FieldError(loc=("body",), msg=f"no Observation with a time read by aegrade: nothing to grade{unused}", code="missing"))
    if problems or as_of is None or patient is None or birth is None:
        raise FhirInputError(problems)
    chosen = _latest(reader, as_of, window_hours, thresholds)
    _groups(chosen, reader)
    _oxygen(chosen, reader, required_with)
    running, unsure, given = _medications(
        located, patient, refs, reader, as_of, fever_masking.all_agents, timedelta(hours=event_window), _reason_terms(fever_masking)
    )
    if reader.problems:
        raise FhirInputError(reader.problems)
    age, age_note = _age(patient, birth, as_of, cutoffs)

    assessment: dict[str, Any] = {"patient": {}}
    sources: dict[str, MappedValue] = {}
    mapped: list[MappedValue] = []

    def record(field_: str | None, value: Any, at: Located, code: str, unit: str | None = None, when: datetime | None = None, note: str = "") -> None:
        entry = MappedValue(field=field_, value=value, source=at.label, code=code, unit=unit, effective=when, note=note)
        mapped.append(entry)
        if field_ is not None:
            sources[field_] = entry

    assessment["patient"]["age_years"] = age
    record("patient.age_years", age, patient, "Patient.birthDate", note=age_note)

    icp: dict[str, bool] = {}
    for candidate in sorted(chosen.values(), key=lambda c: c.kind):
        target = candidate.field
        when = candidate.when.lo if candidate.when.exact else None
        note = candidate.note if candidate.when.exact else f"{candidate.when.show()}; {candidate.note}".rstrip("; ")
        if target is not None and target.startswith("neuro.icp_signs."):
            icp[target.rsplit(".", 1)[1]] = candidate.value
            record(target, candidate.value, candidate.at, candidate.code, when=when, note=note)
            continue
        if target is not None and target.startswith("neuro.capd."):
            items = assessment.setdefault("neuro", {}).setdefault("capd", [None] * 8)
            items[int(target.rsplit(".", 1)[1])] = candidate.value
        elif target is not None:
            _set(assessment, target, candidate.value)
        record(target, candidate.value, candidate.at, candidate.code, candidate.unit, when, note)
    _icp_signs(assessment, icp)

    open_agents = sorted(a for a in unsure if a not in running)
    if open_agents:
        reader.unknown(
            "crs.vasopressors",
            f"whether {', '.join(open_agents)} runs at the assessment time cannot be told"
            + (f" (running: {', '.join(sorted(running))})" if running else "")
            + ": the vasopressor list is left unreported rather than sent without it",
            (at.label for a in open_agents for at in unsure[a]),
        )
    elif running:
        agents = sorted(running)
        _set(assessment, "crs.vasopressors", agents)
        for agent in agents:
            for at in running[agent]:
                record("crs.vasopressors", agents, at, f"{at.resource.get('resourceType')} {agent}", note="running at the assessment time")
    since = as_of - timedelta(hours=masking_window_hours) if masking_window_hours is not None else None
    undecided_agents = frozenset(a for c in fever_masking.undecided_without_onset for a in fever_masking.agents.get(c, []))
    decisions = _masking_decisions(given, reader.candidates, as_of, since, threshold, administrations_mask_fever, undecided_agents)
    details = [
        MaskingDecision(source=d.given.at.label, agent=d.given.agent, given_at=d.given.when.lo if d.given.when and d.given.when.exact else None,
                        masks=d.masks, reason=d.why)
        for d in decisions
    ]
    masking = [
        f"{d.agent} at {d.given_at.isoformat() if d.given_at else 'no exact time'} ({d.source}): "
        f"{'masks' if d.masks else 'undecided' if d.masks is None else 'does not mask'}, {d.reason}"
        for d in details
    ]
    masks = [d for d in decisions if d.masks]
    explicit = "crs.fever_masked" in chosen
    applied = bool(masks) and not explicit
    if applied:
        first = masks[0]
        _set(assessment, "crs.fever_masked", True)
        record("crs.fever_masked", True, first.given.at, f"MedicationAdministration {first.given.agent}",
               when=first.given.when.lo if first.given.when and first.given.when.exact else None, note=first.why)
    elif not explicit and any(d.masks is None for d in decisions):
        reader.unknown("crs.fever_masked", "a fever-masking administration is undecided (mapping.masking_decisions)",
                       (d.given.at.label for d in decisions if d.masks is None))
    return assessment, sources, FhirMapping(
        as_of=as_of, window_hours=window_hours, mapped=mapped, ignored=reader.ignored, masking=masking, masking_applied=applied,
        masking_decisions=details, conflicts=reader.conflicts, conflicts_not_listed=reader.conflicts_not_listed,
        undetermined=reader.undetermined,
    )


def _icp_signs(assessment: dict[str, Any], icp: dict[str, bool]) -> None:
    """ICP signs: reported when one is present, or when all four are reported absent."""
    present = [sign for sign in get_args(IcpSign) if icp.get(sign)]
    if present or (icp and len(icp) == len(get_args(IcpSign))):
        _set(assessment, "neuro.icp_signs", present)


def bundle_resources(bundle: Mapping[str, Any], loc: Loc, _depth: int = 0) -> list[Located]:
    """The resources of a Bundle's entries, each with its location and fullUrl. Reads collection,
    transaction, searchset (match, include and outcome entries alike) and batch-response Bundles; a
    Bundle inside an entry (a batch-response to a search) is read one level deep. An entry whose
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
                "the Bundle at or before it) or when its reason is cytokine release syndrome; premedication never "
                "counts; with no usable time, or an anticytokine with no onset in view, it is undecided and "
                "crs.fever_masked is left unreported. An interpretation (AEGRADE_FHIR_ADMINISTRATIONS_MASK_FEVER)."
            ),
        )
        crs = crs.model_copy(update={"notes": [note, *crs.notes], "interpretations": [*crs.interpretations, interpretation]})
    return FhirAssessmentResult(**{**dict(result), "crs": crs, "mapping": mapping})
