"""Hypothesis strategies for outside test suites: valid assessments, and invalid ones with the field
that must be named in the error.

    from aegrade.testing import assessments, invalid_assessments

    @given(assessments())
    def test_any_valid_assessment_is_graded(payload): ...

    @given(invalid_assessments())
    def test_bad_input_is_refused(case):
        payload, loc = case   # loc: the field path the error must name, e.g. ("vitals", "temperature_c")

Numbers are drawn near every threshold that the loaded rule files test (just below, at, just
above), as well as anywhere in their allowed range. Payloads are plain dicts in the API's request
form, ready for `aegrade.assess` or for a POST to /v1/assessments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

from hypothesis import strategies as st

from aegrade import models
from aegrade.rulefile import FactTest, LoadedRuleSet, NumberSetting, OxygenFlow, SbpFormula, iter_tests, load_rulesets

__all__ = [
    "FIELD_BOUNDS",
    "assessments",
    "blinatumomab_sections",
    "crs_sections",
    "fact_values",
    "flow_devices",
    "invalid_assessments",
    "neuro_sections",
    "patients",
    "thresholds",
    "thrombosis_sections",
    "tool_for",
    "vitals_sections",
]

Payload = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]

FIELD_BOUNDS: dict[tuple[str, ...], tuple[float, float]] = {
    ("patient", "age_years"): (0, 120),
    ("patient", "weight_kg"): (0, 400),  # exclusive lower bound
    ("vitals", "temperature_c"): (25, 45),
    ("vitals", "temperature_f"): (77, 113),
    ("vitals", "sbp_mmhg"): (20, 300),
    ("vitals", "dbp_mmhg"): (20, 300),
    ("vitals", "map_mmhg"): (20, 300),
    ("vitals", "heart_rate_bpm"): (0, 350),
    ("vitals", "respiratory_rate"): (0, 150),
    ("vitals", "spo2_pct"): (0, 100),
    ("crs", "oxygen", "flow_l_min"): (0, 80),
    ("neuro", "ice_score"): (0, 10),
    ("neuro", "capd_score"): (0, 32),
    ("thrombosis", "fibrinogen_g_L"): (0, 20),
    ("thrombosis", "fibrinogen_lln_g_L"): (0, 20),  # exclusive lower bound
    ("thrombosis", "antithrombin_pct"): (0, 300),
    ("thrombosis", "platelets_10e9_L"): (0, 5000),
    ("thrombosis", "anti_xa_U_mL"): (0, 10),
    ("thrombosis", "days_since_last_asparaginase"): (0, 3650),
    ("thrombosis", "bmi_percentile"): (0, 100),
    ("blinatumomab", "days_to_resolution"): (0, 365),
}
"""Every numeric request field and its inclusive bounds (api-v1.md)."""


@cache
def _rulesets() -> tuple[LoadedRuleSet, ...]:
    return tuple(rs for rs in load_rulesets() if rs.file.status == "active")


def thresholds(fact: str) -> list[float]:
    """Every number that an active rule file compares `fact` with (and the age bands, for ages)."""
    found: set[float] = set()
    for rs in _rulesets():
        conditions = [r.when for r in rs.rules] + [d.missing_when for d in rs.file.domains]
        for condition in conditions:
            for test in iter_tests(condition):
                if isinstance(test, FactTest) and test.fact == fact:
                    values = test.value if isinstance(test.value, list) else [test.value]
                    found.update(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    return sorted(found)


def flow_devices() -> OxygenFlow:
    """The CRS rule file's oxygen devices that need a flow (`required_with`) or are asked one."""
    for rs in _rulesets():
        declared = rs.file.derivations.oxygen_flow
        if rs.file.subject == "crs" and rs.file.role == "primary" and declared is not None:
            return declared
    raise LookupError("no active primary CRS rule file declares derivations.oxygen_flow")


