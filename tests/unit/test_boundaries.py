"""Every threshold of the CRS and ICANS rule files: just below, at, and just above it."""

from __future__ import annotations

import math
from typing import Any

import pytest

import aegrade

BELOW_38 = math.nextafter(38.0, 0)
ABOVE_6 = math.nextafter(6.0, math.inf)


def crs_request(*, age: float = 45, temperature_c: float | None = 38.5, vitals: dict[str, Any] | None = None, **crs: Any) -> dict[str, Any]:
    v = dict(vitals or {})
    if temperature_c is not None:
        v["temperature_c"] = temperature_c
    section = {"fever_masked": False, "vasopressors": [], "oxygen": {"device": "none"}}
    section.update(crs)
    if "hypotension" not in crs and not section["vasopressors"] and not v.keys() & {"sbp_mmhg", "map_mmhg"}:
        section["hypotension"] = False
    return {"patient": {"age_years": age}, "vitals": v, "crs": section}


def crs_grade(engine: aegrade.Engine, request: dict[str, Any]) -> int | None:
    result = engine.assess(request)
    assert result.crs is not None
    return result.crs.grade


def engine_with(**settings: Any) -> aegrade.Engine:
    by_ruleset: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        ruleset, name = key.split("__")
        by_ruleset.setdefault(ruleset.replace("_", "-"), {})[name] = value
    return aegrade.Engine(settings=by_ruleset)


# ---- fever -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature_c", "grade", "status"),
    [(37.9, 0, "no_crs"), (37.95, 0, "no_crs"), (BELOW_38, 0, "no_crs"), (38.0, 1, "graded"), (38.01, 1, "graded"), (41.0, 1, "graded")],
)
def test_fever_threshold_celsius(engine: aegrade.Engine, temperature_c: float, grade: int, status: str) -> None:
    result = engine.assess(crs_request(temperature_c=temperature_c))
    assert result.crs is not None
    assert (result.crs.grade, result.crs.status) == (grade, status)


@pytest.mark.parametrize(("temperature_f", "grade"), [(100.3, 0), (100.39, 0), (100.4, 1), (100.5, 1)])
def test_fever_threshold_fahrenheit(engine: aegrade.Engine, temperature_f: float, grade: int) -> None:
    request = crs_request(temperature_c=None, vitals={"temperature_f": temperature_f})
    result = engine.assess(request)
    assert result.crs is not None and result.crs.grade == grade
    # The evidence shows the value as sent and the converted value.
    if grade == 1:
        evidence = next(d for d in result.crs.drivers if d.rule == "crs.fever.present").evidence
        assert evidence["temperature_sent"]["temperature_f"] == temperature_f
        assert evidence["temperature_c"] == evidence["temperature_sent"]["converted_temperature_c"]


def test_temperature_not_reported_is_not_assessable(engine: aegrade.Engine) -> None:
    result = engine.assess(crs_request(temperature_c=None, oxygen={"device": "bipap"}))
    assert result.crs is not None
    assert (result.crs.grade, result.crs.status) == (None, "not_assessable")
    assert "fever" in result.crs.missing


# ---- oxygen ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "flow", "grade"),
    [
        ("nasal_cannula", 0.5, 2),
        ("nasal_cannula", 5.9, 2),
        ("nasal_cannula", 6.0, 2),
        ("nasal_cannula", ABOVE_6, 3),
        ("nasal_cannula", 6.1, 3),
        ("high_flow_nasal_cannula", 6.0, 2),
        ("high_flow_nasal_cannula", 6.1, 3),
        ("high_flow_nasal_cannula", 60, 3),
        ("blow_by", None, 2),
        ("blow_by", 10, 2),
        ("simple_facemask", None, 3),
        ("simple_facemask", 5, 3),
        ("simple_facemask", 6.0, 3),
        ("simple_facemask", 6.1, 3),
        ("nonrebreather", 15, 3),
        ("venturi", 4, 3),
        ("cpap", None, 4),
        ("bipap", None, 4),
        ("mechanical_ventilation", None, 4),
        ("none", None, 1),
    ],
)
def test_each_device_and_flow(engine: aegrade.Engine, device: str, flow: float | None, grade: int) -> None:
    oxygen: dict[str, Any] = {"device": device}
    if flow is not None:
        oxygen["flow_l_min"] = flow
    assert crs_grade(engine, crs_request(oxygen=oxygen)) == grade


