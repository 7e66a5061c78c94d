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

__all__ = ["CATALOGUES", "FactSpec", "FactType", "Subject"]

FactType = Literal["number", "integer", "boolean", "enum"]
Subject = Literal["crs", "icans"]


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

CATALOGUES: dict[Subject, dict[str, FactSpec]] = {"crs": CRS_FACTS, "icans": ICANS_FACTS}
