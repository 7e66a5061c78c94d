"""The code tables of the FHIR R4 mapping: which coded Observation or MedicationAdministration fills
which Assessment field, in which unit. Tables only; the mapping itself is aegrade/fhir.py.

Every code here was checked against a public source before it was written (LOINC and UCUM as
named in issue 7 and the FHIR vital-signs profile; RxNorm ingredient codes and SNOMED CT device
codes in public value sets). A code that could not be checked is not listed: a device or a drug
that is not recognised is never guessed (a device is a 422, an unrecognised drug is listed as
ignored in the answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from aegrade.models import CerebralEdema, Consciousness, IcpSign, Motor, OxygenDevice, Seizure, Vasopressor

__all__ = [
    "AEGRADE_SYSTEM",
    "DEVICE_TEXT",
    "LOINC",
    "MASKING_RXNORM",
    "OWN_CODES",
    "QUANTITIES",
    "RXNORM",
    "RXNORM_AGENTS",
    "SNOMED",
    "SNOMED_DEVICES",
    "UCUM",
    "VASOPRESSORS",
    "VASOPRESSOR_RXNORM",
    "AGENT_NAMES",
    "OwnCode",
    "QuantityKind",
]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
AEGRADE_SYSTEM = "http://aegrade.org/fhir/CodeSystem/assessment"
"""Our own CodeSystem, for the assessment items that have no LOINC code here (ICE and CAPD items,
the ICANS findings, CRS judgements). An identifier, not a web address: the CodeSystem resource
itself is served at GET /v1/fhir/CodeSystem/assessment."""


@dataclass(frozen=True)
class QuantityKind:
    """One kind of measured value. `units` maps a UCUM code to the Assessment field it fills and
    the factor to that field's unit; `field` None means recorded but not graded."""

    kind: str
    display: str
    units: dict[str, tuple[str | None, float]]
    note: str = ""

    def canonical(self, unit: str, value: float) -> float:
        """The value in the first unit's terms, to compare two readings of one kind."""
        if self.kind == "temperature" and unit == "[degF]":
            return (value - 32) * 5 / 9
        return value * self.units[unit][1]


_TEMPERATURE = QuantityKind(
    "temperature", "Body temperature", {"Cel": ("vitals.temperature_c", 1.0), "[degF]": ("vitals.temperature_f", 1.0)}
)
_SPO2 = QuantityKind("spo2", "Oxygen saturation (SpO2)", {"%": ("vitals.spo2_pct", 1.0)})

QUANTITIES: dict[str, QuantityKind] = {
    "8310-5": _TEMPERATURE,
    "8480-6": QuantityKind("sbp", "Systolic blood pressure", {"mm[Hg]": ("vitals.sbp_mmhg", 1.0)}),
    "8462-4": QuantityKind("dbp", "Diastolic blood pressure", {"mm[Hg]": ("vitals.dbp_mmhg", 1.0)}),
    "8478-0": QuantityKind("map", "Mean arterial pressure", {"mm[Hg]": ("vitals.map_mmhg", 1.0)}),
    "8867-4": QuantityKind(
        "heart_rate", "Heart rate", {"/min": ("vitals.heart_rate_bpm", 1.0), "{beats}/min": ("vitals.heart_rate_bpm", 1.0)}
    ),
    "9279-1": QuantityKind(
        "respiratory_rate",
        "Respiratory rate",
        {"/min": ("vitals.respiratory_rate", 1.0), "{breaths}/min": ("vitals.respiratory_rate", 1.0)},
    ),
    "2708-6": _SPO2,
    "59408-5": _SPO2,
    "3151-8": QuantityKind("oxygen_flow", "Inhaled oxygen flow rate", {"L/min": ("crs.oxygen.flow_l_min", 1.0)}),
    "3150-0": QuantityKind(
        "fio2",
        "Inhaled oxygen concentration (FiO2)",
        {"%": (None, 1.0)},
        note="recorded, not graded: ASTCT 2019 grades hypoxia by the oxygen device and flow, not FiO2 "
        "(crs-icans-research.md §1.1, §4).",
    ),
    "29463-7": QuantityKind(
        "weight", "Body weight", {"kg": ("patient.weight_kg", 1.0), "g": ("patient.weight_kg", 0.001), "[lb_av]": ("patient.weight_kg", 0.45359237)}
    ),
}
"""LOINC code -> kind. The blood-pressure panel 85354-9 is read through its components."""


@dataclass(frozen=True)
class OwnCode:
    """A code of AEGRADE_SYSTEM: the field it fills and the value[x] it takes."""

    field: str
    value: str  # "integer", "boolean" or "code"
    display: str
    codes: tuple[str, ...] = ()


def _coded(field: str, display: str, literal: object) -> OwnCode:
    return OwnCode(field, "code", display, tuple(str(a) for a in get_args(literal)))


