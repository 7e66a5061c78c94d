"""Derived facts: from one Assessment to the flat facts that rule conditions test.

Only conversions and bookkeeping happen here: degrees F to C, item scores to totals, vasopressor
lists to counts, which encephalopathy tool fits the patient, and hypotension from vitals by age.
Every clinical number and list used (the age cut-off, the blood-pressure bands, which vasopressors
count) comes from the rule file and its settings; Python does not know what a fever is.

A value that was not reported is left out of the facts. Each derivation that the engine makes on
the patient's behalf is said in `notes` and shown in the evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from aegrade.facts import CHECKBOXES, THROMBOSIS_FACTS, FactValue, Interval
from aegrade.models import Assessment, CrsSection, NeuroSection, Patient, ThrombosisSection, Vitals
from aegrade.rulefile import HypotensionFromVitals, LoadedRuleSet, NeuroFinding, SbpFormula, Scalar

__all__ = [
    "ATTRIBUTION_FIELDS",
    "DAYS_PER_YEAR",
    "DerivedFacts",
    "crs_facts",
    "encephalopathy_tool",
    "fahrenheit_to_celsius",
    "grade_bounds",
    "neuro_finding",
    "hypotension_from_vitals",
    "blinatumomab_facts",
    "body_surface_area",
    "icans_facts",
    "thrombosis_facts",
]

DAYS_PER_YEAR = 365.25
"""Converts fractional age in years to days (for the neonatal band)."""

Tool = Literal["ICE", "CAPD"]


@dataclass
class DerivedFacts:
    """Facts for the evaluators, values to show as evidence, and what was derived, in words."""

    facts: dict[str, FactValue]
    context: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fired: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
    """(certain, possible) rules, once evaluated."""
    unknown_because: dict[str, list[str]] = field(default_factory=dict)
    """For a derived fact left unknown: the request paths that would decide it."""


def fahrenheit_to_celsius(temperature_f: float) -> float:
    """Degrees F to degrees C, rounded half-up to 0.01 (api-v1: 100.4 F is exactly 38.00 C)."""
    celsius = (Decimal(repr(temperature_f)) - 32) * 5 / 9
    return float(celsius.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


# ----------------------------------------------------------------------------------------------
# CRS
# ----------------------------------------------------------------------------------------------


def crs_facts(assessment: Assessment, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> DerivedFacts:
    """The facts of the CRS rule set. Call only when vitals or crs were sent.

    An input that was not reported is left out, so that the rules see it as unknown: no
    `fever_masked` is not "no treatment", no vasopressor list is not "no vasopressor".
    """
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
    if vitals.spo2_pct is not None:
        facts["spo2_pct"] = vitals.spo2_pct

    if crs.fever_masked is not None:
        facts["fever_masked"] = crs.fever_masked
    facts["fever_other_cause"] = crs.fever_other_cause

    agents = list(crs.vasopressors or [])
    pressors = ruleset.file.derivations.vasopressors
    if crs.vasopressors is not None and pressors is not None:
        facts[pressors.count_fact] = sum(1 for a in agents if a not in pressors.not_counted)
        for fact, agent in pressors.listed_facts.items():
            facts[fact] = agent in agents
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
    if from_vitals is not None:
        facts["hypotension_by_vitals"] = from_vitals[0]
        out.context["hypotension_threshold"] = from_vitals[1]
    if crs.hypotension is not None:
        facts["hypotension"] = crs.hypotension
        out.context["hypotension_source"] = "reported"
    elif agents and pressors is not None and pressors.imply_hypotension:
        facts["hypotension"] = True
        out.context["hypotension_source"] = "vasopressors"
        out.notes.append("hypotension was not reported: derived true because a vasopressor is running.")
    elif from_vitals is not None and from_vitals[0] and spec is not None and settings[spec.setting] == "counts":
        facts["hypotension"] = True
        facts["hypotension_from_vitals"] = True
        out.context["hypotension_source"] = "vitals"
        out.notes.append(
            f"hypotension was not reported: derived true from vitals ({from_vitals[1]}). This is an interpretation: "
            "ASTCT grades hypotension by the treatment it needs, and vitals only flag it; confirm that fluids or "
            "vasopressors were needed."
        )
    elif from_vitals is not None and not from_vitals[0]:
        out.notes.append(
            f"hypotension was not reported and the vitals are not below the age threshold ({from_vitals[1]}): "
            "hypotension stays unknown, since ASTCT grades it by the treatment it needs (a fluid bolus or a "
            "vasopressor can keep the pressure normal). Report crs.hypotension."
        )

    if crs.ctcae_v4_grade3 is not None:
        facts["ctcae_v4_grade3"] = crs.ctcae_v4_grade3
    facts["hypotension_other_cause"] = crs.hypotension_other_cause
    facts["hypoxia_other_cause"] = crs.hypoxia_other_cause
    facts["death_attributed"] = crs.death_attributed

    if crs.oxygen is not None:
        facts["oxygen_device"] = crs.oxygen.device
        if crs.oxygen.flow_l_min is not None:
            facts["oxygen_flow_l_min"] = crs.oxygen.flow_l_min
        out.context["oxygen"] = crs.oxygen.model_dump(exclude_none=True)
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


ATTRIBUTION_FIELDS = (
    "consciousness_other_cause",
    "encephalopathy_other_cause",
    "seizure_other_cause",
    "motor_other_cause",
    "icp_other_cause",
)
"""The neuro section's `*_other_cause` inputs: each is a fact when sent; when not sent, the rule
file's competing causes decide whether it is unknown or false (`aegrade.stage`)."""


