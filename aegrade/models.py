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
    "Action",
    "Assessment",
    "AssessmentResult",
    "BlinatumomabSection",
    "CapdItems",
    "Consciousness",
    "CrsResult",
    "CrsSection",
    "CtcaeTerm",
    "DomainResult",
    "Driver",
    "Flag",
    "IcansResult",
    "IceItems",
    "IcpSign",
    "Interpretation",
    "LabelGrade",
    "NeuroSection",
    "OtherScaleResult",
    "Oxygen",
    "OxygenDevice",
    "Patient",
    "RulesetRef",
    "ThrombosisSection",
    "UndeterminedAction",
    "UndeterminedFlag",
    "UndeterminedInput",
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
WholeCount = Annotated[int, Field(ge=0, le=1000), _Whole]
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
    height_cm: float | None = Field(
        default=None,
        ge=30,
        le=250,
        description="Height in cm: with the weight it gives the body surface area (Mosteller), which converts a dose between mcg/day and mcg/m2/day.",
    )
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
            "for CRS: fever is then no longer required. Left out, it is unknown: without a fever the CRS "
            "gate is then undetermined."
        ),
    )
    fever_other_cause: bool = Field(
        default=False,
        description="The fever is explained by another cause (e.g. a documented bacteraemia): it does not count.",
    )
    hypotension: bool | None = Field(
        default=None,
        description=(
            "Hypotension attributable to CRS (fluids or vasopressors needed). When left out it is derived "
            "true from a running vasopressor or from vitals below the age threshold (an interpretation, named "
            "in the result); otherwise it stays unknown."
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
    ctcae_v4_grade3: bool | None = Field(
        default=None,
        description=(
            "A clinician finds the CTCAE v4.03 CRS grade 3 features: 'Prolonged (e.g., not rapidly responsive to "
            "symptomatic medication and/or brief interruption of infusion); recurrence of symptoms following initial "
            "improvement; hospitalization indicated for clinical sequelae'. Used by the CTCAE v4.03 CRS reading."
        ),
    )


class IceItems(_Strict):
    """The five ICE tasks, by points."""

    orientation: Points4 = Field(description="Year, month, city, hospital: 1 point each.")
    naming: Points3 = Field(description="Names three objects: 1 point each.")
    commands: Points1 = Field(description="Follows simple commands.")
    writing: Points1 = Field(description="Writes a standard sentence.")
    attention: Points1 = Field(description="Counts backwards from 100 by 10.")


CtcaeVersion = Literal["4.03", "5.0", "6.0"]


class CtcaeTerm(_Strict):
    """A neurological adverse reaction graded by a clinician with CTCAE (the blinatumomab label's scale)."""

    term: str = Field(
        min_length=1, max_length=60, description="A term of the closed list in the blinatumomab label rule file, e.g. tremor."
    )
    grade: Annotated[int, Field(ge=1, le=5), _Whole] = Field(description="CTCAE grade, 1-5.")
    version: CtcaeVersion


class NeuroSection(_Strict):
    """ICANS assessment."""

    ice: IceItems | None = Field(default=None, description="ICE item scores; not with ice_score.")
    ice_score: IceTotal | None = Field(default=None, description="ICE total 0-10; not with ice.")
    capd: CapdItems | None = Field(default=None, description="CAPD item scores; not with capd_score.")
    capd_score: CapdTotal | None = Field(default=None, description="CAPD total 0-32; not with capd.")
    unable_to_perform: bool = Field(
        default=False,
        description=(
            "The patient cannot do ICE/CAPD because unarousable. With consciousness not reported it implies "
            "'unarousable'; with any other consciousness it is a contradiction."
        ),
    )
    consciousness: Consciousness | None = None
    consciousness_other_cause: bool = Field(
        default=False,
        description="Depressed consciousness is explained by sedating medication or another cause.",
    )
    encephalopathy_other_cause: bool = Field(
        default=False, description="The ICE or CAPD finding is explained by another cause: it does not count."
    )
    seizure: Seizure | None = None
    seizure_other_cause: bool = Field(
        default=False, description="The seizure is explained by another cause (e.g. a venous infarct): it does not count."
    )
    motor: Motor | None = Field(
        default=None, description="tremor_or_myoclonus is recorded but never counts toward ICANS."
    )
    motor_other_cause: bool = Field(
        default=False, description="The motor finding is explained by another cause: it does not count."
    )
    cerebral_edema: CerebralEdema | None = Field(default=None, description="On neuroimaging.")
    icp_signs: list[IcpSign] | None = Field(default=None, json_schema_extra={"uniqueItems": True})
    icp_other_cause: bool = Field(
        default=False,
        description="Cerebral edema and ICP signs are explained by another cause (e.g. a hemorrhage): they do not count.",
    )
    intracranial_hemorrhage: bool = Field(
        default=False,
        description="Excluded from ICANS grading; when true, edema and ICP signs are undetermined until icp_other_cause is sent.",
    )
    death_attributed: bool = Field(default=False, description="A clinician attributes death to ICANS.")
    ctcae: list[CtcaeTerm] | None = Field(
        default=None,
        max_length=40,
        description=(
            "Clinician-graded CTCAE terms for neurological adverse reactions that ICANS leaves out or grades "
            "differently (e.g. tremor): the blinatumomab label's neurological toxicity grade is the worse of these and ICANS."
        ),
    )


AsparaginaseProduct = Literal["pegaspargase", "calaspargase", "erwinia", "native_ecoli"]
Steroid = Literal["dexamethasone", "prednisone", "none"]
ThrombophiliaTrait = Literal["FVL", "PT20210A", "PROTEIN_C_DEF", "PROTEIN_S_DEF", "AT_DEF", "LPA_HIGH", "MTHFR_TT"]
ThrombosisSite = Literal["CSVT", "DVT", "CVC", "PE", "arterial"]

_Flag = Field(default=None)


def _measure(low: float, high: float, meaning: str, *, exclusive_low: bool = False) -> Any:
    if exclusive_low:
        return Field(default=None, gt=low, le=high, description=meaning)
    return Field(default=None, ge=low, le=high, description=meaning)


class ThrombosisSection(_Strict):
    """Asparaginase and thrombosis inputs (asparaginase-thrombosis-research.md §7), units in the names.

    Age comes from patient.age_years. A symptom or reaction feature left out is taken as absent (it is
    a checkbox); every other input left out is not reported, and a flag that needs it does not fire.
    """

    on_all_therapy: bool | None = Field(default=None, description="In any phase of ALL therapy.")
    asparaginase_product: AsparaginaseProduct | None = None
    days_since_last_asparaginase: float | None = _measure(0, 3650, "Days since the last asparaginase dose.")
    asp_window_days_local: float | None = _measure(
        0, 365, "Exposure window in days for non-pegaspargase products (LOCAL; no source).", exclusive_low=True
    )
    asparaginase_dose_planned_within_72h: bool | None = None
    steroid: Steroid | None = Field(default=None, description="Current corticosteroid; prednisolone is prednisone.")
    on_blinatumomab: bool | None = Field(default=None, description="Implied true when the blinatumomab section is sent.")
    cvc_present: bool | None = None
    immunophenotype: Literal["B", "T"] | None = None
    mediastinal_mass_at_dx: bool | None = None
    bmi_percentile: float | None = _measure(0, 100, "BMI percentile for age and sex.")
    abo_group: Literal["O", "A", "B", "AB"] | None = None
    thrombophilia_traits: list[ThrombophiliaTrait] | None = Field(default=None, json_schema_extra={"uniqueItems": True})
    family_history_vte: bool | None = None
    prior_vte: bool | None = None
    prior_asp_associated_vte: bool | None = None
    fibrinogen_g_L: float | None = _measure(0, 20, "Fibrinogen, g/L (mg/dL / 100).")
    fibrinogen_lln_g_L: float | None = _measure(0, 20, "Lower limit of normal for fibrinogen, g/L.", exclusive_low=True)
    antithrombin_pct: float | None = _measure(0, 300, "Antithrombin activity, %.")
    d_dimer_mg_L_FEU: float | None = _measure(0, 1000, "D-dimer, mg/L FEU (= ug/mL FEU).")
    platelets_10e9_L: float | None = _measure(0, 5000, "Platelets, x10^9/L.")
    aptt_s: float | None = _measure(0, 600, "aPTT, seconds.")
    aptt_uln_s: float | None = _measure(0, 600, "Upper limit of normal for aPTT, seconds.", exclusive_low=True)
    inr: float | None = _measure(0, 50, "INR.")
    alt_U_L: float | None = _measure(0, 100000, "ALT, U/L.")
    alt_uln_U_L: float | None = _measure(0, 10000, "Upper limit of normal for ALT, U/L.", exclusive_low=True)
    alt_baseline_abnormal: bool | None = None
    bilirubin_umol_L: float | None = _measure(0, 2000, "Total bilirubin, umol/L.")
    bilirubin_uln_umol_L: float | None = _measure(0, 2000, "Upper limit of normal for bilirubin, umol/L.", exclusive_low=True)
    bilirubin_baseline_abnormal: bool | None = None
    triglycerides_mmol_L: float | None = _measure(0, 200, "Triglycerides, mmol/L (mg/dL / 88.5).")
    lipase_U_L: float | None = _measure(0, 100000, "Lipase, U/L.")
    lipase_uln_U_L: float | None = _measure(0, 10000, "Upper limit of normal for lipase, U/L.", exclusive_low=True)
    amylase_U_L: float | None = _measure(0, 100000, "Amylase, U/L.")
    amylase_uln_U_L: float | None = _measure(0, 10000, "Upper limit of normal for amylase, U/L.", exclusive_low=True)
    asparaginase_activity_IU_mL: float | None = _measure(0, 100, "Serum asparaginase activity, IU/mL.")
    asp_activity_sample_is_protocol_trough: bool | None = None
    teg_hypocoagulable: bool | None = None
    headache: bool | None = _Flag
    vomiting: bool | None = _Flag
    visual_disturbance: bool | None = _Flag
    seizure: bool | None = _Flag
    focal_deficit: bool | None = _Flag
    altered_consciousness: bool | None = _Flag
    papilledema: bool | None = _Flag
    abdominal_pain: bool | None = _Flag
    pancreatic_imaging_positive: bool | None = None
    reaction_temporally_related_to_asparaginase: bool | None = None
    urticaria: bool | None = _Flag
    rash: bool | None = _Flag
    local_reaction: bool | None = _Flag
    bronchospasm: bool | None = _Flag
    hypotension: bool | None = Field(default=None, description="Hypotension with a hypersensitivity reaction.")
    angioedema: bool | None = _Flag
    confirmed_thrombosis_site: ThrombosisSite | None = Field(default=None, description="Imaging-confirmed.")
    ich_present: bool | None = None
    imaging_clot_stable_or_improved: bool | None = None
    lmwh_agent: Literal["enoxaparin", "other"] | None = Field(default=None, description="Left out: none documented.")
    lmwh_intent: Literal["treatment", "prophylaxis"] | None = None
    enoxaparin_dose_mg_per_kg: float | None = _measure(0, 20, "Enoxaparin dose, mg/kg.", exclusive_low=True)
    enoxaparin_interval_h: float | None = _measure(0, 72, "Enoxaparin dosing interval, hours.", exclusive_low=True)
    enoxaparin_is_initial_dose: bool | None = None
    anti_xa_U_mL: float | None = _measure(0, 10, "Anti-Xa activity, U/mL.")
    anti_xa_hours_post_dose: float | None = _measure(0, 168, "Hours from the LMWH dose to the anti-Xa sample.")
    crcl_mL_min_1_73m2: float | None = _measure(0, 300, "Creatinine clearance, mL/min/1.73 m2.")
    lp_planned_within_24h: bool | None = None


class BlinatumomabDose(_Strict):
    value: float = Field(gt=0, le=100, description="Dose, in the unit given.")
    unit: Literal["mcg/day", "mcg/m2/day"]


class BlinatumomabSection(_Strict):
    """The patient is on blinatumomab now."""

    dose: BlinatumomabDose | None = None
    seizures_this_course: WholeCount | None = Field(default=None, description="Seizures in this course so far.")
    days_to_resolution: float | None = Field(
        default=None, ge=0, le=365, description="Days the last grade >= 3 toxicity took to resolve, if known."
    )
    recurred_after_restart: bool | None = Field(
        default=None, description="The same adverse reaction came back after blinatumomab was restarted."
    )


class Assessment(_Strict):
    """One snapshot of one patient. A section left out is "not reported", not "normal"."""

    patient: Patient
    vitals: Vitals | None = None
    crs: CrsSection | None = None
    neuro: NeuroSection | None = None
    thrombosis: ThrombosisSection | None = None
    blinatumomab: BlinatumomabSection | None = None


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------

EvidenceLevel = Literal["P", "R2", "R1", "U", "LOCAL"]
GradeStatus = Literal["graded", "incomplete", "no_crs", "not_assessable", "clinician_review"]


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


class UndeterminedInput(_Out):
    """An unreported input whose report could raise the grade."""

    input: str = Field(description="The request path, e.g. crs.vasopressors.")
    up_to: int = Field(ge=0, le=5, description="The highest grade reporting this input alone could establish.")


class DomainResult(_Out):
    scale: str
    ruleset: str = Field(description="Rule set id@version that graded this.")
    grade: int | None = Field(
        ge=0, le=5, description="What the reported inputs establish: 0-5, or null when not assessable or left to the clinician."
    )
    grade_max: int | None = Field(
        ge=0,
        le=5,
        description="The highest grade the unreported inputs still allow; equals grade when nothing unreported could raise it.",
    )
    undetermined_by: list[UndeterminedInput] = Field(
        default_factory=list, description="The unreported inputs whose report could raise the grade."
    )
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


class OtherScaleResult(DomainResult):
    """A subject graded by an additional scale (a rule set whose role is `additional`)."""

    subject: Literal["crs", "icans"]


Severity = Literal["info", "warning", "critical"]


class Flag(_Out):
    """A thrombosis or asparaginase risk flag (asparaginase-thrombosis-research.md §8)."""

    id: str
    rule: str = Field(description="The rule that emitted it.")
    severity: Severity
    message: str
    citation: str
    evidence_level: EvidenceLevel
    evidence: dict[str, Any] = Field(description="The values that fired the flag.")
    interpretations: list[Interpretation] = Field(default_factory=list, description="Local settings that decided it.")


class LabelGrade(_Out):
    """The grade that decided a label action, and the scale it was read on."""

    subject: Literal["crs", "neuro"]
    grade: int | None = Field(description="The grade (the lower bound when it is still open).")
    grade_max: int | None = Field(default=None, description="The upper bound when the grade is still open.")
    scale: str = Field(description="e.g. 'ASTCT 2019' or 'CTCAE v4.03'.")
    other: list[str] = Field(default_factory=list, description="The other scales' grades, in words, when they differ.")


class Action(_Out):
    """A label-based action (blinatumomab-actions.md): it restates the label, it never orders."""

    id: str
    rule: str = Field(description="The rule that emitted it.")
    drug: str
    text: str
    decided_by: list[LabelGrade] = Field(default_factory=list, description="The grades and scales that decided it.")
    superseded: list[str] = Field(
        default_factory=list, description="For a discontinuation: the actions it supersedes, which are not given."
    )
    citation: str
    evidence_level: EvidenceLevel
    evidence: dict[str, Any]
    interpretations: list[Interpretation] = Field(default_factory=list)


class UndeterminedFlag(_Out):
    """A critical or warning flag whose condition is unknown: it could fire once `missing` is reported."""

    id: str
    rule: str
    severity: Severity
    message: str
    citation: str
    evidence_level: EvidenceLevel
    missing: list[str] = Field(description="The unreported inputs (request paths) that would decide it.")


class UndeterminedAction(_Out):
    """A label action whose condition is unknown: it could apply once `missing` is reported."""

    id: str
    rule: str
    drug: str
    text: str
    decided_by: list[LabelGrade] = Field(default_factory=list, description="The grades and scales it depends on.")
    citation: str
    evidence_level: EvidenceLevel
    missing: list[str] = Field(description="The unreported inputs (request paths) that would decide it.")


class AssessmentResult(_Out):
    id: str
    evaluated_at: datetime
    crs: CrsResult | None = None
    icans: IcansResult | None = None
    flags: list[Flag] = Field(default_factory=list, description="Most severe first.")
    undetermined_flags: list[UndeterminedFlag] = Field(
        default_factory=list, description="Critical and warning flags whose condition is unknown, most severe first."
    )
    actions: list[Action] = Field(default_factory=list, description="Most restrictive first.")
    undetermined_actions: list[UndeterminedAction] = Field(
        default_factory=list, description="Actions whose condition is unknown."
    )
    notes: list[str] = Field(
        default_factory=list, description="What the engine derived or noticed for the flags and actions, in words."
    )
    other_scales: list[OtherScaleResult] = Field(
        default_factory=list,
        description="The same subject graded by the other active scales (e.g. CRS by CTCAE v4.03, the blinatumomab label's scale).",
    )
    rulesets: list[RulesetRef]