@pytest.mark.parametrize(("flow", "grade"), [(5.9, 2), (6.0, 2), (6.1, 3)])
def test_facemask_graded_by_flow_when_set(flow: float, grade: int) -> None:
    engine = engine_with(astct_crs__facemask_low_flow="flow")
    result = engine.assess(crs_request(oxygen={"device": "simple_facemask", "flow_l_min": flow}))
    assert result.crs is not None and result.crs.grade == grade
    if flow <= 6:
        assert [i.setting for i in result.crs.interpretations] == ["astct-crs.facemask_low_flow"]


@pytest.mark.parametrize(("flow", "grade"), [(6.0, 3), (6.1, 3)])
def test_hfnc_graded_by_device_when_set(flow: float, grade: int) -> None:
    engine = engine_with(astct_crs__hfnc_low_flow="device")
    assert crs_grade(engine, crs_request(oxygen={"device": "high_flow_nasal_cannula", "flow_l_min": flow})) == grade


def test_interpretive_default_is_named_when_it_decides(engine: aegrade.Engine) -> None:
    result = engine.assess(crs_request(oxygen={"device": "high_flow_nasal_cannula", "flow_l_min": 4}))
    assert result.crs is not None
    assert [i.setting for i in result.crs.interpretations] == ["astct-crs.hfnc_low_flow"]
    assert "Interpretation" in result.crs.interpretations[0].text
    # ...and not named when it did not decide.
    result = engine.assess(crs_request(oxygen={"device": "high_flow_nasal_cannula", "flow_l_min": 40}))
    assert result.crs is not None and result.crs.interpretations == []


# ---- hypotension and vasopressors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("vasopressors", "grade"),
    [
        ([], 2),
        (["vasopressin"], 3),
        (["norepinephrine"], 3),
        (["other"], 3),
        (["norepinephrine", "vasopressin"], 3),
        (["norepinephrine", "epinephrine"], 4),
        (["phenylephrine", "dopamine", "vasopressin"], 4),
        (["norepinephrine", "epinephrine", "phenylephrine", "dopamine", "vasopressin", "other"], 4),
    ],
)
def test_each_vasopressor_count(engine: aegrade.Engine, vasopressors: list[str], grade: int) -> None:
    assert crs_grade(engine, crs_request(hypotension=True, vasopressors=vasopressors)) == grade


def test_vasopressin_alone_setting() -> None:
    engine = engine_with(astct_crs__vasopressin_alone="not_vasopressor")
    result = engine.assess(crs_request(hypotension=True, vasopressors=["vasopressin"]))
    assert result.crs is not None and result.crs.grade == 2
    assert [i.setting for i in result.crs.interpretations] == ["astct-crs.vasopressin_alone"]


def test_vasopressors_imply_hypotension(engine: aegrade.Engine) -> None:
    request = crs_request(vasopressors=["norepinephrine"])
    request["crs"].pop("hypotension", None)
    result = engine.assess(request)
    assert result.crs is not None and result.crs.grade == 3
    assert any("vasopressor is running" in n for n in result.crs.notes)


def test_no_fever_with_vasopressor_is_not_crs(engine: aegrade.Engine) -> None:
    result = engine.assess(crs_request(temperature_c=37.5, hypotension=True, vasopressors=["norepinephrine"]))
    assert result.crs is not None and (result.crs.grade, result.crs.status) == (0, "no_crs")


@pytest.mark.parametrize(
    ("age", "sbp", "grade"),
    [
        (10 / 365.25, 59, 2),  # neonate: SBP < 60
        (10 / 365.25, 60, 1),
        (28 / 365.25, 59.9, 2),  # day 28 is still neonatal
        (28 / 365.25, 60, 1),
        (29 / 365.25, 65, 2),  # day 29 is infancy: SBP < 70
        (0.5, 69, 2),
        (0.5, 70, 1),
        (1, 71, 2),  # 70 + 2 x 1 = 72
        (1, 72, 1),
        (6, 81, 2),  # 70 + 2 x 6 = 82
        (6, 82, 1),
        (6.9, 81.9, 2),  # completed years
        (10.9, 89, 2),  # 70 + 2 x 10 = 90
        (10.9, 90, 1),
        (11, 89.9, 2),  # over 10: SBP < 90
        (11, 90, 1),
        (45, 89, 2),
        (45, 90, 1),
    ],
)
def test_hypotension_from_sbp_by_age(engine: aegrade.Engine, age: float, sbp: float, grade: int) -> None:
    request = crs_request(age=age, vitals={"sbp_mmhg": sbp})
    request["crs"].pop("hypotension", None)
    result = engine.assess(request)
    assert result.crs is not None and result.crs.grade == grade
    if grade == 2:  # below the threshold: hypotension derived true from vitals
        assert (result.crs.status, result.crs.grade_max) == ("graded", 2)
        assert result.crs.domains["hypotension"] == 2
        note = next(n for n in result.crs.notes if "derived" in n)
    else:  # at or above it: a normal pressure does not rule out hypotension (fluids keep it normal)
        assert (result.crs.status, result.crs.grade_max) == ("incomplete", 2)
        assert result.crs.domains["hypotension"] is None and "hypotension" in result.crs.missing
        assert [(u.input, u.up_to) for u in result.crs.undetermined_by] == [("crs.hypotension", 2)]
        note = next(n for n in result.crs.notes if "stays unknown" in n)
    assert "SBP" in note  # the note names the threshold used


