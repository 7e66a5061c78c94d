"""The facts each rule set may test, with their types, units and the request inputs they come from.

`aegrade.derive` turns an Assessment into these flat facts; rule files name them in their
conditions. The rule-file loader refuses a condition on a fact that is not listed here, a value of
the wrong type and an enum value that does not exist, so that a misspelling can never make a rule
silently never fire.

A fact that was not reported is absent from the facts, and a test of it is *unknown* (three-valued
logic, see `aegrade.reference`): never zero, false or normal. Three kinds of fact are special:
- `always_present`: derive always sets it (a default that the request's schema gives, such as
  `death_attributed: false`, or a value the engine computes from what is always sent).
- `future`: it describes what happens after the assessment (`days_to_resolution`). Not knowing it
  now is not an unknown; an absent future fact fails every test but `absent`, as in two-valued
  logic, and the action that needs it restates the label's conditional clause instead.
- `bounded`: a derived number with unreported parts carries a lower and an upper bound
  (`Interval`); a threshold that the lower bound meets is true, one only the upper bound meets is
  unknown.

`inputs` names the request paths a fact is read from: they are what `undetermined_by` and
`missing` report when the fact is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from aegrade import models

__all__ = ["CATALOGUES", "CHECKBOXES", "FactSpec", "FactType", "FactValue", "Interval", "Subject"]

FactType = Literal["number", "integer", "boolean", "enum"]
Subject = Literal["crs", "icans", "thrombosis", "blinatumomab"]


@dataclass(frozen=True)
class Interval:
    """A derived number known only within bounds: lo <= value <= hi (lo < hi)."""

    lo: float
    hi: float


FactValue = Union[bool, int, float, str, Interval]


@dataclass(frozen=True)
class FactSpec:
    """One fact: its type, its allowed values when an enum, what it means (with its unit), and the
    request paths it is read from."""

    type: FactType
    meaning: str
    values: tuple[str, ...] = field(default=())
    always_present: bool = False
    inputs: tuple[str, ...] = field(default=())
    future: bool = False
    bounded: bool = False


def _enum(literal: object, meaning: str, *, inputs: tuple[str, ...] = ()) -> FactSpec:
    return FactSpec("enum", meaning, tuple(literal.__args__), inputs=inputs)  # type: ignore[attr-defined]


def _known(type_: FactType, meaning: str) -> FactSpec:
    return FactSpec(type_, meaning, always_present=True)


CRS_FACTS: dict[str, FactSpec] = {
    "temperature_c": FactSpec(
        "number", "body temperature in degrees C (from vitals; F converted, rounded to 0.01)",
        inputs=("vitals.temperature_c",),
    ),
    "fever_masked": FactSpec(
        "boolean", "antipyretic or anticytokine therapy given for CRS (unknown when not reported)",
        inputs=("crs.fever_masked",),
    ),
    "fever_other_cause": _known("boolean", "the fever is explained by another cause (default false)"),
    "hypotension": FactSpec(
        "boolean", "hypotension as reported, or derived from vasopressors or from low vitals by age",
        inputs=("crs.hypotension",),
    ),
    "hypotension_by_vitals": FactSpec(
        "boolean", "the vitals are below the age threshold (absent when the vitals sent cannot decide)"
    ),
    "hypotension_from_vitals": FactSpec(
        "boolean", "hypotension was not reported and was derived true from the vitals (absent otherwise)"
    ),
    "hypotension_other_cause": _known("boolean", "hypotension explained by another cause (default false)"),
    "nonvasopressin_vasopressor_count": FactSpec(
        "integer", "number of distinct vasopressors other than vasopressin (unknown when no list is sent)",
        inputs=("crs.vasopressors",),
    ),
    "vasopressin": FactSpec("boolean", "vasopressin is running (unknown when no list is sent)", inputs=("crs.vasopressors",)),
    "oxygen_device": _enum(models.OxygenDevice, "oxygen delivery device", inputs=("crs.oxygen",)),
    "oxygen_flow_l_min": FactSpec("number", "oxygen flow in L/min", inputs=("crs.oxygen",)),
    "spo2_pct": FactSpec("number", "peripheral oxygen saturation, %", inputs=("vitals.spo2_pct",)),
    "hypoxia_other_cause": _known("boolean", "hypoxia explained by another cause (default false)"),
    "death_attributed": _known("boolean", "a clinician attributes death to CRS"),
    "ctcae_v4_grade3": FactSpec(
        "boolean", "a clinician finds the CTCAE v4.03 CRS grade 3 features", inputs=("crs.ctcae_v4_grade3",)
    ),
}

ICANS_FACTS: dict[str, FactSpec] = {
    "age_years": _known("number", "age in years"),
    "developmental_delay": _known("boolean", "baseline developmental delay"),
    "tool": FactSpec("enum", "encephalopathy tool that fits the patient", ("ICE", "CAPD"), always_present=True),
    "ice_score": FactSpec("integer", "ICE total, 0-10 (from items or as sent)", inputs=("neuro.ice_score",)),
    "capd_score": FactSpec("integer", "CAPD total, 0-32 (from items or as sent)", inputs=("neuro.capd_score",)),
    "unable_to_perform": _known("boolean", "cannot do ICE/CAPD because unarousable (default false)"),
    "consciousness": _enum(models.Consciousness, "level of consciousness", inputs=("neuro.consciousness",)),
    "consciousness_other_cause": FactSpec(
        "boolean", "depressed consciousness explained by sedation or another cause",
        inputs=("neuro.consciousness_other_cause",),
    ),
    "encephalopathy_other_cause": FactSpec(
        "boolean", "the ICE or CAPD finding is explained by another cause",
        inputs=("neuro.encephalopathy_other_cause",),
    ),
    "seizure": _enum(models.Seizure, "seizure", inputs=("neuro.seizure",)),
    "seizure_other_cause": FactSpec(
        "boolean", "the seizure is explained by another cause", inputs=("neuro.seizure_other_cause",)
    ),
    "motor": _enum(models.Motor, "motor findings", inputs=("neuro.motor",)),
    "motor_other_cause": FactSpec(
        "boolean", "the motor finding is explained by another cause", inputs=("neuro.motor_other_cause",)
    ),
    "cerebral_edema": _enum(models.CerebralEdema, "cerebral edema on neuroimaging", inputs=("neuro.cerebral_edema",)),
    "icp_sign_count": FactSpec(
        "integer", "number of distinct signs of raised intracranial pressure", inputs=("neuro.icp_signs",)
    ),
    "icp_other_cause": FactSpec(
        "boolean", "cerebral edema and ICP signs are explained by another cause", inputs=("neuro.icp_other_cause",)
    ),
    "intracranial_hemorrhage": _known(
        "boolean", "intracranial hemorrhage (neuro.intracranial_hemorrhage, or thrombosis.ich_present)"
    ),
    "thrombosis_seizure": FactSpec("boolean", "a seizure as the thrombosis section reports it (absent when not sent)"),
    "thrombosis_papilledema": FactSpec("boolean", "papilledema as the thrombosis section reports it (absent when not sent)"),
    "confirmed_thrombosis_site": _enum(
        models.ThrombosisSite, "imaging-confirmed thrombosis site (thrombosis section)",
        inputs=("thrombosis.confirmed_thrombosis_site",),
    ),
    "death_attributed": _known("boolean", "a clinician attributes death to ICANS"),
}

CHECKBOXES: frozenset[str] = frozenset(
    {
        "headache", "vomiting", "visual_disturbance", "seizure", "focal_deficit", "altered_consciousness",
        "papilledema", "abdominal_pain", "urticaria", "rash", "local_reaction", "bronchospasm", "hypotension",
        "angioedema",
    }
)
"""Symptoms and reaction features of the thrombosis section: checkboxes, so left out means absent."""


def _thrombosis_inputs() -> dict[str, FactSpec]:
    facts: dict[str, FactSpec] = {}
    for name, model_field in models.ThrombosisSection.model_fields.items():
        annotation = model_field.annotation
        args = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
        kind = args[0] if args else annotation
        meaning = model_field.description or name.replace("_", " ")
        inputs = (f"thrombosis.{name}",)
        if kind is bool:
            facts[name] = FactSpec("boolean", meaning, always_present=name in CHECKBOXES, inputs=inputs)
        elif kind is float:
            facts[name] = FactSpec("number", meaning, inputs=inputs)
        elif getattr(kind, "__origin__", None) is Literal:
            facts[name] = FactSpec("enum", meaning, tuple(getattr(kind, "__args__", ())), inputs=inputs)
    return facts


THROMBOSIS_FACTS: dict[str, FactSpec] = {
    **_thrombosis_inputs(),
    "on_blinatumomab": FactSpec(
        "boolean", "on blinatumomab (as sent, or implied by the blinatumomab section)",
        inputs=("thrombosis.on_blinatumomab",),
    ),
    "on_all_therapy": FactSpec(
        "boolean", "in any phase of ALL therapy (as sent, or implied by the blinatumomab section)",
        inputs=("thrombosis.on_all_therapy",),
    ),
    "age_years": _known("number", "age in years"),
    "asp_active": FactSpec(
        "boolean", "within the asparaginase exposure window (absent when it cannot be known)",
        inputs=("thrombosis.asparaginase_product", "thrombosis.days_since_last_asparaginase"),
    ),
    "neuro_red": FactSpec(
        "boolean", "seizure, focal deficit, altered consciousness or papilledema",
        inputs=("thrombosis.seizure", "thrombosis.focal_deficit", "thrombosis.altered_consciousness", "thrombosis.papilledema"),
    ),
    "neuro_soft": FactSpec(
        "boolean", "headache, vomiting or visual disturbance",
        inputs=("thrombosis.headache", "thrombosis.vomiting", "thrombosis.visual_disturbance"),
    ),
    "on_tx_lmwh": FactSpec(
        "boolean", "LMWH at treatment intent", inputs=("thrombosis.lmwh_agent", "thrombosis.lmwh_intent")
    ),
    "thrombophilia_count": FactSpec(
        "integer", "number of inherited thrombophilia traits", inputs=("thrombosis.thrombophilia_traits",)
    ),
    "mitchell2008_score": FactSpec(
        "integer", "Mitchell/BFM 2008 risk score, with bounds when parts are not reported (points from the rule file)",
        bounded=True,
        inputs=(
            "thrombosis.asparaginase_product", "thrombosis.days_since_last_asparaginase", "thrombosis.steroid",
            "thrombosis.cvc_present", "thrombosis.thrombophilia_traits", "thrombosis.family_history_vte",
        ),
    ),
    "enoxaparin_reference_mg_per_kg": _known("number", "reference initial treatment dose for age, mg/kg q12h"),
    "enoxaparin_dose_deviation_mg_per_kg": FactSpec(
        "number", "|dose - reference dose|, mg/kg", inputs=("thrombosis.enoxaparin_dose_mg_per_kg",)
    ),
}
for _name in ("seizure", "focal_deficit", "altered_consciousness", "papilledema", "ich_present"):
    # One fact, one place: read from the neuro section when it reports them.
    THROMBOSIS_FACTS[_name] = FactSpec(
        "boolean",
        THROMBOSIS_FACTS[_name].meaning + " (from neuro when it reports it)",
        always_present=_name in CHECKBOXES,
        inputs=(f"thrombosis.{_name}",),
    )

def _grade(meaning: str, inputs: tuple[str, ...]) -> FactSpec:
    return FactSpec("integer", meaning + ", bounded by grade and grade_max when incomplete", bounded=True, inputs=inputs)


BLINATUMOMAB_FACTS: dict[str, FactSpec] = {
    "age_years": _known("number", "age in years"),
    "crs_grade": _grade("ASTCT CRS grade of this assessment", ("crs",)),
    "crs_grade_ctcae_v4": _grade("CTCAE v4.03 CRS grade of this assessment", ("crs",)),
    "icans_grade": _grade("ASTCT ICANS grade of this assessment", ("neuro",)),
    "neuro_ctcae_grade": FactSpec(
        "integer", "the worst clinician-graded CTCAE neurological term of the label's list", inputs=("neuro.ctcae",)
    ),
    "crs_label_grade": _grade("the CRS grade the label actions read (setting label_grade_source)", ("crs",)),
    "neuro_label_grade": _grade(
        "the neurological toxicity grade the label actions read (setting label_grade_source)", ("neuro",)
    ),
    "weight_band": FactSpec("enum", "dosing band", ("fixed", "bsa", "unknown"), always_present=True),
    "bsa_m2": FactSpec("number", "body surface area, m2 (Mosteller)", inputs=("patient.height_cm", "patient.weight_kg")),
    "dose_value": FactSpec("number", "current dose, in dose_unit", inputs=("blinatumomab.dose",)),
    "dose_unit": FactSpec("enum", "unit of the current dose", ("mcg/day", "mcg/m2/day"), inputs=("blinatumomab.dose",)),
    "dose_at_low_step": FactSpec(
        "boolean",
        "the current dose is the low step of its weight band (9 mcg/day or 5 mcg/m2/day), compared in the band's unit",
        inputs=("blinatumomab.dose", "patient.height_cm"),
    ),
    "seizures_this_course": FactSpec(
        "integer", "seizures in this course", inputs=("blinatumomab.seizures_this_course",)
    ),
    "days_to_resolution": FactSpec(
        "number", "days the last grade >= 3 toxicity took to resolve (future: not known while it lasts)",
        future=True, inputs=("blinatumomab.days_to_resolution",),
    ),
    "recurred_after_restart": FactSpec(
        "boolean",
        "the same adverse reaction came back after a restart (future at a first event: the action restates the "
        "label's 'if it recurs' clause)",
        future=True, inputs=("blinatumomab.recurred_after_restart",),
    ),
}

CATALOGUES: dict[Subject, dict[str, FactSpec]] = {
    "crs": CRS_FACTS,
    "icans": ICANS_FACTS,
    "thrombosis": THROMBOSIS_FACTS,
    "blinatumomab": BLINATUMOMAB_FACTS,
}
