"""The code tables of the FHIR R4 mapping: which coded Observation or medication resource fills
which Assessment field, in which unit. Tables only; the mapping itself is aegrade/fhir.py.

The LOINC quantities and our own CodeSystem are declared here. The terminology EHRs chart with
(oxygen devices by SNOMED CT, LOINC or flowsheet text; RxNorm ingredients, ingredient and brand
names; blood-pressure methods; the words and codes of administration reasons) and the rule for
simultaneous values are data: aegrade/terminology/fhir-terms.yaml, each entry with its source,
loaded and checked here once (a malformed file is an error at import, never a wrong reading).

Every code was checked against a public source before it was written. A code that could not be
checked is not listed: a device or a drug that is not recognised is never guessed (the resource is
listed as ignored in the answer).

Codes are compared exactly. Words are compared after lower-casing ASCII letters only (`fold`): no
casefold() and no Unicode compatibility folding, which would read the Kelvin sign as a k.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field

from aegrade.episodes import default_fever_masking
from aegrade.models import CerebralEdema, Consciousness, IcpSign, Motor, OxygenDevice, Seizure, Vasopressor

__all__ = [
    "AEGRADE_SYSTEM",
    "BP_METHOD",
    "DEVICE_OBSERVATION_CODES",
    "TERMS_PATH",
    "Terms",
    "fold",
    "terms",
    "words_of",
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
    **{code: QuantityKind("sbp", "Systolic blood pressure", {"mm[Hg]": ("vitals.sbp_mmhg", 1.0)}) for code in ("76215-3", "76534-7")},
    **{code: QuantityKind("dbp", "Diastolic blood pressure", {"mm[Hg]": ("vitals.dbp_mmhg", 1.0)}) for code in ("76213-8", "76535-4")},
    **{code: QuantityKind("map", "Mean arterial pressure", {"mm[Hg]": ("vitals.map_mmhg", 1.0)}) for code in ("76214-6", "76536-2")},
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
"""LOINC code -> kind. The blood-pressure panel 85354-9 is read through its components; the invasive
and non-invasive blood-pressure codes are those of fhir-terms.yaml (blood_pressure_methods)."""


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


# ---- the terminology data file ------------------------------------------------------------------

TERMS_PATH = Path(__file__).resolve().parent / "terminology" / "fhir-terms.yaml"


class _Terms(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _SnomedDevice(_Terms):
    code: str
    display: str
    device: OxygenDevice
    source: str = Field(min_length=1)


class _CodeRef(_Terms):
    system: str
    code: str
    display: str = ""
    source: str = ""


class _TextTerms(_Terms):
    source: str = Field(min_length=1)
    terms: dict[str, OxygenDevice]


class _OxygenDevices(_Terms):
    snomed: list[_SnomedDevice]
    observation_codes: list[_CodeRef] = Field(min_length=1)
    text: _TextTerms


class _BpMethods(_Terms):
    source: str = Field(min_length=1)
    invasive: dict[str, Literal["sbp", "dbp", "map"]]
    noninvasive: dict[str, Literal["sbp", "dbp", "map"]]


class SimultaneousValues(_Terms):
    """The rule for two different values of one kind at one time (README: FHIR R4 input)."""

    criterion: str
    citation: str
    evidence_level: Literal["LOCAL"]
    worse: dict[str, Literal["higher", "lower"]]
    max_listed: int = Field(ge=1, le=1000)


class _AgentTable(_Terms):
    source: str = Field(min_length=1)
    codes: dict[str, str] = Field(default_factory=dict)
    terms: dict[str, str] = Field(default_factory=dict)


class _Medications(_Terms):
    rxnorm: _AgentTable
    names: _AgentTable
    brands: _AgentTable


class Terms(_Terms):
    """aegrade/terminology/fhir-terms.yaml, checked."""

    version: str
    oxygen_devices: _OxygenDevices
    blood_pressure_methods: _BpMethods
    simultaneous_values: SimultaneousValues
    medications: _Medications


@cache
def terms() -> Terms:
    """The terminology file, read and checked once."""
    return Terms.model_validate(yaml.safe_load(TERMS_PATH.read_text(encoding="utf-8")))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """Free text for comparison: ASCII letters lower-cased, runs of white space made one space. No
    other character is changed (the Kelvin sign stays a Kelvin sign, a full-width letter stays
    full-width), so no character is read as a letter it only resembles."""
    return " ".join(text.translate(_ASCII_LOWER).split())


def words_of(text: str) -> str:
    """The words of free text, for whole-word matching: fold(), then every run of characters other
    than letters, digits and the hyphen made one space, padded with a space at each end; then the same
    with hyphens read as spaces (so "Neo-Synephrine" and "norepinephrine-in-dextrose" both match).
    A term matches when " term " is in it."""
    words = " ".join(re.findall(r"[\w-]+", fold(text)))
    return f" {words} | {' '.join(words.replace('-', ' ').split())} "


def _agents(table: dict[str, str]) -> dict[str, str]:
    """`table`, checked: every agent it names is a vasopressor of the request schema or a
    fever-masking agent of the CRS rule file (derivations.fever_masking)."""
    known = set(get_args(Vasopressor)) | default_fever_masking().all_agents
    unknown = sorted(set(table.values()) - known)
    if unknown:
        raise ValueError(f"{TERMS_PATH}: unknown agents {unknown}")
    return dict(table)


_T = terms()
SNOMED_DEVICES: dict[str, str] = {d.code: d.device for d in _T.oxygen_devices.snomed}
"""SNOMED CT device code -> oxygen_device (fhir-terms.yaml)."""
DEVICE_OBSERVATION_CODES: frozenset[tuple[str, str]] = frozenset((c.system, c.code) for c in _T.oxygen_devices.observation_codes)
"""Observation codes whose value is the oxygen device."""
DEVICE_TEXT: dict[str, str] = {
    **{device.replace("_", " "): device for device in get_args(OxygenDevice)},
    **{fold(text): device for text, device in _T.oxygen_devices.text.terms.items()},
}
"""Device text, compared whole after fold(): never a substring match."""
BP_METHOD: dict[str, str] = {
    **{code: "invasive" for code in _T.blood_pressure_methods.invasive},
    **{code: "noninvasive" for code in _T.blood_pressure_methods.noninvasive},
}
"""LOINC blood-pressure code -> how it was measured (codes not listed name no method)."""

RXNORM_AGENTS: dict[str, str] = _agents(_T.medications.rxnorm.codes)
"""RxNorm ingredient codes (RxCUI). A product-level RxCUI is not recognised: send the ingredient."""
VASOPRESSOR_RXNORM: dict[str, str] = {code: agent for code, agent in RXNORM_AGENTS.items() if agent in get_args(Vasopressor)}
MASKING_RXNORM: dict[str, str] = {code: agent for code, agent in RXNORM_AGENTS.items() if code not in VASOPRESSOR_RXNORM}
AGENT_NAMES: dict[str, str] = {fold(name): agent for name, agent in {**_agents(_T.medications.names.terms), **_agents(_T.medications.brands.terms)}.items()}
"""Ingredient and brand names, matched as whole words (words_of) in text and display."""

VASOPRESSORS = frozenset(get_args(Vasopressor))
