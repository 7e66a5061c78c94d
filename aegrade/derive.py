"""Derived facts: from one Assessment to the flat facts that rule conditions test.

Only conversions and bookkeeping happen here: degrees F to C, item scores to totals, vasopressor
lists to counts, which encephalopathy tool fits the patient, and hypotension from vitals by age.
Every clinical number used (the age cut-off, the blood-pressure bands) comes from the rule file and
its settings; Python does not know what a fever is.

A value that was not reported is left out of the facts. Each derivation that the engine makes on
the patient's behalf is said in `notes` and shown in the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from aegrade.facts import CHECKBOXES, THROMBOSIS_FACTS
from aegrade.models import Assessment, CrsSection, NeuroSection, Patient, ThrombosisSection, Vitals
from aegrade.reference import compiled
from aegrade.rulefile import HypotensionFromVitals, LoadedRuleSet, SbpFormula, Scalar

__all__ = [
    "DAYS_PER_YEAR",
    "DerivedFacts",
    "crs_facts",
    "encephalopathy_tool",
    "fahrenheit_to_celsius",
    "hypotension_from_vitals",
    "blinatumomab_facts",
    "icans_facts",
    "thrombosis_facts",
]

DAYS_PER_YEAR = 365.25
"""Converts fractional age in years to days (for the neonatal band)."""

Tool = Literal["ICE", "CAPD"]


@dataclass
class DerivedFacts:
    """Facts for the evaluators, values to show as evidence, and what was derived, in words."""

    facts: dict[str, Scalar]
    context: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fahrenheit_to_celsius(temperature_f: float) -> float:
    """Degrees F to degrees C, rounded half-up to 0.01 (api-v1: 100.4 F is exactly 38.00 C)."""
    celsius = (Decimal(repr(temperature_f)) - 32) * 5 / 9
    return float(celsius.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


# ----------------------------------------------------------------------------------------------
# CRS
# ----------------------------------------------------------------------------------------------


def crs_facts(assessment: Assessment, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> DerivedFacts:
    """The facts of the CRS rule set. Call only when vitals or crs were sent."""
    vitals = assessment.vitals or Vitals()
    crs = assessment.crs or CrsSection()
    out = DerivedFacts(facts={})
    facts = out.facts

    if vitals.temperature_c is not None:
        facts["temperature_c"] = vitals.temperature_c
        out.context["temperature_sent"] = {"temperature_c": vitals.temperature_c}
    elif vitals.temperature_f is not None:
        facts["temperature_c"] = fahrenheit_to_celsius(vitals.temperature_f)
        out.context["temperature_sent"] = {
            "temperature_f": vitals.temperature_f,
            "converted_temperature_c": facts["temperature_c"],
        }

    facts["fever_masked"] = bool(crs.fever_masked)
    if crs.fever_masked is None:
        out.notes.append(
            "fever_masked was not reported: taken as false (no antipyretic or anticytokine therapy given for CRS)."
        )

    agents = list(crs.vasopressors or [])
    facts["vasopressors_reported"] = crs.vasopressors is not None
    facts["nonvasopressin_vasopressor_count"] = sum(1 for a in agents if a != "vasopressin")
    facts["vasopressin"] = "vasopressin" in agents
    out.context["vasopressors"] = sorted(agents) if crs.vasopressors is not None else None

    spec = ruleset.file.derivations.hypotension_from_vitals
    from_vitals = (
        hypotension_from_vitals(
            age_years=assessment.patient.age_years,
            sbp_mmhg=vitals.sbp_mmhg,
            map_mmhg=vitals.map_mmhg,
            spec=spec,
            settings=settings,
        )
        if spec is not None
        else None
    )
    if crs.hypotension is not None:
        facts["hypotension"] = crs.hypotension
        out.context["hypotension_source"] = "reported"
        if crs.hypotension is False and from_vitals is not None and from_vitals[0]:
            out.notes.append(
                f"hypotension was reported false, but the vitals are below the age threshold ({from_vitals[1]}). "
                "The reported value was used."
            )
    elif agents:
        facts["hypotension"] = True
        out.context["hypotension_source"] = "vasopressors"
        out.notes.append("hypotension was not reported: derived true because a vasopressor is running.")
    elif from_vitals is not None:
        facts["hypotension"] = from_vitals[0]
        out.context["hypotension_source"] = "vitals"
        out.context["hypotension_threshold"] = from_vitals[1]
        out.notes.append(
            f"hypotension was not reported: derived {str(from_vitals[0]).lower()} from vitals ({from_vitals[1]}). "
            "ASTCT grades hypotension by the treatment it needs: confirm that fluids were needed."
        )

    facts["hypotension_other_cause"] = crs.hypotension_other_cause
    facts["hypoxia_other_cause"] = crs.hypoxia_other_cause
    facts["death_attributed"] = crs.death_attributed

    if crs.oxygen is not None:
        facts["oxygen_device"] = crs.oxygen.device
        if crs.oxygen.flow_l_min is not None:
            facts["oxygen_flow_l_min"] = crs.oxygen.flow_l_min
        out.context["oxygen"] = crs.oxygen.model_dump(exclude_none=True)
    elif vitals.spo2_pct is not None:
        out.notes.append(
            "SpO2 was reported but oxygen support was not: ASTCT grades hypoxia by the support it needs."
        )
    return out


def hypotension_from_vitals(
    *,
    age_years: float,
    sbp_mmhg: float | None,
    map_mmhg: float | None,
    spec: HypotensionFromVitals,
    settings: Mapping[str, Scalar],
) -> tuple[bool, str] | None:
    """Whether the vitals are below the age threshold, and the threshold used, in words.

    None when the vitals sent cannot decide it (no SBP, and no MAP at an age where MAP applies).
    """
    band = next(
        b
        for b in spec.bands
        if (b.age_days_at_most is None or age_years * DAYS_PER_YEAR <= b.age_days_at_most)
        and (b.age_years_below is None or age_years < b.age_years_below)
    )
    findings: list[str] = []
    low: list[bool] = []
    if sbp_mmhg is not None:
        if not isinstance(band.sbp_below_mmhg, SbpFormula):
            threshold = float(band.sbp_below_mmhg)
            how = f"{band.label}"
        else:
            years = math.floor(age_years)
            formula = band.sbp_below_mmhg
            threshold = formula.base_mmhg + formula.per_completed_year_mmhg * years
            how = f"{band.label}: {formula.base_mmhg:g} + {formula.per_completed_year_mmhg:g} x {years} y"
        low.append(sbp_mmhg < threshold)
        sign = "<" if low[-1] else ">="
        findings.append(f"SBP {sbp_mmhg:g} {sign} {threshold:g} mmHg [{how}; {band.evidence_level}]")
    if spec.map is not None and map_mmhg is not None and age_years >= float(settings[spec.map.from_age_setting]):
        low.append(map_mmhg < spec.map.below_mmhg)
        sign = "<" if low[-1] else ">="
        findings.append(
            f"MAP {map_mmhg:g} {sign} {spec.map.below_mmhg:g} mmHg [from age "
            f"{float(settings[spec.map.from_age_setting]):g} y, setting {spec.map.from_age_setting}; "
            f"{spec.map.evidence_level}]"
        )
    if not low:
        return None
    return any(low), "; ".join(findings)


# ----------------------------------------------------------------------------------------------
# ICANS
# ----------------------------------------------------------------------------------------------


def encephalopathy_tool(patient: Patient, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> tuple[Tool, str]:
    """ICE or CAPD for this patient, with the reason in words."""
    spec = ruleset.file.derivations.encephalopathy_tool
    if spec is None:
        raise ValueError(f"{ruleset.label} declares no encephalopathy_tool derivation")
    cutoff = float(settings[spec.capd_below_age_setting])
    if spec.capd_with_developmental_delay and patient.developmental_delay:
        return "CAPD", "CAPD: baseline developmental delay"
    if patient.age_years < cutoff:
        return "CAPD", f"CAPD: age {patient.age_years:g} y is below {cutoff:g} y (setting {spec.capd_below_age_setting})"
    return "ICE", f"ICE: age {patient.age_years:g} y is {cutoff:g} y or more (setting {spec.capd_below_age_setting})"


def ice_total(neuro: NeuroSection) -> int | None:
    if neuro.ice is not None:
        i = neuro.ice
        return i.orientation + i.naming + i.commands + i.writing + i.attention
    return neuro.ice_score


def capd_total(neuro: NeuroSection) -> int | None:
    if neuro.capd is not None:
        return sum(neuro.capd)
    return neuro.capd_score


def icans_facts(assessment: Assessment, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> DerivedFacts:
    """The facts of the ICANS rule set. Call only when neuro was sent."""
    neuro = assessment.neuro or NeuroSection()
    patient = assessment.patient
    tool, reason = encephalopathy_tool(patient, ruleset, settings)
    out = DerivedFacts(facts={})
    facts = out.facts
    facts["age_years"] = patient.age_years
    facts["developmental_delay"] = patient.developmental_delay
    facts["tool"] = tool
    out.context["tool_reason"] = reason

    ice = ice_total(neuro)
    if ice is not None:
        facts["ice_score"] = ice
        if neuro.ice is not None:
            out.context["ice_items"] = neuro.ice.model_dump()
    capd = capd_total(neuro)
    if capd is not None:
        facts["capd_score"] = capd
        if neuro.capd is not None:
            out.context["capd_items"] = list(neuro.capd)

    facts["unable_to_perform"] = neuro.unable_to_perform
    facts["consciousness_other_cause"] = neuro.consciousness_other_cause
    facts["intracranial_hemorrhage"] = neuro.intracranial_hemorrhage
    facts["death_attributed"] = neuro.death_attributed
    for name in ("consciousness", "seizure", "motor", "cerebral_edema"):
        value = getattr(neuro, name)
        if value is not None:
            facts[name] = value
    if neuro.icp_signs is not None:
        facts["icp_sign_count"] = len(neuro.icp_signs)
        out.context["icp_signs"] = sorted(neuro.icp_signs)
    return out


# ----------------------------------------------------------------------------------------------
# Asparaginase and thrombosis
# ----------------------------------------------------------------------------------------------


def _apply_derived_booleans(out: DerivedFacts, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> None:
    for derived in ruleset.file.derivations.booleans:
        out.facts[derived.fact] = compiled(derived.when)(out.facts, settings)


def thrombosis_facts(assessment: Assessment, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> DerivedFacts:
    """The facts of the thrombosis flag rule set. Call only when the thrombosis section was sent."""
    section = assessment.thrombosis or ThrombosisSection()
    out = DerivedFacts(facts={"age_years": assessment.patient.age_years})
    facts = out.facts
    for name in ThrombosisSection.model_fields:
        if name not in THROMBOSIS_FACTS:
            continue
        value = getattr(section, name)
        if name in CHECKBOXES:
            facts[name] = bool(value)
        elif value is not None:
            facts[name] = value
    if assessment.blinatumomab is not None:
        facts["on_blinatumomab"] = True
    traits = section.thrombophilia_traits
    if traits is not None:
        facts["thrombophilia_count"] = len(traits)
        out.context["thrombophilia_traits"] = sorted(traits)

    exposure = ruleset.file.derivations.asparaginase_exposure
    if exposure is not None:
        product, days = section.asparaginase_product, section.days_since_last_asparaginase
        if product is None:
            facts["asp_active"] = False
            out.context["exposure_window"] = "no asparaginase product reported: not exposed"
        else:
            if product == "pegaspargase":
                window: float | None = float(settings[exposure.pegaspargase_window_setting])
                source = f"setting {exposure.pegaspargase_window_setting} (LOCAL)"
            else:
                window = section.asp_window_days_local
                source = "asp_window_days_local in the request (LOCAL)"
            if window is None or days is None:
                why = "no exposure window for this product" if window is None else "days since the last dose not reported"
                out.notes.append(f"asparaginase exposure cannot be known ({why}): flags that need it do not fire.")
            else:
                facts["asp_active"] = days <= window
                out.context["exposure_window"] = f"{product}: {days:g} of {window:g} days, {source}"

    _apply_derived_booleans(out, ruleset, settings)

    mitchell = ruleset.file.derivations.mitchell2008
    if mitchell is not None and all(k in facts for k in ("asp_active", "steroid", "cvc_present", "thrombophilia_count")):
        points = {
            "asparaginase_with_steroid": mitchell.asparaginase_with_steroid
            if facts["asp_active"] and facts["steroid"] in mitchell.steroids
            else 0,
            "cvc": mitchell.cvc if facts["cvc_present"] else 0,
            "thrombophilia": mitchell.two_or_more_traits
            if int(facts["thrombophilia_count"]) >= 2
            else mitchell.one_trait_or_family_history
            if facts["thrombophilia_count"] == 1 or section.family_history_vte
            else 0,
        }
        facts["mitchell2008_score"] = sum(points.values())
        out.context["mitchell2008_points"] = points

    reference = ruleset.file.derivations.enoxaparin_reference
    if reference is not None:
        months = assessment.patient.age_years * 12
        dose = reference.below_mg_per_kg if months < reference.below_age_months else reference.from_mg_per_kg
        facts["enoxaparin_reference_mg_per_kg"] = dose
        if section.enoxaparin_dose_mg_per_kg is not None:
            facts["enoxaparin_dose_deviation_mg_per_kg"] = abs(section.enoxaparin_dose_mg_per_kg - dose)
    return out


# ----------------------------------------------------------------------------------------------
# Blinatumomab
# ----------------------------------------------------------------------------------------------


def blinatumomab_facts(
    assessment: Assessment,
    ruleset: LoadedRuleSet,
    settings: Mapping[str, Scalar],
    *,
    crs_grade: int | None,
    icans_grade: int | None,
) -> DerivedFacts:
    """The facts of the blinatumomab action rule set, with the grades of this same assessment."""
    section = assessment.blinatumomab
    out = DerivedFacts(facts={"age_years": assessment.patient.age_years})
    facts = out.facts
    if crs_grade is not None:
        facts["crs_grade"] = crs_grade
    if icans_grade is not None:
        facts["icans_grade"] = icans_grade
    dosing = ruleset.file.derivations.blinatumomab_dosing
    if dosing is None:
        raise ValueError(f"{ruleset.label} declares no blinatumomab_dosing derivation")
    weight = assessment.patient.weight_kg
    dose = section.dose if section is not None else None
    if weight is not None:
        band = "fixed" if weight >= dosing.fixed_dosing_from_weight_kg else "bsa"
        reason = f"weight {weight:g} kg {'>=' if band == 'fixed' else '<'} {dosing.fixed_dosing_from_weight_kg:g} kg"
    elif dose is not None:
        band = "bsa" if dose.unit == "mcg/m2/day" else "fixed"
        reason = f"weight not reported; dose unit {dose.unit}"
    else:
        band, reason = "unknown", "weight and dose not reported"
    facts["weight_band"] = band
    out.context["weight_band_reason"] = reason
    if dose is not None:
        facts["dose_value"] = dose.value
        facts["dose_unit"] = dose.unit
        if dose.unit in dosing.low_step:
            facts["dose_at_low_step"] = dose.value == dosing.low_step[dose.unit]
        out.context["dose"] = f"{dose.value:g} {dose.unit}"
    if section is not None:
        if section.seizures_this_course is not None:
            facts["seizures_this_course"] = section.seizures_this_course
        if section.days_to_resolution is not None:
            facts["days_to_resolution"] = section.days_to_resolution
    return out