def _age_thresholds() -> list[float]:
    found: set[float] = set(thresholds("age_years"))
    for rs in _rulesets():
        for setting in rs.file.settings:
            if isinstance(setting, NumberSetting) and setting.unit == "years":
                found.update({setting.minimum, setting.maximum, setting.default})
        hyp = rs.file.derivations.hypotension_from_vitals
        if hyp is not None:
            for band in hyp.bands:
                if band.age_years_below is not None:
                    found.add(band.age_years_below)
                if band.age_days_at_most is not None:
                    found.add(band.age_days_at_most / 365.25)
    return sorted(found)


def _sbp_thresholds() -> list[float]:
    found: set[float] = set()
    for rs in _rulesets():
        hyp = rs.file.derivations.hypotension_from_vitals
        if hyp is None:
            continue
        for band in hyp.bands:
            if isinstance(band.sbp_below_mmhg, SbpFormula):
                f = band.sbp_below_mmhg
                found.update(f.base_mmhg + f.per_completed_year_mmhg * y for y in range(1, 11))
            else:
                found.add(float(band.sbp_below_mmhg))
    return sorted(found)


def _map_thresholds() -> list[float]:
    return sorted(
        {rs.file.derivations.hypotension_from_vitals.map.below_mmhg for rs in _rulesets()
         if rs.file.derivations.hypotension_from_vitals and rs.file.derivations.hypotension_from_vitals.map}
    )


def _near(values: Sequence[float], lo: float, hi: float, *, integer: bool = False) -> list[float]:
    """Each value, just below and just above it (by one unit for integers), within [lo, hi]."""
    out: set[float] = set()
    for v in values:
        if integer:
            candidates = [v - 1, v, v + 1]
        else:
            candidates = [math.nextafter(v, -math.inf), v, math.nextafter(v, math.inf), v - 0.1, v + 0.1, v - 0.01, v + 0.01]
        out.update(c for c in candidates if lo <= c <= hi)
    return sorted(out)


def _number(lo: float, hi: float, near: Sequence[float] = (), *, exclusive_lo: bool = False) -> st.SearchStrategy[float]:
    options: list[st.SearchStrategy[Any]] = [
        st.floats(lo, hi, allow_nan=False, allow_infinity=False, exclude_min=exclusive_lo)
    ]
    int_lo = math.ceil(lo) + (1 if exclusive_lo and float(lo).is_integer() else 0)
    if int_lo <= math.floor(hi):
        options.append(st.integers(int_lo, math.floor(hi)).map(float))
    near_ok = [v for v in _near(near, lo, hi) if not (exclusive_lo and v <= lo)]
    if near_ok:
        options.insert(0, st.sampled_from(near_ok))
    return st.one_of(*options)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _put(payload: Payload, key: str, value: Any) -> None:
    if value is not None:
        payload[key] = value


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def patients() -> st.SearchStrategy[Payload]:
    """`patient` sections across every age band and cut-off."""
    return st.builds(
        _patient,
        age=_number(0, 120, _age_thresholds()),
        weight=_maybe(_number(0, 400, [45], exclusive_lo=True)),
        delay=_maybe(st.booleans()),
    )


def _patient(age: float, weight: float | None, delay: bool | None) -> Payload:
    out: Payload = {"age_years": age}
    _put(out, "weight_kg", weight)
    _put(out, "developmental_delay", delay)
    return out


@st.composite
def vitals_sections(draw: Draw) -> Payload:
    """`vitals` sections: any subset, blood pressures consistent (dbp <= map <= sbp)."""
    out: Payload = {}
    temperature = draw(st.sampled_from(["c", "f", None]))
    if temperature == "c":
        out["temperature_c"] = draw(_number(25, 45, thresholds("temperature_c")))
    elif temperature == "f":
        out["temperature_f"] = draw(_number(77, 113, [100.3, 100.4, 100.39, 100.41]))
    sbp = draw(_maybe(_number(20, 300, _sbp_thresholds())))
    _put(out, "sbp_mmhg", sbp)
    upper = sbp if sbp is not None else 300.0
    dbp = draw(_maybe(_number(20, upper)))
    _put(out, "dbp_mmhg", dbp)
    mean = draw(_maybe(_number(dbp if dbp is not None else 20.0, upper, _map_thresholds())))
    _put(out, "map_mmhg", mean)
    _put(out, "heart_rate_bpm", draw(_maybe(_number(0, 350))))
    _put(out, "respiratory_rate", draw(_maybe(_number(0, 150))))
    _put(out, "spo2_pct", draw(_maybe(_number(0, 100))))
    return out


