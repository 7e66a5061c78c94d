"""Assessment (what is sent) and AssessmentResult (what is answered): the one schema shared by the
engine, the HTTP API, its OpenAPI document and the bedside form. Field names, bounds and enums are
those of ../shared/spec/api-v1.md.

Every model forbids unknown fields and is strict: a boolean is never accepted as a number, a number
never as a boolean or an enum, NaN and infinities are refused. A field left out is "not reported",
which the engine never reads as "normal". Cross-field contradictions are checked by
`aegrade.validation`, which names the field at fault.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "Assessment",
    "AssessmentResult",
    "CapdItems",
    "Consciousness",
    "CrsResult",
    "CrsSection",
    "DomainResult",
    "Driver",
    "IcansResult",
    "IceItems",
    "IcpSign",
    "Interpretation",
    "NeuroSection",
    "Oxygen",
    "OxygenDevice",
    "Patient",
    "RulesetRef",
    "Vasopressor",
    "Vitals",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# ----------------------------------------------------------------------------------------------
# Request
# ----------------------------------------------------------------------------------------------

Vasopressor = Literal["norepinephrine", "epinephrine", "phenylephrine", "dopamine", "vasopressin", "other"]
OxygenDevice = Literal[
    "none",
    "nasal_cannula",
    "blow_by",
    "high_flow_nasal_cannula",
    "simple_facemask",
    "nonrebreather",
    "venturi",
    "cpap",
    "bipap",
    "mechanical_ventilation",
]
Consciousness = Literal["alert", "awakens_spontaneously", "awakens_to_voice", "awakens_to_tactile", "unarousable"]
Seizure = Literal[
    "none",
    "resolved_rapidly",
    "nonconvulsive_resolved_with_intervention",
    "prolonged_over_5_min",
    "repetitive_without_return_to_baseline",
]
Motor = Literal["none", "tremor_or_myoclonus", "deep_focal_weakness"]
CerebralEdema = Literal["none", "focal", "diffuse"]
IcpSign = Literal["posturing", "cn6_palsy", "papilledema", "cushings_triad"]

def _whole_number(value: Any) -> Any:
    """7.0 is the integer 7 (as in JSON Schema); 7.5, "7" and True stay invalid."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# Integers from 0 to N. A float with no fractional part is accepted as one; the bounds come before the
# validator so that the JSON Schema says minimum/maximum.
_Whole = BeforeValidator(_whole_number)
Points1 = Annotated[int, Field(ge=0, le=1), _Whole]
Points3 = Annotated[int, Field(ge=0, le=3), _Whole]
Points4 = Annotated[int, Field(ge=0, le=4), _Whole]
IceTotal = Annotated[int, Field(ge=0, le=10), _Whole]
CapdTotal = Annotated[int, Field(ge=0, le=32), _Whole]
CapdItem = Points4
CapdItems = Annotated[
    list[CapdItem],
    Field(
        min_length=8,
        max_length=8,
        description="The eight CAPD item scores, 0-4 each, items 1-4 already in their reversed scoring.",
    ),
]


class Patient(_Strict):
    """Who is being graded."""

    age_years: float = Field(ge=0, le=120, description="Age in years; fractions allowed for infants.")
    weight_kg: float | None = Field(default=None, gt=0, le=400, description="Body weight in kg.")
    developmental_delay: bool = Field(
        default=False, description="Baseline developmental delay: selects CAPD for ICANS at any age."
    )


class Vitals(_Strict):
    """Vital signs at the time of the assessment. Each is optional; none is assumed normal."""

    temperature_c: float | None = Field(default=None, ge=25, le=45, description="Body temperature, degrees C.")
    temperature_f: float | None = Field(
        default=None,
        ge=77,
        le=113,
        description="Body temperature, degrees F; converted to C and rounded to 0.01. Not with temperature_c.",
    )
    sbp_mmhg: float | None = Field(default=None, ge=20, le=300, description="Systolic blood pressure, mmHg.")
    dbp_mmhg: float | None = Field(default=None, ge=20, le=300, description="Diastolic blood pressure, mmHg.")
    map_mmhg: float | None = Field(default=None, ge=20, le=300, description="Mean arterial pressure, mmHg.")
    heart_rate_bpm: float | None = Field(default=None, ge=0, le=350, description="Heart rate, beats/min.")
    respiratory_rate: float | None = Field(default=None, ge=0, le=150, description="Respiratory rate, breaths/min.")
    spo2_pct: float | None = Field(default=None, ge=0, le=100, description="Peripheral oxygen saturation, %.")


class Oxygen(_Strict):
    """Oxygen support in use. ASTCT grades hypoxia by the support required, not by SpO2."""

    device: OxygenDevice
    flow_l_min: float | None = Field(
        default=None,
        ge=0,
        le=80,
        description="Oxygen flow, L/min. Required for nasal_cannula and high_flow_nasal_cannula.",
    )