def _copy_reported(facts: dict[str, FactValue], section: Any, names: Mapping[str, str]) -> None:
    """For each request field of `section` that was reported (not None): its value, as the fact named."""
    for field_name, fact in names.items():
        value = getattr(section, field_name)
        if value is not None:
            facts[fact] = value


def icans_facts(assessment: Assessment, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> DerivedFacts:
    """The facts of the ICANS rule set. Call only when neuro was sent."""
    neuro = assessment.neuro or NeuroSection()
    thrombosis = assessment.thrombosis
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
    facts["death_attributed"] = neuro.death_attributed
    sent = neuro.model_fields_set
    with_competing_cause = {a.fact for a in ruleset.file.derivations.attributions}
    for name in ATTRIBUTION_FIELDS:
        if name in sent or name not in with_competing_cause:
            facts[name] = getattr(neuro, name)  # not sent and no competing cause possible: its default, false
    # One fact, one place: a hemorrhage reported in either section is the same hemorrhage.
    if "intracranial_hemorrhage" in sent or thrombosis is None or thrombosis.ich_present is None:
        facts["intracranial_hemorrhage"] = neuro.intracranial_hemorrhage
    else:
        facts["intracranial_hemorrhage"] = thrombosis.ich_present
        out.notes.append(f"intracranial_hemorrhage read from thrombosis.ich_present ({str(thrombosis.ich_present).lower()}).")
    if thrombosis is not None:
        # One fact, one place: signs ticked only in the thrombosis section still count for ICANS.
        _copy_reported(
            facts,
            thrombosis,
            {
                "confirmed_thrombosis_site": "confirmed_thrombosis_site",
                "seizure": "thrombosis_seizure",
                "papilledema": "thrombosis_papilledema",
            },
        )
    for name in ("consciousness", "seizure", "motor", "cerebral_edema"):
        value = getattr(neuro, name)
        if value is not None:
            facts[name] = value
    if neuro.unable_to_perform and neuro.consciousness is None:
        facts["consciousness"] = "unarousable"
        out.notes.append("consciousness was not reported: unable_to_perform means unarousable, so it is taken as unarousable.")
    if neuro.icp_signs is not None:
        facts["icp_sign_count"] = len(neuro.icp_signs)
        out.context["icp_signs"] = sorted(neuro.icp_signs)
    return out


# ----------------------------------------------------------------------------------------------
# Asparaginase and thrombosis
# ----------------------------------------------------------------------------------------------


def neuro_finding(neuro: NeuroSection, finding: NeuroFinding) -> bool | None:
    """The value of a thrombosis finding as the neuro section reports it (None: not reported there)."""
    if finding.neuro_field not in neuro.model_fields_set and getattr(neuro, finding.neuro_field) in (None, False):
        return None
    value = getattr(neuro, finding.neuro_field)
    if value is None and finding.neuro_field == "consciousness" and neuro.unable_to_perform:
        value = "unarousable"  # unable_to_perform means unarousable (api-v1.md v1.1)
    if value is None:
        return None
    if isinstance(value, list):
        return any(v in finding.true_when for v in value)
    return value in finding.true_when


def thrombosis_facts(assessment: Assessment, ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> DerivedFacts:
    """The input facts of the thrombosis flag rule set; the derived booleans and the score come from
    its derivations (`aegrade.stage`). Call only when the thrombosis section was sent."""
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
    if assessment.neuro is not None:
        for finding in ruleset.file.derivations.neuro_findings:
            value = neuro_finding(assessment.neuro, finding)
            if value is not None:
                facts[finding.fact] = value
                if getattr(section, finding.fact) is None:
                    out.notes.append(f"{finding.fact} read from neuro.{finding.neuro_field} ({str(value).lower()}).")
    if assessment.blinatumomab is not None:
        facts["on_blinatumomab"] = True
        facts["on_all_therapy"] = True
        if assessment.thrombosis is not None and section.on_all_therapy is None:
            out.notes.append("on_all_therapy implied true: blinatumomab is given only for B-cell ALL.")
    traits = section.thrombophilia_traits
    if traits is not None:
        facts["thrombophilia_count"] = len(traits)
        out.context["thrombophilia_traits"] = sorted(traits)

    exposure = ruleset.file.derivations.asparaginase_exposure
    if exposure is not None:
        product, days = section.asparaginase_product, section.days_since_last_asparaginase
        if product is None:
            if assessment.thrombosis is None:
                pass  # flags run for a blinatumomab section alone: nothing about asparaginase was asked
            else:
                out.notes.append(
                    "asparaginase exposure cannot be known (no asparaginase product reported): flags that need it are undetermined."
                )
        else:
            if product == "pegaspargase":
                window: float | None = float(settings[exposure.pegaspargase_window_setting])
                source = f"setting {exposure.pegaspargase_window_setting} (LOCAL)"
            else:
                window = section.asp_window_days_local
                source = "asp_window_days_local in the request (LOCAL)"
            if window is None or days is None:
                why = (
                    f"no exposure window for {product}: send thrombosis.asp_window_days_local"
                    if window is None
                    else "days since the last dose not reported"
                )
                out.notes.append(f"asparaginase exposure cannot be known ({why}): flags that need it are undetermined.")
            else:
                facts["asp_active"] = days <= window
                out.context["exposure_window"] = f"{product}: {days:g} of {window:g} days, {source}"

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


def grade_bounds(bounds: tuple[int | None, int | None] | None) -> int | Interval | None:
    """A grade as a fact: the grade itself when nothing unreported could change it, the interval
    [grade, grade_max] when it could ([0, grade_max] when no grade was established), or None when
    nothing is known."""
    if bounds is None:
        return None
    low, high = bounds
    if high is None:
        return low
    low = 0 if low is None else low
    return low if low >= high else Interval(low, high)


def _max_bound(values: list[int | Interval]) -> int | Interval:
    """The worst of several grades, each known or bounded."""
    low = max(v.lo if isinstance(v, Interval) else v for v in values)
    high = max(v.hi if isinstance(v, Interval) else v for v in values)
    return int(low) if low >= high else Interval(low, high)


def _in_words(value: int | Interval) -> str:
    return f"{value:g}" if not isinstance(value, Interval) else f"{value.lo:g} (up to {value.hi:g})"


def body_surface_area(height_cm: float, weight_kg: float, divisor: float) -> float:
    """sqrt(height x weight / divisor), m2 (Mosteller with divisor 3600); shown rounded to 0.01, used as computed."""
    return math.sqrt(height_cm * weight_kg / divisor)


def blinatumomab_facts(
    assessment: Assessment,
    ruleset: LoadedRuleSet,
    settings: Mapping[str, Scalar],
    *,
    grades: Mapping[str, tuple[int | None, int | None]],
) -> DerivedFacts:
    """The facts of the blinatumomab action rule set, with the grades of this same assessment by rule
    set id, as (grade, grade_max): a grade the unreported inputs leave open is an interval."""
    section = assessment.blinatumomab
    derivations = ruleset.file.derivations
    out = DerivedFacts(facts={"age_years": assessment.patient.age_years})
    facts = out.facts
    scales: dict[str, str] = {}
    for source in derivations.grade_sources:
        value = grade_bounds(grades.get(source.ruleset))
        scales[source.fact] = source.scale
        if value is not None:
            facts[source.fact] = value
    terms = derivations.ctcae_terms
    neuro = assessment.neuro
    if terms is not None and neuro is not None and neuro.ctcae is not None:
        counted = [t for t in neuro.ctcae if t.term in terms.terms]
        facts[terms.fact] = max((t.grade for t in counted), default=0)
        scales[terms.fact] = terms.scale
        if counted:
            out.context["ctcae_terms"] = [f"{t.term} grade {t.grade} (CTCAE v{t.version})" for t in counted]
    label_grades: dict[str, list[dict[str, Any]]] = {}
    for rule in derivations.label_grades:
        choice = str(settings[rule.setting])
        sources = [name for name in rule.sources.get(choice, []) if name in facts]
        if not sources:
            continue
        worst = _max_bound([facts[name] for name in sources])  # type: ignore[misc]
        facts[rule.fact] = worst
        decided = [name for name in sources if facts[name] == worst] or sources
        others = [f"{scales.get(name, name)}: grade {_in_words(facts[name])}" for name in sources if name not in decided]  # type: ignore[arg-type]
        label_grades[rule.fact] = [
            {
                "subject": rule.subject,
                "grade": int(worst.lo) if isinstance(worst, Interval) else worst,
                "grade_max": int(worst.hi) if isinstance(worst, Interval) else None,
                "scale": scales.get(decided[0], decided[0]),
                "other": others,
            }
        ]
        if others:
            out.notes.append(
                f"{rule.fact.replace('_', ' ')}: {scales.get(decided[0], decided[0])} grade {_in_words(worst)} decided "
                f"(setting {rule.setting} = {choice}); {'; '.join(others)}."
            )
    out.context["label_grades"] = label_grades

    dosing = derivations.blinatumomab_dosing
    if dosing is None:
        raise ValueError(f"{ruleset.label} declares no blinatumomab_dosing derivation")
    patient = assessment.patient
    weight = patient.weight_kg
    dose = section.dose if section is not None else None
    bsa: float | None = None
    if weight is not None and patient.height_cm is not None:
        computed = body_surface_area(patient.height_cm, weight, dosing.bsa.divisor)
        if computed > 0:  # a weight so small that the product underflows gives no BSA
            bsa = computed
            facts["bsa_m2"] = round(bsa, 4)
            out.context["bsa"] = f"{bsa:.2f} m2 ({dosing.bsa.formula})"
    if weight is not None:
        band = "fixed" if weight >= dosing.fixed_dosing_from_weight_kg else "bsa"
        reason = f"weight {weight:g} kg {'>=' if band == 'fixed' else '<'} {dosing.fixed_dosing_from_weight_kg:g} kg"
    elif dose is not None:
        band = "bsa" if dose.unit == dosing.band_unit["bsa"] else "fixed"
        reason = f"weight not reported; dose unit {dose.unit}"
    else:
        band, reason = "unknown", "weight and dose not reported"
    facts["weight_band"] = band
    out.context["weight_band_reason"] = reason
    if dose is None:
        out.unknown_because["dose_at_low_step"] = ["blinatumomab.dose"]
    else:
        facts["dose_value"] = dose.value
        facts["dose_unit"] = dose.unit
        unit = dosing.band_unit[band] if band != "unknown" else dose.unit
        step = dosing.low_step[unit]
        if dose.unit == unit:
            facts["dose_at_low_step"] = dose.value == step
            out.context["dose"] = f"{dose.value:g} {dose.unit} (low step {step:g} {unit})"
        elif bsa is None:
            out.unknown_because["dose_at_low_step"] = ["patient.height_cm"] + (["patient.weight_kg"] if weight is None else [])
            out.notes.append(
                f"The dose is charted in {dose.unit} but the {band} band doses in {unit}: whether it is the low step "
                "cannot be known without the body surface area (send patient.height_cm)."
            )
        else:
            converted = dose.value / bsa if unit == dosing.band_unit["bsa"] else dose.value * bsa
            facts["dose_at_low_step"] = abs(converted - step) <= dosing.conversion_tolerance * step
            out.context["dose"] = (
                f"{dose.value:g} {dose.unit} = {converted:.2f} {unit} with BSA {bsa:.2f} m2 "
                f"(low step {step:g} {unit}, ±{dosing.conversion_tolerance:.0%} for rounding)"
            )
    if section is not None:
        _copy_reported(facts, section, {name: name for name in ("seizures_this_course", "days_to_resolution", "recurred_after_restart")})
    return out