VASOPRESSORS: tuple[str, ...] = models.Vasopressor.__args__  # type: ignore[attr-defined]
DEVICES: tuple[str, ...] = models.OxygenDevice.__args__  # type: ignore[attr-defined]


@st.composite
def oxygen_sections(draw: Draw) -> Payload:
    device = draw(st.sampled_from(DEVICES))
    out: Payload = {"device": device}
    flow_near = thresholds("oxygen_flow_l_min")
    if device in flow_devices().required_with:
        out["flow_l_min"] = draw(_number(0, 80, flow_near, exclusive_lo=True))
    elif device == "none":
        if draw(st.booleans()):
            out["flow_l_min"] = 0.0
    else:
        _put(out, "flow_l_min", draw(_maybe(_number(0, 80, flow_near))))
    return out


@st.composite
def crs_sections(draw: Draw, *, complete: bool = False) -> Payload:
    """`crs` sections with no contradiction. `complete`: every input that can decide the grade is
    reported (fever_masked, hypotension, vasopressors, oxygen), so nothing is left unknown."""
    maybe = (lambda strategy: strategy) if complete else _maybe
    out: Payload = {}
    _put(out, "fever_masked", draw(maybe(st.booleans())))
    vasopressors = draw(maybe(st.lists(st.sampled_from(VASOPRESSORS), unique=True, max_size=4)))
    _put(out, "vasopressors", vasopressors)
    hypotension = draw(maybe(st.booleans()))
    if hypotension is False and vasopressors:
        hypotension = True
    _put(out, "hypotension", hypotension)
    _put(out, "oxygen", draw(maybe(oxygen_sections())))
    for flag in ("fever_other_cause", "hypotension_other_cause", "hypoxia_other_cause"):
        _put(out, flag, draw(_maybe(st.booleans())))
    _put(out, "death_attributed", draw(st.sampled_from([None, None, None, False, True])))
    return out


CONSCIOUSNESS: tuple[str, ...] = models.Consciousness.__args__  # type: ignore[attr-defined]
SEIZURE: tuple[str, ...] = models.Seizure.__args__  # type: ignore[attr-defined]
MOTOR: tuple[str, ...] = models.Motor.__args__  # type: ignore[attr-defined]
EDEMA: tuple[str, ...] = models.CerebralEdema.__args__  # type: ignore[attr-defined]
ICP_SIGNS: tuple[str, ...] = models.IcpSign.__args__  # type: ignore[attr-defined]


OTHER_CAUSES: tuple[str, ...] = (
    "consciousness_other_cause",
    "encephalopathy_other_cause",
    "seizure_other_cause",
    "motor_other_cause",
    "icp_other_cause",
)