@pytest.mark.parametrize(("age", "map_mmhg", "grade"), [(45, 64, 2), (45, 64.9, 2), (45, 65, 1), (18, 64, 2), (17.9, 50, 1)])
def test_hypotension_from_map_for_adults(engine: aegrade.Engine, age: float, map_mmhg: float, grade: int) -> None:
    request = crs_request(age=age, vitals={"sbp_mmhg": 120, "map_mmhg": map_mmhg})
    request["crs"].pop("hypotension", None)
    assert crs_grade(engine, request) == grade


def test_map_alone_for_a_child_cannot_decide(engine: aegrade.Engine) -> None:
    request = crs_request(age=8, vitals={"map_mmhg": 40})
    request["crs"].pop("hypotension", None)
    result = engine.assess(request)
    assert result.crs is not None and "hypotension" in result.crs.missing


def test_reported_hypotension_wins_over_vitals(engine: aegrade.Engine) -> None:
    result = engine.assess(crs_request(hypotension=False, vitals={"sbp_mmhg": 70}))
    assert result.crs is not None and result.crs.grade == 1
    assert any("reported false" in n for n in result.crs.notes)


# ---- fever masked -------------------------------------------------------------------------------


def test_masked_fever_with_hypotension(engine: aegrade.Engine) -> None:
    result = engine.assess(crs_request(temperature_c=36.9, fever_masked=True, hypotension=True, vasopressors=["norepinephrine"]))
    assert result.crs is not None and result.crs.grade == 3


def test_masked_fever_without_findings_goes_to_clinician(engine: aegrade.Engine) -> None:
    result = engine.assess(crs_request(temperature_c=36.9, fever_masked=True))
    assert result.crs is not None
    assert (result.crs.grade, result.crs.status) == (None, "clinician_review")
    assert [i.setting for i in result.crs.interpretations] == ["astct-crs.masked_fever_without_findings"]
    assert any("clinician review" in n for n in result.crs.notes)


def test_masked_fever_without_findings_grade_1_when_set() -> None:
    engine = engine_with(astct_crs__masked_fever_without_findings="grade_1")
    assert crs_grade(engine, crs_request(temperature_c=36.9, fever_masked=True)) == 1


# ---- ICANS ------------------------------------------------------------------------------------


def icans(engine: aegrade.Engine, age: float = 45, **neuro: Any) -> tuple[int | None, str | None]:
    result = engine.assess({"patient": {"age_years": age}, "neuro": neuro})
    assert result.icans is not None
    return result.icans.grade, result.icans.tool


@pytest.mark.parametrize(("score", "grade"), [(10, 0), (9, 1), (8, 1), (7, 1), (6, 2), (3, 2), (2, 3), (1, 3), (0, 3)])
def test_ice_band_edges(engine: aegrade.Engine, score: int, grade: int) -> None:
    assert icans(engine, ice_score=score, consciousness="alert") == (grade, "ICE")


def test_ice_zero_unarousable_is_grade_4(engine: aegrade.Engine) -> None:
    assert icans(engine, ice_score=0, unable_to_perform=True, consciousness="unarousable") == (4, "ICE")
    assert icans(engine, ice_score=0, unable_to_perform=True) == (4, "ICE")


@pytest.mark.parametrize(("score", "grade"), [(0, 0), (1, 1), (8, 1), (9, 3), (10, 3), (32, 3)])
def test_capd_edges(engine: aegrade.Engine, score: int, grade: int) -> None:
    assert icans(engine, age=7, capd_score=score, consciousness="alert") == (grade, "CAPD")


def test_capd_one_to_eight_with_voice_is_grade_2(engine: aegrade.Engine) -> None:
    assert icans(engine, age=7, capd_score=5, consciousness="awakens_to_voice") == (2, "CAPD")


