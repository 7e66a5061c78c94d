"""The facts each rule set may test, with their types and units.

`aegrade.derive` turns an Assessment into these flat facts; rule files name them in their
conditions. The rule-file loader refuses a condition on a fact that is not listed here, a value of
the wrong type and an enum value that does not exist, so that a misspelling can never make a rule
silently never fire. A fact that was not reported is absent from the facts: conditions see it as
missing, never as zero or false.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from aegrade import models

__all__ = ["CATALOGUES", "CHECKBOXES", "FactSpec", "FactType", "Subject"]

FactType = Literal["number", "integer", "boolean", "enum"]
Subject = Literal["crs", "icans", "thrombosis", "blinatumomab"]


@dataclass(frozen=True)
class FactSpec:
    """One fact: its type, its allowed values when an enum, and what it means (with its unit)."""

    type: FactType
    meaning: str
    values: tuple[str, ...] = field(default=())
    always_present: bool = False


def _enum(literal: object, meaning: str, *, always_present: bool = False) -> FactSpec:
    return FactSpec("enum", meaning, tuple(literal.__args__), always_present)  # type: ignore[attr-defined]


CRS_FACTS: dict[str, FactSpec] = {
    "temperature_c": FactSpec("number", "body temperature in degrees C (from vitals; F converted, rounded to 0.01)"),
    "fever_masked": FactSpec(
        "boolean", "antipyretic or anticytokine therapy given for CRS (false when not reported)", always_present=True
    ),
    "hypotension": FactSpec("boolean", "hypotension as reported, or derived from vasopressors or vitals by age"),
    "hypotension_other_cause": FactSpec("boolean", "hypotension explained by another cause", always_present=True),
    "vasopressors_reported": FactSpec("boolean", "the vasopressor list was sent", always_present=True),
    "nonvasopressin_vasopressor_count": FactSpec(
        "integer", "number of distinct vasopressors other than vasopressin (0 when none or not reported)",
        always_present=True,
    ),
    "vasopressin": FactSpec("boolean", "vasopressin is running", always_present=True),
    "oxygen_device": _enum(models.OxygenDevice, "oxygen delivery device"),
    "oxygen_flow_l_min": FactSpec("number", "oxygen flow in L/min"),
    "hypoxia_other_cause": FactSpec("boolean", "hypoxia explained by another cause", always_present=True),
    "death_attributed": FactSpec("boolean", "a clinician attributes death to CRS", always_present=True),
}

ICANS_FACTS: dict[str, FactSpec] = {
    "age_years": FactSpec("number", "age in years", always_present=True),
    "developmental_delay": FactSpec("boolean", "baseline developmental delay", always_present=True),
    "tool": FactSpec("enum", "encephalopathy tool that fits the patient", ("ICE", "CAPD"), always_present=True),
    "ice_score": FactSpec("integer", "ICE total, 0-10 (from items or as sent)"),
    "capd_score": FactSpec("integer", "CAPD total, 0-32 (from items or as sent)"),
    "unable_to_perform": FactSpec("boolean", "cannot do ICE/CAPD because unarousable", always_present=True),
    "consciousness": _enum(models.Consciousness, "level of consciousness"),
    "consciousness_other_cause": FactSpec(
        "boolean", "depressed consciousness explained by sedation or another cause", always_present=True
    ),
    "seizure": _enum(models.Seizure, "seizure"),
    "motor": _enum(models.Motor, "motor findings"),
    "cerebral_edema": _enum(models.CerebralEdema, "cerebral edema on neuroimaging"),
    "icp_sign_count": FactSpec("integer", "number of distinct signs of raised intracranial pressure"),
    "intracranial_hemorrhage": FactSpec("boolean", "intracranial hemorrhage", always_present=True),
    "death_attributed": FactSpec("boolean", "a clinician attributes death to ICANS", always_present=True),
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
        if kind is bool:
            facts[name] = FactSpec("boolean", meaning, always_present=name in CHECKBOXES)
        elif kind is float:
            facts[name] = FactSpec("number", meaning)
        elif getattr(kind, "__origin__", None) is Literal:
            facts[name] = FactSpec("enum", meaning, tuple(getattr(kind, "__args__", ())))
    return facts


THROMBOSIS_FACTS: dict[str, FactSpec] = {
    **_thrombosis_inputs(),
    "on_blinatumomab": FactSpec("boolean", "on blinatumomab (as sent, or implied by the blinatumomab section)"),
    "age_years": FactSpec("number", "age in years", always_present=True),
    "asp_active": FactSpec("boolean", "within the asparaginase exposure window (absent when it cannot be known)"),
    "neuro_red": FactSpec("boolean", "seizure, focal deficit, altered consciousness or papilledema", always_present=True),
    "neuro_soft": FactSpec("boolean", "headache, vomiting or visual disturbance", always_present=True),
    "on_tx_lmwh": FactSpec("boolean", "LMWH at treatment intent", always_present=True),
    "thrombophilia_count": FactSpec("integer", "number of inherited thrombophilia traits"),
    "mitchell2008_score": FactSpec("integer", "Mitchell/BFM 2008 risk score (weights from the rule file)"),
    "enoxaparin_reference_mg_per_kg": FactSpec("number", "reference initial treatment dose for age, mg/kg q12h"),
    "enoxaparin_dose_deviation_mg_per_kg": FactSpec("number", "|dose - reference dose|, mg/kg"),
}

BLINATUMOMAB_FACTS: dict[str, FactSpec] = {
    "age_years": FactSpec("number", "age in years", always_present=True),
    "crs_grade": FactSpec("integer", "ASTCT CRS grade of this assessment (absent when not graded)"),
    "icans_grade": FactSpec("integer", "ASTCT ICANS grade of this assessment (absent when not graded)"),
    "weight_band": FactSpec("enum", "dosing band", ("fixed", "bsa", "unknown"), always_present=True),
    "dose_value": FactSpec("number", "current dose, in dose_unit"),
    "dose_unit": FactSpec("enum", "unit of the current dose", ("mcg/day", "mcg/m2/day")),
    "dose_at_low_step": FactSpec("boolean", "the current dose is the low step (9 mcg/day or 5 mcg/m2/day)"),
    "seizures_this_course": FactSpec("integer", "seizures in this course"),
    "days_to_resolution": FactSpec("number", "days the last grade >= 3 toxicity took to resolve"),
}

CATALOGUES: dict[Subject, dict[str, FactSpec]] = {
    "crs": CRS_FACTS,
    "icans": ICANS_FACTS,
    "thrombosis": THROMBOSIS_FACTS,
    "blinatumomab": BLINATUMOMAB_FACTS,
}