@st.composite
def neuro_sections(draw: Draw, tool: str, *, complete: bool = False) -> Payload:
    """`neuro` sections with no contradiction, scored with `tool` ("ICE" or "CAPD") when scored.

    `complete`: every ICANS domain is reported (a score or unable_to_perform, consciousness,
    seizure, motor, cerebral edema, ICP signs), and no competing cause leaves an attribution open.
    `unable_to_perform` means unarousable (v1.1): it comes with consciousness unarousable or none.
    """
    maybe = (lambda strategy: strategy) if complete else _maybe
    out: Payload = {}
    unable = draw(st.sampled_from([None, False, False, True]))
    _put(out, "unable_to_perform", unable)
    form = draw(st.sampled_from(["items", "score"] if complete else ["items", "score", None]))
    if tool == "ICE" and form is not None:
        if unable:
            if draw(st.booleans()):
                out["ice_score" if form == "score" else "ice"] = (
                    0 if form == "score" else {"orientation": 0, "naming": 0, "commands": 0, "writing": 0, "attention": 0}
                )
        elif form == "score":
            out["ice_score"] = draw(st.integers(0, 10))
        else:
            out["ice"] = {
                "orientation": draw(st.integers(0, 4)),
                "naming": draw(st.integers(0, 3)),
                "commands": draw(st.integers(0, 1)),
                "writing": draw(st.integers(0, 1)),
                "attention": draw(st.integers(0, 1)),
            }
    elif tool == "CAPD" and form is not None and not unable:
        if form == "score":
            out["capd_score"] = draw(st.one_of(st.sampled_from([0, 1, 8, 9, 10, 32]), st.integers(0, 32)))
        else:
            out["capd"] = draw(st.lists(st.integers(0, 4), min_size=8, max_size=8))
    choices = ["unarousable"] if unable else list(CONSCIOUSNESS)
    _put(out, "consciousness", draw(maybe(st.sampled_from(choices))))
    for flag in OTHER_CAUSES:
        _put(out, flag, draw(st.sampled_from([None, None, False, True])))
    _put(out, "seizure", draw(maybe(st.sampled_from(SEIZURE))))
    _put(out, "motor", draw(maybe(st.sampled_from(MOTOR))))
    _put(out, "cerebral_edema", draw(maybe(st.sampled_from(EDEMA))))
    _put(out, "icp_signs", draw(maybe(st.lists(st.sampled_from(ICP_SIGNS), unique=True, max_size=4))))
    hemorrhage = draw(_maybe(st.booleans()))
    _put(out, "intracranial_hemorrhage", hemorrhage)
    if complete and hemorrhage and "icp_other_cause" not in out:
        out["icp_other_cause"] = draw(st.booleans())  # a reported hemorrhage leaves the ICP attribution open
    _put(out, "death_attributed", draw(st.sampled_from([None, None, None, False, True])))
    return out


THROMBOSIS_NUMBERS: dict[str, tuple[float, float, float]] = {
    # field: (low, high, a typical upper limit or reference, for the tests that compare with it)
    "days_since_last_asparaginase": (0, 60, 28),
    "bmi_percentile": (0, 100, 95),
    "fibrinogen_g_L": (0, 6, 2.0),
    "antithrombin_pct": (0, 150, 50),
    "d_dimer_mg_L_FEU": (0, 10, 0.5),
    "platelets_10e9_L": (0, 500, 50),
    "aptt_s": (10, 150, 35),
    "inr": (0.8, 6, 2.5),
    "alt_U_L": (5, 2000, 40),
    "bilirubin_umol_L": (2, 400, 20),
    "triglycerides_mmol_L": (0.5, 20, 5.7),
    "lipase_U_L": (5, 1000, 60),
    "amylase_U_L": (5, 1000, 100),
    "asparaginase_activity_IU_mL": (0, 2, 0.1),
    "anti_xa_U_mL": (0, 3, 0.5),
    "anti_xa_hours_post_dose": (0, 12, 4),
    "crcl_mL_min_1_73m2": (5, 200, 30),
    "enoxaparin_dose_mg_per_kg": (0.2, 3, 1.0),
}
ULN_FIELDS = {
    "fibrinogen_lln_g_L": 2.0, "aptt_uln_s": 35, "alt_uln_U_L": 40, "bilirubin_uln_umol_L": 20,
    "lipase_uln_U_L": 60, "amylase_uln_U_L": 100,
}
THROMBOSIS_CHOICES: dict[str, tuple[Any, ...]] = {
    "asparaginase_product": ("pegaspargase", "pegaspargase", "calaspargase", "erwinia", "native_ecoli"),
    "steroid": ("dexamethasone", "prednisone", "none"),
    "immunophenotype": ("B", "T"),
    "abo_group": ("O", "A", "B", "AB"),
    "confirmed_thrombosis_site": ("CSVT", "DVT", "CVC", "PE", "arterial"),
    "lmwh_agent": ("enoxaparin", "enoxaparin", "other"),
    "lmwh_intent": ("treatment", "prophylaxis"),
}


