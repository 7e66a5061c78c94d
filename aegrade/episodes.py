"""Episodes: one patient's observations and treatments over time, and what follows from them.

Pure logic, no storage (service/episode_store.py stores episodes). Each observation is graded by
the stateless engine; the history adds only two things:

1. **Fever masking.** ASTCT 2019 (Lee et al., BBMT 2019;25:625-638, the fever footnote of the CRS
   table, [R2] in crs-icans-research.md §1.1): "In patients who have CRS then receive antipyretic
   or anticytokine therapy such as tocilizumab or steroids, fever is no longer required to grade
   subsequent CRS severity." Here: once CRS has been graded >= 1 (the onset) and a masking agent
   has been recorded at or after the onset, every later observation is graded with fever no
   longer required. An explicit `crs.fever_masked` in the observation wins, and the result
   notes any conflict with the history.
2. **The course**: the current, peak, onset and resolution of each of CRS and ICANS.

Times are timezone-aware and kept in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from aegrade.errors import RuleFileError
from aegrade.models import Assessment, AssessmentResult, CrsSection, Interpretation, UndeterminedInput
from aegrade.rulefile import FeverMasking as FeverMaskingRule
from aegrade.rulefile import default_rules_dir, load_rulesets

__all__ = [
    "ANTIPYRETICS",
    "BLINATUMOMAB_COURSE_AGENTS",
    "ANTICYTOKINES",
    "CORTICOSTEROIDS",
    "MASKING_AGENTS",
    "DomainCourse",
    "Episode",
    "FeverMasking",
    "Observation",
    "ObservationResult",
    "TimelineDomain",
    "TimelineEntry",
    "Treatment",
    "TreatmentAgent",
    "TreatmentRecord",
    "TreatmentResult",
    "NeuroPoint",
    "apply_fever_masking",
    "default_fever_masking",
    "masking_window_hours",
    "blinatumomab_course",
    "had_seizure",
    "domain_course",
    "fever_masking",
    "timeline_entry",
]

FUTURE_TOLERANCE = timedelta(minutes=5)
"""An observation or treatment time more than this after the server's clock is refused."""
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""Times before this are refused as implausible (and keep time-zone arithmetic in range)."""

TreatmentAgent = Literal[
    "tocilizumab",
    "dexamethasone",
    "methylprednisolone",
    "hydrocortisone",
    "other_corticosteroid",
    "acetaminophen",
    "ibuprofen",
    "other_antipyretic",
    "anakinra",
    "blinatumomab_start",
    "blinatumomab_stop",
    "pegaspargase",
    "other_asparaginase",
]
BLINATUMOMAB_COURSE_AGENTS = frozenset({"blinatumomab_start", "blinatumomab_stop"})
"""The treatments that mark a blinatumomab exposure: the label's seizure and recurrence rules read them
(vocabulary: the two entries that record the drug's start and stop)."""

# The agents after which fever is no longer required are clinical knowledge: they are declared in
# the CRS rule file (derivations.fever_masking, ASTCT 2019 fever footnote), with the episode
# masking window. The old names stay importable, computed from the rule files of rules/:
_MASKING_CLASSES = {"ANTICYTOKINES": "anticytokine", "CORTICOSTEROIDS": "corticosteroid", "ANTIPYRETICS": "antipyretic"}


@cache
def default_fever_masking() -> FeverMaskingRule:
    """The fever-masking declaration of the active primary CRS rule file in rules/ (an Engine over
    another directory has its own: `Engine.fever_masking`)."""
    for ruleset in load_rulesets():
        file = ruleset.file
        if file.subject == "crs" and file.status == "active" and file.role == "primary" and file.derivations.fever_masking:
            return file.derivations.fever_masking
    raise RuleFileError(str(default_rules_dir()), "no active primary CRS rule file declares derivations.fever_masking")


def __getattr__(name: str) -> frozenset[str]:
    """MASKING_AGENTS, ANTICYTOKINES, CORTICOSTEROIDS, ANTIPYRETICS: thin aliases of the CRS rule file's
    derivations.fever_masking (kept for the callers that import them)."""
    if name == "MASKING_AGENTS":
        return default_fever_masking().all_agents
    if name in _MASKING_CLASSES:
        return frozenset(default_fever_masking().agents.get(_MASKING_CLASSES[name], ()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

DoseUnit = Literal["mg", "g", "mcg", "mg/kg", "mcg/kg", "mg/m2", "mcg/m2", "IU", "IU/m2", "mcg/day", "mcg/m2/day"]


def _iso_text(value: Any) -> Any:
    """A time must be sent as ISO 8601 text: a bare number would be read as Unix seconds."""
    if not isinstance(value, (str, datetime)):
        raise ValueError("must be an ISO 8601 date-time string with a time zone, e.g. 2026-11-21T08:30:00Z")
    return value


def _plausible(value: datetime) -> datetime:
    if value.year < EARLIEST.year or value.year > 9998:
        raise ValueError(f"must be a time from the year {EARLIEST.year} on")
    utc = value.astimezone(timezone.utc)
    now = datetime.now(timezone.utc)
    if utc > now + FUTURE_TOLERANCE:
        raise ValueError(
            f"is more than {int(FUTURE_TOLERANCE.total_seconds() // 60)} minutes in the future "
            f"(server time {now.isoformat(timespec='seconds')})"
        )
    return utc


Timestamp = Annotated[
    AwareDatetime,
    Field(strict=False, description="ISO 8601 date-time with a time zone (Z or +hh:mm); kept in UTC."),
    BeforeValidator(_iso_text),
]


class Observation(Assessment):
    """An assessment of one patient at one time: the Assessment fields plus `observed_at`."""

    observed_at: Timestamp = Field(
        description="When the observation was made: ISO 8601 with a time zone, at most 5 minutes in the future.",
    )

    @field_validator("observed_at")
    @classmethod
    def _observed_at_plausible(cls, value: datetime) -> datetime:
        return _plausible(value)

    def assessment(self) -> Assessment:
        """The Assessment part, as the stateless engine grades it."""
        return Assessment.model_validate_json(self.model_dump_json(exclude={"observed_at"}, exclude_unset=True))


class Treatment(BaseModel):
    """A treatment given to the patient. Vasopressors are not treatments here: they come with the
    observations (crs.vasopressors)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    agent: TreatmentAgent
    administered_at: Timestamp = Field(description="When it was given: ISO 8601 with a time zone.")
    dose_mg: float | None = Field(
        default=None, gt=0, le=100_000, description="The dose, in mg unless dose_unit says otherwise."
    )
    dose_unit: DoseUnit | None = Field(default=None, description="The unit of dose_mg; mg when left out.")

    @field_validator("administered_at")
    @classmethod
    def _administered_at_plausible(cls, value: datetime) -> datetime:
        return _plausible(value)

    @field_validator("dose_unit")
    @classmethod
    def _unit_needs_dose(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("dose_mg") is None:
            raise ValueError("a dose_unit needs a dose_mg")
        return value


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TreatmentRecord(_Out):
    id: str
    agent: TreatmentAgent
    administered_at: datetime
    dose_mg: float | None
    dose_unit: DoseUnit | None
    recorded_at: datetime
    masks_fever: bool = Field(description="An anticytokine, corticosteroid or antipyretic (ASTCT fever masking).")


class TreatmentResult(TreatmentRecord):
    """The answer to a recorded treatment."""

    regraded: list[str] = Field(
        description="Observations after it graded again, because this treatment made fever no longer required."
    )


class FeverMasking(_Out):
    """Why fever was not required for an observation: the treatment given after CRS onset."""

    agent: TreatmentAgent
    administered_at: datetime
    onset_at: datetime = Field(description="The first observation graded CRS >= 1.")


class ObservationResult(AssessmentResult):
    """The AssessmentResult of one observation, graded in the context of the patient's history."""

    patient_id: str
    observation_id: str
    observed_at: datetime
    fever_masking: FeverMasking | None = Field(
        description="The history that made fever no longer required for this observation, if any."
    )
    regraded: list[str] = Field(
        default_factory=list,
        description="Later observations graded again because this one (or a treatment) changed their history.",
    )


class TimelineDomain(_Out):
    grade: int | None = Field(description="What the reported inputs establish (the grade the course uses).")
    grade_max: int | None = Field(
        default=None, description="The highest grade the unreported inputs still allow (v1.1); equals grade when settled."
    )
    undetermined_by: list[UndeterminedInput] = Field(
        default_factory=list, description="The unreported inputs whose report could raise the grade."
    )
    status: str
    explanation: list[str] = Field(description="The criteria that set the grade, then the notes.")


class TimelineEntry(_Out):
    observation_id: str
    observed_at: datetime
    assessment_id: str = Field(description="The audit record of this grading (GET /v1/assessments/{id}).")
    crs: TimelineDomain | None
    icans: TimelineDomain | None
    fever_masking: FeverMasking | None
    flags: list[str] = Field(description="Ids of the thrombosis flags raised.")
    actions: list[str] = Field(description="Ids of the blinatumomab actions.")


class DomainCourse(_Out):
    current_grade: int | None = Field(description="The grade of the latest observation that assessed this domain.")
    current_grade_max: int | None = Field(
        default=None,
        description="The grade_max of that observation: the highest grade its unreported inputs still allow.",
    )
    current_status: str | None
    peak_grade: int | None = Field(
        description="The highest grade established (grade, not grade_max: an incomplete grade counts as its "
        "established part); null when none was graded."
    )
    peak_at: datetime | None = Field(description="When the peak grade was first observed.")
    onset_at: datetime | None = Field(description="The first observation graded >= 1.")
    resolved_at: datetime | None = Field(
        description="After onset, the first observation settled at grade 0 with every later one also settled at 0 "
        "(an incomplete grade 0, which unreported inputs could raise, is not a resolution)."
    )
    masking_since: datetime | None = Field(
        description="CRS: the first fever-masking treatment at or after onset. Always null for ICANS."
    )


class Episode(_Out):
    patient_id: str
    crs: DomainCourse
    icans: DomainCourse
    timeline: list[TimelineEntry] = Field(description="One entry per observation, in observed_at order.")
    treatments: list[TreatmentRecord] = Field(description="In administered_at order.")


# ----------------------------------------------------------------------------------------------
# Fever masking
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GivenTreatment:
    agent: str
    administered_at: datetime


def fever_masking(
    observed_at: datetime,
    onset_at: datetime | None,
    treatments: Iterable[GivenTreatment],
    *,
    window_hours: float | None = None,
    declaration: FeverMaskingRule | None = None,
) -> FeverMasking | None:
    """The masking that applies to an observation at `observed_at`, or None.

    It applies when CRS onset (the first observation graded >= 1) came before, and a masking agent
    (of the CRS rule file's `declaration`, default: rules/) was given at or after the onset and
    strictly before `observed_at`, and no longer ago than the window: `window_hours` when given (a
    service override), else the declaration's (none: the rest of the episode). The earliest such
    treatment is named."""
    if onset_at is None or onset_at >= observed_at:
        return None
    declaration = declaration or default_fever_masking()
    window_hours = masking_window_hours(window_hours, declaration)
    agents = declaration.all_agents
    since = observed_at - timedelta(hours=window_hours) if window_hours is not None else None
    candidates = [
        t
        for t in treatments
        if t.agent in agents
        and onset_at <= t.administered_at < observed_at
        and (since is None or t.administered_at >= since)
    ]
    if not candidates:
        return None
    first = min(candidates, key=lambda t: t.administered_at)
    return FeverMasking(agent=first.agent, administered_at=first.administered_at, onset_at=onset_at)


def masking_window_hours(override: float | None, declaration: FeverMaskingRule | None = None) -> float | None:
    """The episode masking window in force: the service's override when set, else the CRS rule file's
    (None: no limit)."""
    if override is not None:
        return override
    return (declaration or default_fever_masking()).window.hours


def _when(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="minutes").replace("+00:00", "Z")


def apply_fever_masking(
    assessment: Assessment,
    masking: FeverMasking | None,
    onset_at: datetime | None,
    *,
    window_hours: float | None = None,
    declaration: FeverMaskingRule | None = None,
) -> tuple[Assessment, list[str], list[Interpretation]]:
    """The assessment to grade, with `crs.fever_masked` set from the history when it was not sent,
    and the notes and interpretations that say so. `onset_at` is the CRS onset before this
    observation, if any. CRS is graded only when vitals or crs were sent; otherwise the assessment
    is returned as it is."""
    if assessment.vitals is None and assessment.crs is None:
        return assessment, [], []
    override = window_hours
    window_hours = masking_window_hours(window_hours, declaration)
    sent = assessment.crs.fever_masked if assessment.crs is not None else None
    derived = masking is not None
    notes: list[str] = []
    interpretations: list[Interpretation] = []
    if masking is not None:
        window = "no limit" if window_hours is None else f"{window_hours:g} h"
        interpretations.append(
            Interpretation(
                setting="episode_masking_window_hours",
                value=window_hours,
                text=(
                    "How long fever stays masked after a treatment is not set by ASTCT 2019; "
                    f"this service uses {window} (an interpretation: "
                    + (
                        "AEGRADE_EPISODE_MASKING_WINDOW_HOURS)."
                        if override is not None
                        else "the CRS rule file's fever_masking.window; AEGRADE_EPISODE_MASKING_WINDOW_HOURS overrides it)."
                    )
                ),
            )
        )
    if sent is None:
        if masking is not None:
            notes.append(
                f"Fever masking derived from the episode: {masking.agent} at {_when(masking.administered_at)}, "
                f"after CRS onset at {_when(masking.onset_at)}; fever is no longer required (ASTCT 2019)."
            )
        elif onset_at is None:
            notes.append(
                "fever_masked was not sent, and no earlier observation in this episode is graded CRS >= 1: "
                "fever is required."
            )
        else:
            notes.append(
                "fever_masked was not sent, and no anticytokine, corticosteroid or antipyretic is recorded "
                f"between CRS onset at {_when(onset_at)} and this observation"
                + (f" (within {window_hours:g} h)" if window_hours is not None else "")
                + ": fever is required."
            )
        crs = (assessment.crs or CrsSection()).model_copy(update={"fever_masked": derived})
        return assessment.model_copy(update={"crs": crs}), notes, interpretations
    if sent != derived:
        if masking is not None:
            notes.append(
                f"fever_masked false was sent, but the episode records {masking.agent} at "
                f"{_when(masking.administered_at)} after CRS onset at {_when(masking.onset_at)}: the sent value was used."
            )
        else:
            notes.append(
                "fever_masked true was sent, but the episode records no anticytokine, corticosteroid or antipyretic "
                "given after a CRS onset and before this observation: the sent value was used."
            )
    return assessment, notes, interpretations


def with_episode_context(
    result: AssessmentResult, notes: Sequence[str], interpretations: Sequence[Interpretation]
) -> AssessmentResult:
    """`result` with the episode's notes and interpretations added to its CRS part."""
    if result.crs is None or (not notes and not interpretations):
        return result
    crs = result.crs.model_copy(
        update={
            "notes": [*notes, *result.crs.notes],
            "interpretations": [*result.crs.interpretations, *interpretations],
        }
    )
    return result.model_copy(update={"crs": crs})


# ----------------------------------------------------------------------------------------------
# The course of each domain
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradePoint:
    """One observation's result for one domain (only observations that assessed the domain)."""

    observed_at: datetime
    grade: int | None
    status: str
    grade_max: int | None = None


def _settled_zero(point: GradePoint) -> bool:
    """Grade 0 that no unreported input could raise (not `incomplete`)."""
    return point.grade == 0 and point.status != "incomplete" and (point.grade_max is None or point.grade_max == 0)


def domain_course(points: Sequence[GradePoint]) -> DomainCourse:
    """Current, peak, onset and resolution from the points of one domain, in observed_at order."""
    graded = [p for p in points if p.grade is not None]
    latest = points[-1] if points else None
    peak = max((p.grade for p in graded), default=None)  # type: ignore[type-var]
    peak_at = next((p.observed_at for p in graded if p.grade == peak), None) if peak is not None else None
    onset_at = next((p.observed_at for p in graded if p.grade is not None and p.grade >= 1), None)
    resolved_at = None
    if onset_at is not None and latest is not None and _settled_zero(latest):
        # the first of the trailing run of observations settled at grade 0
        for point in reversed(points):
            if not _settled_zero(point):
                break
            resolved_at = point.observed_at
    return DomainCourse(
        current_grade=latest.grade if latest else None,
        current_grade_max=latest.grade_max if latest else None,
        current_status=latest.status if latest else None,
        peak_grade=peak,
        peak_at=peak_at,
        onset_at=onset_at,
        resolved_at=resolved_at,
        masking_since=None,
    )


def timeline_entry(
    observation_id: str, observed_at: datetime, result: AssessmentResult, masking: FeverMasking | None
) -> TimelineEntry:
    """The compact form of one graded observation that the episode shows."""

    def domain(part: Any) -> TimelineDomain | None:
        if part is None:
            return None
        criteria = [d.criterion for d in part.drivers if d.drives]
        return TimelineDomain(
            grade=part.grade,
            grade_max=part.grade_max,
            undetermined_by=part.undetermined_by,
            status=part.status,
            explanation=[*criteria, *part.notes],
        )

    return TimelineEntry(
        observation_id=observation_id,
        observed_at=observed_at,
        assessment_id=result.id,
        crs=domain(result.crs),
        icans=domain(result.icans),
        fever_masking=masking,
        flags=[f.id for f in result.flags],
        actions=[a.id for a in result.actions],
    )


# ----------------------------------------------------------------------------------------------
# Blinatumomab: seizures, recurrence and resolution from the timeline (blinatumomab-actions.md v1.1 §4-5)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeuroPoint:
    """What an earlier observation said about neurological toxicity."""

    observed_at: datetime
    icans_grade: int | None
    seizure: bool


def had_seizure(assessment: Assessment) -> bool:
    """A seizure reported in this observation (neuro, or the thrombosis section's checkbox)."""
    neuro_seizure = assessment.neuro is not None and assessment.neuro.seizure not in (None, "none")
    return neuro_seizure or bool(assessment.thrombosis is not None and assessment.thrombosis.seizure)


def blinatumomab_course(
    assessment: Assessment,
    observed_at: datetime,
    earlier: Sequence[NeuroPoint],
    treatments: Sequence[GivenTreatment],
    *,
    grade_at_least: int,
    resolved_at_most: int,
    resolution_days: float,
) -> tuple[Assessment, list[str]]:
    """The assessment with `seizures_this_course`, `recurred_after_restart` and `days_to_resolution`
    derived from the episode when it has a blinatumomab section and did not send them, with notes
    naming the observations used.

    - seizures: the seizure observations since the latest `blinatumomab_start` at or before this
      observation, this one included;
    - recurrence: an earlier observation graded ICANS >= `grade_at_least`, then a
      `blinatumomab_stop`, then a `blinatumomab_start` before this observation;
    - resolution: the latest run of ICANS >= `grade_at_least` with no grade <= `resolved_at_most`
      since, begun more than `resolution_days` ago: it has taken that long already (a lower bound,
      set only when it decides the label's "more than 7 days").
    The thresholds are the label rule file's; this function only reads the timeline."""
    section = assessment.blinatumomab
    if section is None:
        return assessment, []
    sent = section.model_fields_set
    before = sorted((p for p in earlier if p.observed_at < observed_at), key=lambda p: p.observed_at)
    starts = sorted(t.administered_at for t in treatments if t.agent == "blinatumomab_start" and t.administered_at <= observed_at)
    stops = sorted(t.administered_at for t in treatments if t.agent == "blinatumomab_stop" and t.administered_at <= observed_at)
    update: dict[str, Any] = {}
    notes: list[str] = []
    if "seizures_this_course" not in sent and starts:
        start = starts[-1]
        seen = [p.observed_at for p in before if p.seizure and p.observed_at >= start]
        count = len(seen) + (1 if had_seizure(assessment) else 0)
        update["seizures_this_course"] = count
        when = ", ".join(_when(t) for t in seen) or "none before this one"
        notes.append(
            f"seizures_this_course derived from the episode: {count} since blinatumomab_start at {_when(start)} "
            f"(earlier seizure observations: {when}{'; and this one' if had_seizure(assessment) else ''})."
        )
    if "recurred_after_restart" not in sent and starts:
        start = starts[-1]
        stop = max((s for s in stops if s < start), default=None)
        if stop is not None:
            severe = [p for p in before if p.icans_grade is not None and p.icans_grade >= grade_at_least and p.observed_at < stop]
            update["recurred_after_restart"] = bool(severe)
            notes.append(
                "recurred_after_restart derived from the episode: "
                + (
                    f"ICANS grade {severe[-1].icans_grade} at {_when(severe[-1].observed_at)}, blinatumomab_stop at "
                    f"{_when(stop)}, restarted at {_when(start)}: a grade {grade_at_least} or more now is a recurrence."
                    if severe
                    else f"restarted at {_when(start)} after a stop at {_when(stop)} with no earlier ICANS grade "
                    f"{grade_at_least} or more: not a recurrence."
                )
            )
    if "days_to_resolution" not in sent:
        onset: datetime | None = None
        for point in before:
            if point.icans_grade is None:
                continue
            if point.icans_grade >= grade_at_least and onset is None:
                onset = point.observed_at
            elif point.icans_grade <= resolved_at_most:
                onset = None
        if onset is not None:
            days = (observed_at - onset).total_seconds() / 86400
            if days > resolution_days:
                update["days_to_resolution"] = round(days, 2)
                notes.append(
                    f"days_to_resolution derived from the episode: ICANS grade {grade_at_least} or more since "
                    f"{_when(onset)} and not back to grade {resolved_at_most} or less: more than {resolution_days:g} days "
                    f"({days:.1f} so far)."
                )
    if not update:
        return assessment, notes
    return assessment.model_copy(update={"blinatumomab": section.model_copy(update=update)}), notes