class CrsSection(_Strict):
    """CRS-relevant support and treatment."""

    fever_masked: bool | None = Field(
        default=None,
        description=(
            "True once antipyretic or anticytokine therapy (tocilizumab, corticosteroid) has been given "
            "for CRS: fever is then no longer required. Left out, it is taken as false and the result says so."
        ),
    )
    hypotension: bool | None = Field(
        default=None,
        description=(
            "Hypotension attributable to CRS (fluids or vasopressors needed). When left out it is derived "
            "from vasopressors and from the vitals by age; the derivation is named in the result."
        ),
    )
    vasopressors: list[Vasopressor] | None = Field(
        default=None,
        json_schema_extra={"uniqueItems": True},
        description="Vasopressor agents running now, each at most once. Empty list: none.",
    )
    oxygen: Oxygen | None = None
    hypotension_other_cause: bool = Field(
        default=False, description="Hypotension is explained by another cause (e.g. sepsis): not CRS evidence."
    )
    hypoxia_other_cause: bool = Field(
        default=False, description="Hypoxia is explained by another cause (e.g. pulmonary embolism): not CRS evidence."
    )
    death_attributed: bool = Field(default=False, description="A clinician attributes death to CRS.")


class IceItems(_Strict):
    """The five ICE tasks, by points."""

    orientation: Points4 = Field(description="Year, month, city, hospital: 1 point each.")
    naming: Points3 = Field(description="Names three objects: 1 point each.")
    commands: Points1 = Field(description="Follows simple commands.")
    writing: Points1 = Field(description="Writes a standard sentence.")
    attention: Points1 = Field(description="Counts backwards from 100 by 10.")


class NeuroSection(_Strict):
    """ICANS assessment."""

    ice: IceItems | None = Field(default=None, description="ICE item scores; not with ice_score.")
    ice_score: IceTotal | None = Field(default=None, description="ICE total 0-10; not with ice.")
    capd: CapdItems | None = Field(default=None, description="CAPD item scores; not with capd_score.")
    capd_score: CapdTotal | None = Field(default=None, description="CAPD total 0-32; not with capd.")
    unable_to_perform: bool = Field(
        default=False, description="The patient cannot do ICE/CAPD because unarousable."
    )
    consciousness: Consciousness | None = None
    consciousness_other_cause: bool = Field(
        default=False,
        description="Depressed consciousness is explained by sedating medication or another cause.",
    )
    seizure: Seizure | None = None
    motor: Motor | None = Field(
        default=None, description="tremor_or_myoclonus is recorded but never counts toward ICANS."
    )
    cerebral_edema: CerebralEdema | None = Field(default=None, description="On neuroimaging.")
    icp_signs: list[IcpSign] | None = Field(default=None, json_schema_extra={"uniqueItems": True})
    intracranial_hemorrhage: bool = Field(default=False, description="Excluded from ICANS grading.")
    death_attributed: bool = Field(default=False, description="A clinician attributes death to ICANS.")


class Assessment(_Strict):
    """One snapshot of one patient. A section left out is "not reported", not "normal"."""

    patient: Patient
    vitals: Vitals | None = None
    crs: CrsSection | None = None
    neuro: NeuroSection | None = None


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------

EvidenceLevel = Literal["P", "R2", "R1", "U", "LOCAL"]
GradeStatus = Literal["graded", "no_crs", "not_assessable", "clinician_review"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Driver(_Out):
    """A rule that fired, with the values that made it fire."""

    rule: str
    domain: str
    grade: int | None = Field(description="The grade this rule gives its domain; 0 for rules that only explain.")
    drives: bool = Field(description="True when this rule set the result; false for the others that fired.")
    criterion: str
    citation: str
    evidence_level: EvidenceLevel
    evidence: dict[str, Any]


class Interpretation(_Out):
    """A setting, for a point the sources leave open, that decided this result."""

    setting: str
    value: Any
    text: str


class RulesetRef(_Out):
    id: str
    version: str
    sha256: str
    settings: dict[str, Any] = Field(default_factory=dict)


class DomainResult(_Out):
    scale: str
    ruleset: str = Field(description="Rule set id@version that graded this.")
    grade: int | None = Field(ge=0, le=5, description="0-5, or null when not assessable or left to the clinician.")
    status: GradeStatus
    drivers: list[Driver] = Field(description="The rules that set the grade, then the others that fired.")
    domains: dict[str, int | None] = Field(
        description="The grade each domain reached; null for a domain that was not reported."
    )
    missing: list[str] = Field(description="Domains not reported: the grade reflects only what was reported.")
    interpretations: list[Interpretation] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class CrsResult(DomainResult):
    pass


class IcansResult(DomainResult):
    tool: Literal["ICE", "CAPD"] | None


class AssessmentResult(_Out):
    id: str
    evaluated_at: datetime
    crs: CrsResult | None = None
    icans: IcansResult | None = None
    flags: list[dict[str, Any]] = Field(default_factory=list)
    actions: list[dict[str, Any]] = Field(default_factory=list)
    rulesets: list[RulesetRef]