@st.composite
def thrombosis_sections(draw: Draw, *, on_blinatumomab_section: bool = False) -> Payload:
    """`thrombosis` sections with no contradiction; numbers near the rule files' thresholds."""
    from aegrade.models import ThrombosisSection  # local: keeps the public import light

    out: Payload = {}
    for name, field in ThrombosisSection.model_fields.items():
        if not draw(st.booleans()):
            continue
        if name in THROMBOSIS_NUMBERS:
            low, high, typical = THROMBOSIS_NUMBERS[name]
            out[name] = draw(_number(low, high, [*thresholds(name), typical, typical * 2.5, typical * 3, typical * 5]))
        elif name in ULN_FIELDS:
            out[name] = float(draw(st.sampled_from([ULN_FIELDS[name], ULN_FIELDS[name] * 0.8, ULN_FIELDS[name] * 1.25])))
        elif name in THROMBOSIS_CHOICES:
            out[name] = draw(st.sampled_from(THROMBOSIS_CHOICES[name]))
        elif name == "thrombophilia_traits":
            traits = models.ThrombophiliaTrait.__args__  # type: ignore[attr-defined]
            out[name] = draw(st.lists(st.sampled_from(traits), unique=True, max_size=3))
        elif name == "asp_window_days_local":
            out[name] = draw(st.sampled_from([7.0, 14.0, 21.0]))
        elif name == "enoxaparin_interval_h":
            out[name] = draw(st.sampled_from([12.0, 24.0]))
        elif field.annotation in (bool | None,):
            out[name] = draw(st.booleans())
    if "lmwh_intent" in out and "lmwh_agent" not in out:
        del out["lmwh_intent"]
    if out.get("prior_asp_associated_vte") and out.get("prior_vte") is False:
        out["prior_vte"] = True
    if on_blinatumomab_section:  # a blinatumomab section implies both (api-v1.md v1.1)
        for implied in ("on_blinatumomab", "on_all_therapy"):
            if out.get(implied) is False:
                out[implied] = True
    return out


@st.composite
def blinatumomab_sections(draw: Draw) -> Payload:
    out: Payload = {}
    if draw(st.booleans()):
        unit = draw(st.sampled_from(["mcg/day", "mcg/m2/day"]))
        value = draw(st.sampled_from([9.0, 28.0] if unit == "mcg/day" else [5.0, 15.0]) | _number(0.5, 30, exclusive_lo=True))
        out["dose"] = {"value": value, "unit": unit}
    _put(out, "seizures_this_course", draw(_maybe(st.integers(0, 3))))
    _put(out, "days_to_resolution", draw(_maybe(st.sampled_from([0.0, 3.0, 7.0, 7.5, 8.0, 14.0]))))
    return out


def _capd_cutoff() -> float:
    for rs in _rulesets():
        tool = rs.file.derivations.encephalopathy_tool
        if tool is not None:
            return float(rs.setting(tool.capd_below_age_setting).default)
    raise LookupError("no active rule set declares an encephalopathy tool")


def tool_for(patient: Mapping[str, Any], *, capd_age_cutoff_years: float | None = None) -> str:
    """The encephalopathy tool that fits a `patient` section, at the given (or default) cut-off."""
    cutoff = _capd_cutoff() if capd_age_cutoff_years is None else capd_age_cutoff_years
    return "CAPD" if patient.get("developmental_delay") or patient["age_years"] < cutoff else "ICE"