def test_capd_unable_is_grade_4(engine: aegrade.Engine) -> None:
    assert icans(engine, age=3, unable_to_perform=True) == (4, "CAPD")


@pytest.mark.parametrize(
    ("age", "cutoff", "tool"),
    [(11, 12, "CAPD"), (11.99, 12, "CAPD"), (12, 12, "ICE"), (12.5, 12, "ICE"), (12.99, 13, "CAPD"), (13, 13, "ICE")],
)
def test_age_cut_off_between_capd_and_ice(age: float, cutoff: float, tool: str, engine: aegrade.Engine) -> None:
    use = engine if cutoff == 12 else engine_with(astct_icans__capd_age_cutoff_years=cutoff)
    field = {"ice_score": 10} if tool == "ICE" else {"capd_score": 0}
    assert icans(use, age=age, **field) == (0, tool)
    wrong = {"capd_score": 0} if tool == "ICE" else {"ice_score": 10}
    with pytest.raises(aegrade.InvalidAssessment) as info:
        use.assess({"patient": {"age_years": age}, "neuro": wrong})
    assert info.value.errors[0].code == "wrong_tool"
    assert tool in info.value.errors[0].msg


def test_age_cut_off_is_named_in_the_contested_year(engine: aegrade.Engine) -> None:
    result = engine.assess({"patient": {"age_years": 12.4}, "neuro": {"ice_score": 6}})
    assert result.icans is not None
    assert [i.setting for i in result.icans.interpretations] == ["astct-icans.capd_age_cutoff_years"]
    result = engine.assess({"patient": {"age_years": 13}, "neuro": {"ice_score": 6}})
    assert result.icans is not None and result.icans.interpretations == []


def test_developmental_delay_selects_capd_at_any_age(engine: aegrade.Engine) -> None:
    result = engine.assess({"patient": {"age_years": 30, "developmental_delay": True}, "neuro": {"capd_score": 9}})
    assert result.icans is not None and (result.icans.grade, result.icans.tool) == (3, "CAPD")


@pytest.mark.parametrize(
    ("consciousness", "grade"),
    [("alert", 0), ("awakens_spontaneously", 1), ("awakens_to_voice", 2), ("awakens_to_tactile", 3), ("unarousable", 4)],
)
def test_each_consciousness_level(engine: aegrade.Engine, consciousness: str, grade: int) -> None:
    assert icans(engine, ice_score=10, consciousness=consciousness)[0] == grade


@pytest.mark.parametrize(
    ("seizure", "grade"),
    [
        ("none", 0),
        ("resolved_rapidly", 3),
        ("nonconvulsive_resolved_with_intervention", 3),
        ("prolonged_over_5_min", 4),
        ("repetitive_without_return_to_baseline", 4),
    ],
)
def test_each_seizure(engine: aegrade.Engine, seizure: str, grade: int) -> None:
    assert icans(engine, ice_score=10, seizure=seizure)[0] == grade


@pytest.mark.parametrize(("motor", "grade"), [("none", 0), ("tremor_or_myoclonus", 0), ("deep_focal_weakness", 4)])
def test_each_motor_finding(engine: aegrade.Engine, motor: str, grade: int) -> None:
    assert icans(engine, ice_score=10, motor=motor)[0] == grade


@pytest.mark.parametrize(
    ("edema", "signs", "grade"),
    [("none", [], 0), ("focal", [], 3), ("diffuse", [], 4)]
    + [("none", [sign], 4) for sign in ("posturing", "cn6_palsy", "papilledema", "cushings_triad")],
)
def test_each_icp_finding(engine: aegrade.Engine, edema: str, signs: list[str], grade: int) -> None:
    assert icans(engine, ice_score=10, cerebral_edema=edema, icp_signs=signs)[0] == grade


def test_sedation_makes_consciousness_not_assessable(engine: aegrade.Engine) -> None:
    result = engine.assess(
        {"patient": {"age_years": 45}, "neuro": {"consciousness": "unarousable", "consciousness_other_cause": True, "unable_to_perform": True}}
    )
    assert result.icans is not None
    assert (result.icans.grade, result.icans.status) == (None, "not_assessable")
    assert {"encephalopathy", "consciousness"} <= set(result.icans.missing)


def test_death_is_grade_5(engine: aegrade.Engine) -> None:
    assert icans(engine, ice_score=0, unable_to_perform=True, death_attributed=True)[0] == 5
    request = crs_request(death_attributed=True)
    assert crs_grade(engine, request) == 5