OWN_CODES: dict[str, OwnCode] = {
    "developmental-delay": OwnCode("patient.developmental_delay", "boolean", "Baseline developmental delay"),
    "fever-masked": OwnCode("crs.fever_masked", "boolean", "Antipyretic or anticytokine therapy given for CRS"),
    "crs-hypotension": OwnCode("crs.hypotension", "boolean", "Hypotension attributable to CRS (fluids or vasopressors needed)"),
    "hypotension-other-cause": OwnCode("crs.hypotension_other_cause", "boolean", "Hypotension explained by another cause"),
    "hypoxia-other-cause": OwnCode("crs.hypoxia_other_cause", "boolean", "Hypoxia explained by another cause"),
    "crs-death-attributed": OwnCode("crs.death_attributed", "boolean", "Death attributed to CRS"),
    "oxygen-device": _coded("crs.oxygen.device", "Oxygen delivery device", OxygenDevice),
    "ice-orientation": OwnCode("neuro.ice.orientation", "integer", "ICE orientation (0-4)"),
    "ice-naming": OwnCode("neuro.ice.naming", "integer", "ICE naming (0-3)"),
    "ice-commands": OwnCode("neuro.ice.commands", "integer", "ICE following commands (0-1)"),
    "ice-writing": OwnCode("neuro.ice.writing", "integer", "ICE writing (0-1)"),
    "ice-attention": OwnCode("neuro.ice.attention", "integer", "ICE attention (0-1)"),
    "ice-total": OwnCode("neuro.ice_score", "integer", "ICE total (0-10)"),
    **{
        f"capd-item-{n}": OwnCode(f"neuro.capd.{n - 1}", "integer", f"CAPD item {n} (0-4, items 1-4 in reversed scoring)")
        for n in range(1, 9)
    },
    "capd-total": OwnCode("neuro.capd_score", "integer", "CAPD total (0-32)"),
    "unable-to-perform": OwnCode("neuro.unable_to_perform", "boolean", "Unable to perform ICE/CAPD (unarousable)"),
    "consciousness": _coded("neuro.consciousness", "Level of consciousness", Consciousness),
    "consciousness-other-cause": OwnCode(
        "neuro.consciousness_other_cause", "boolean", "Depressed consciousness explained by medication or another cause"
    ),
    "seizure": _coded("neuro.seizure", "Seizure", Seizure),
    "motor": _coded("neuro.motor", "Motor findings", Motor),
    "cerebral-edema": _coded("neuro.cerebral_edema", "Cerebral edema on neuroimaging", CerebralEdema),
    **{
        f"icp-{sign.replace('_', '-')}": OwnCode(f"neuro.icp_signs.{sign}", "boolean", f"Raised ICP sign: {sign}")
        for sign in get_args(IcpSign)
    },
    "intracranial-hemorrhage": OwnCode("neuro.intracranial_hemorrhage", "boolean", "Intracranial hemorrhage"),
    "icans-death-attributed": OwnCode("neuro.death_attributed", "boolean", "Death attributed to ICANS"),
}

SNOMED_DEVICES: dict[str, str] = {
    "336623009": "nasal_cannula",  # Oxygen nasal cannula (physical object)
    "426854004": "high_flow_nasal_cannula",  # High flow oxygen nasal cannula (physical object)
}
"""SNOMED CT device codes checked against public value sets. Other devices: our own codes or text."""

DEVICE_TEXT: dict[str, str] = {
    **{device.replace("_", " "): device for device in get_args(OxygenDevice)},
    "room air": "none",
    "nasal cannula": "nasal_cannula",
    "low flow nasal cannula": "nasal_cannula",
    "high flow nasal cannula": "high_flow_nasal_cannula",
    "hfnc": "high_flow_nasal_cannula",
    "blow-by": "blow_by",
    "simple face mask": "simple_facemask",
    "face mask": "simple_facemask",
    "non-rebreather mask": "nonrebreather",
    "nonrebreather mask": "nonrebreather",
    "venturi mask": "venturi",
    "mechanical ventilator": "mechanical_ventilation",
}
"""Device text, compared whole after lower-casing and collapsing spaces: never a substring match."""

VASOPRESSOR_RXNORM: dict[str, Vasopressor] = {
    "7512": "norepinephrine",
    "3992": "epinephrine",
    "8163": "phenylephrine",
    "3628": "dopamine",
    "11149": "vasopressin",
}
MASKING_RXNORM: dict[str, str] = {
    "612865": "tocilizumab",
    "72435": "anakinra",
    "3264": "dexamethasone",
    "6902": "methylprednisolone",
    "5492": "hydrocortisone",
    "8640": "other_corticosteroid",  # prednisone
    "8638": "other_corticosteroid",  # prednisolone
    "161": "acetaminophen",
    "5640": "ibuprofen",
}
RXNORM_AGENTS: dict[str, str] = {**VASOPRESSOR_RXNORM, **MASKING_RXNORM}
"""RxNorm ingredient codes (RxCUI). A product-level RxCUI is not recognised: send the ingredient."""

AGENT_NAMES: dict[str, str] = {
    "norepinephrine": "norepinephrine",
    "noradrenaline": "norepinephrine",
    "epinephrine": "epinephrine",
    "adrenaline": "epinephrine",
    "phenylephrine": "phenylephrine",
    "dopamine": "dopamine",
    "vasopressin": "vasopressin",
    "tocilizumab": "tocilizumab",
    "anakinra": "anakinra",
    "dexamethasone": "dexamethasone",
    "methylprednisolone": "methylprednisolone",
    "hydrocortisone": "hydrocortisone",
    "prednisone": "other_corticosteroid",
    "prednisolone": "other_corticosteroid",
    "acetaminophen": "acetaminophen",
    "paracetamol": "acetaminophen",
    "ibuprofen": "ibuprofen",
}
"""Ingredient names, matched as whole words in the medication's text or display."""

VASOPRESSORS = frozenset(get_args(Vasopressor))

# ---- MedicationAdministration.reasonCode (fever masking, README: FHIR R4 input) ---------------
# Matched as words in reasonCode.text and coding.display (lower case, letters only). No SNOMED CT or
# ICD-10-CM code for cytokine release syndrome could be confirmed from a stored source while this
# was written, so codes are not matched: the text is.
CRS_REASON_TEXT: tuple[str, ...] = ("cytokine release",)
"""A reason naming cytokine release syndrome: the administration treats CRS, so it masks fever."""
PREMEDICATION_TEXT: tuple[str, ...] = ("premedication", "pre medication", "premed", "prophylaxis", "prophylactic")
"""A reason naming premedication or prophylaxis: never masks fever (e.g. blinatumomab's dexamethasone)."""