NEURO_FINDINGS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    # thrombosis field: (neuro field, its value as the thrombosis fact) - one fact, one place (v1.1)
    "seizure": ("seizure", lambda v: v != "none"),
    "focal_deficit": ("motor", lambda v: v == "deep_focal_weakness"),
    "altered_consciousness": ("consciousness", lambda v: v != "alert"),
    "papilledema": ("icp_signs", lambda v: "papilledema" in v),
    "ich_present": ("intracranial_hemorrhage", lambda v: v is True),
}


def _agree_with_neuro(thrombosis: Payload, neuro: Payload) -> None:
    """Make the thrombosis section's neurological signs agree with what neuro reports (a
    disagreement is a 422, api-v1.md v1.1 "one fact, one place")."""
    for name, (neuro_field, value) in NEURO_FINDINGS.items():
        if name in thrombosis and neuro_field in neuro:
            thrombosis[name] = value(neuro[neuro_field])


@st.composite
def assessments(
    draw: Draw, *, capd_age_cutoff_years: float | None = None, death: bool = True, complete: bool = False
) -> Payload:
    """Valid assessments in the API's request form, at the default settings unless told otherwise.

    `death=False` leaves out the death attributions (grade 5), for properties about the other grades.
    `complete=True` reports every input that can decide the CRS and ICANS grades (a temperature,
    and complete `crs` and `neuro` sections, which are always drawn), so that every grade is
    determined (grade_max == grade); no thrombosis section then competes with the ICANS findings.
    """
    patient = draw(patients())
    out: Payload = {"patient": patient}
    if complete:
        sections = {"vitals", "crs", "neuro"} | draw(st.sets(st.sampled_from(["blinatumomab"])))
    else:
        sections = draw(st.sets(st.sampled_from(["vitals", "crs", "neuro", "thrombosis", "blinatumomab"]), min_size=1))
    if "vitals" in sections:
        out["vitals"] = draw(vitals_sections())
        if complete and "temperature_c" not in out["vitals"] and "temperature_f" not in out["vitals"]:
            out["vitals"]["temperature_c"] = draw(_number(25, 45, thresholds("temperature_c")))
    if "crs" in sections:
        out["crs"] = draw(crs_sections(complete=complete))
    if "neuro" in sections:
        tool = tool_for(patient, capd_age_cutoff_years=capd_age_cutoff_years)
        out["neuro"] = draw(neuro_sections(tool, complete=complete))
    if "thrombosis" in sections:
        out["thrombosis"] = draw(thrombosis_sections(on_blinatumomab_section="blinatumomab" in sections))
        if "neuro" in out:
            _agree_with_neuro(out["thrombosis"], out["neuro"])
    if "blinatumomab" in sections:
        out["blinatumomab"] = draw(blinatumomab_sections())
    if not death:
        for name in ("crs", "neuro"):
            if name in out:
                out[name].pop("death_attributed", None)
    return out


# ----------------------------------------------------------------------------------------------
# Invalid input
# ----------------------------------------------------------------------------------------------

_BAD_NUMBERS: list[tuple[str, Callable[[float, float], Any]]] = [
    ("nan", lambda lo, hi: math.nan),
    ("inf", lambda lo, hi: math.inf),
    ("-inf", lambda lo, hi: -math.inf),
    ("bool-true", lambda lo, hi: True),
    ("bool-false", lambda lo, hi: False),
    ("below", lambda lo, hi: lo - 1),
    ("above", lambda lo, hi: hi + 1),
    ("string", lambda lo, hi: str(lo)),
    ("null-list", lambda lo, hi: [lo]),
]


def _set(payload: Payload, path: Sequence[str], value: Any) -> None:
    node = payload
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


@st.composite
def invalid_assessments(draw: Draw) -> tuple[Payload, tuple[str | int, ...]]:
    """(payload, loc): an otherwise valid assessment made invalid at `loc`.

    The kinds: NaN and infinities, booleans and strings posing as numbers, values out of range,
    unknown fields, and each contradiction of api-v1.md.
    """
    base = draw(assessments())
    kind = draw(st.sampled_from(["number", "unknown_field", "enum", "contradiction"]))
    if kind == "number":
        path = draw(st.sampled_from(sorted(FIELD_BOUNDS)))
        lo, hi = FIELD_BOUNDS[path]
        _name, make = draw(st.sampled_from(_BAD_NUMBERS))
        if path[0] == "neuro":
            base["patient"]["age_years"] = 30.0 if path[-1] == "ice_score" else 5.0
            base["patient"].pop("developmental_delay", None)
            base.setdefault("neuro", {}).pop("unable_to_perform", None)
            for key in ("ice", "ice_score", "capd", "capd_score"):
                base["neuro"].pop(key, None)
        if path[:2] == ("crs", "oxygen"):
            base.setdefault("crs", {})["oxygen"] = {"device": flow_devices().required_with[-1]}
        if path[:2] == ("vitals", "temperature_c"):
            base.setdefault("vitals", {}).pop("temperature_f", None)
        if path[:2] == ("vitals", "temperature_f"):
            base.setdefault("vitals", {}).pop("temperature_c", None)
        _set(base, path, make(lo, hi))
        return base, tuple(path)
    if kind == "unknown_field":
        section = draw(st.sampled_from(["", "patient", "vitals", "crs", "neuro"]))
        name = draw(st.sampled_from(["unknown", "temperature", "Temperature_c", "age", "iceScore", "ice_scor"]))
        if section:
            base.setdefault(section, {})[name] = 1
            return base, (section, name)
        base[name] = 1
        return base, (name,)
    if kind == "enum":
        path, value = draw(
            st.sampled_from(
                [
                    (("crs", "oxygen", "device"), "high_flow"),
                    (("crs", "oxygen", "device"), 1),
                    (("crs", "vasopressors", 0), "noradrenaline"),
                    (("neuro", "consciousness"), "drowsy"),
                    (("neuro", "consciousness"), True),
                    (("neuro", "seizure"), "yes"),
                    (("neuro", "motor"), 0),
                    (("crs", "fever_masked"), 1),
                    (("crs", "hypotension"), "true"),
                    (("patient", "developmental_delay"), 0),
                ]
            )
        )
        if path[1] == "vasopressors":
            base.setdefault("crs", {})["vasopressors"] = [value]
            base["crs"].pop("hypotension", None)
        elif path[:2] == ("crs", "oxygen"):
            base.setdefault("crs", {})["oxygen"] = {"device": value}
        else:
            _set(base, path, value)
        return base, path
    return _contradiction(draw, base)


def _contradiction(draw: Draw, base: Payload) -> tuple[Payload, tuple[str | int, ...]]:
    which = draw(
        st.sampled_from(
            [
                "both_temperatures",
                "hypotension_false_with_vasopressors",
                "cannula_without_flow",
                "cannula_at_zero",
                "ice_and_ice_score",
                "capd_and_capd_score",
                "unable_and_alert",
                "unable_with_ice_points",
                "wrong_tool_ice",
                "wrong_tool_capd",
                "duplicate_vasopressor",
                "dbp_above_sbp",
            ]
        )
    )
    patient = base["patient"]
    patient.pop("developmental_delay", None)
    if which == "both_temperatures":
        base["vitals"] = {**base.get("vitals", {}), "temperature_c": 38.5, "temperature_f": 101.3}
        return base, ("vitals", "temperature_f")
    if which == "dbp_above_sbp":
        base["vitals"] = {"sbp_mmhg": 90, "dbp_mmhg": 95}
        return base, ("vitals", "dbp_mmhg")
    if which == "hypotension_false_with_vasopressors":
        base["crs"] = {**base.get("crs", {}), "hypotension": False, "vasopressors": ["norepinephrine"]}
        return base, ("crs", "hypotension")
    if which == "duplicate_vasopressor":
        base["crs"] = {**base.get("crs", {}), "vasopressors": ["dopamine", "dopamine"]}
        base["crs"].pop("hypotension", None)
        return base, ("crs", "vasopressors", 1)
    if which in ("cannula_without_flow", "cannula_at_zero"):
        device = draw(st.sampled_from(flow_devices().required_with))
        oxygen: Payload = {"device": device}
        if which == "cannula_at_zero":
            oxygen["flow_l_min"] = 0
        base["crs"] = {**base.get("crs", {}), "oxygen": oxygen}
        return base, ("crs", "oxygen", "flow_l_min")
    adult = which not in ("capd_and_capd_score", "wrong_tool_ice")
    patient["age_years"] = 40.0 if adult else 6.0
    neuro = {k: v for k, v in base.get("neuro", {}).items() if k not in ("ice", "ice_score", "capd", "capd_score", "unable_to_perform")}
    base["neuro"] = neuro
    items = {"orientation": 4, "naming": 3, "commands": 1, "writing": 1, "attention": 1}
    if which == "ice_and_ice_score":
        neuro.update(ice=items, ice_score=10)
        return base, ("neuro", "ice_score")
    if which == "capd_and_capd_score":
        neuro.update(capd=[0] * 8, capd_score=0)
        return base, ("neuro", "capd_score")
    if which == "unable_and_alert":  # v1.1: unable_to_perform means unarousable; the 422 names it
        neuro.update(unable_to_perform=True, consciousness=draw(st.sampled_from([c for c in CONSCIOUSNESS if c != "unarousable"])))
        return base, ("neuro", "unable_to_perform")
    if which == "unable_with_ice_points":
        neuro.update(unable_to_perform=True, ice_score=draw(st.integers(1, 10)))
        neuro.pop("consciousness", None)
        return base, ("neuro", "ice_score")
    if which == "wrong_tool_ice":  # a child scored with ICE
        neuro["ice_score"] = 7
        return base, ("neuro", "ice_score")
    neuro["capd_score"] = 4  # an adult scored with CAPD
    return base, ("neuro", "capd_score")


# ----------------------------------------------------------------------------------------------
# Raw facts (for the differential test of the two evaluators)
# ----------------------------------------------------------------------------------------------


def _interval(bounds: tuple[Any, Any]) -> Any:
    from aegrade.facts import Interval  # local: keeps the public import light

    lo, hi = sorted(bounds)
    return Interval(lo, hi)


def fact_values(subject: str) -> st.SearchStrategy[dict[str, Any]]:
    """Arbitrary fact dicts for a rule set subject: any fact may be absent, numbers near every
    threshold, extremes included (tiny, huge, negative zero)."""
    from aegrade.facts import CATALOGUES  # local: keeps the public import light

    catalogue = CATALOGUES[subject]  # type: ignore[index]
    extremes = [0.0, -0.0, 5e-324, 1e-300, 1e-05, 123456789.125, 1e15, 1e16, 1e300]
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, spec in catalogue.items():
        if spec.type == "boolean":
            value: st.SearchStrategy[Any] = st.booleans()
        elif spec.type == "enum":
            value = st.sampled_from(spec.values)
        elif spec.type == "integer":
            near = [int(v) for v in _near(thresholds(name), -5, 1000, integer=True)]
            value = st.one_of(st.sampled_from(near or [0]), st.integers(0, 1000))
        else:
            value = st.one_of(
                st.sampled_from(_near(thresholds(name), -1e6, 1e6) or [0.0]),
                st.sampled_from(extremes),
                st.floats(0, 500, allow_nan=False, allow_infinity=False),
            )
        if spec.bounded:  # a derived number with unreported parts: sometimes known only within bounds
            value = st.one_of(value, st.tuples(value, value).filter(lambda b: b[0] != b[1]).map(_interval))
        fields[name] = value if spec.always_present else _maybe(value)

    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not None})
