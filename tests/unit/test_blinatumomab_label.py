"""The blinatumomab label actions (blinatumomab-actions.md v1.1): discontinuation supersedes, the low
dose step in the band's own unit, the label's own grading scale (CTCAE v4.03 beside ASTCT), and the
clinician-graded CTCAE neurological terms."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aegrade
from aegrade.derive import body_surface_area

NEURO_NONE = {"seizure": "none", "motor": "none", "cerebral_edema": "none", "icp_signs": []}
RESTARTS = {"BLIN-CRS-G3-INTERRUPT", "BLIN-NEURO-G3-WITHHOLD", "BLIN-INTERRUPTION-CYCLE", "BLIN-RESTART-PREMEDICATION"}
SETTINGS = ("most_restrictive", "ctcae", "astct")


@pytest.fixture(scope="module", params=SETTINGS)
def engines(request: pytest.FixtureRequest) -> aegrade.Engine:
    return aegrade.Engine(settings={"blinatumomab-label-actions": {"label_grade_source": request.param}}, self_test=False)


def icans3(*, weight: float, height: float | None, dose: float, unit: str, age: float = 7) -> dict[str, Any]:
    patient: dict[str, Any] = {"age_years": age, "weight_kg": weight}
    if height is not None:
        patient["height_cm"] = height
    neuro = {"capd_score": 10, "consciousness": "alert", **NEURO_NONE} if age < 12 else {
        "ice_score": 2, "consciousness": "alert", **NEURO_NONE}
    return {"patient": patient, "neuro": neuro, "blinatumomab": {"dose": {"value": dose, "unit": unit}}}


def action_ids(result: aegrade.AssessmentResult) -> list[str]:
    return [a.id for a in result.actions]


# ---- body surface area and the low step ------------------------------------------------------------


def test_mosteller() -> None:
    assert body_surface_area(121.5, 24, 3600) == pytest.approx(0.9)  # sqrt(121.5 x 24 / 3600) = 0.9
    assert body_surface_area(170, 70, 3600) == pytest.approx(math.sqrt(170 * 70 / 3600))
    assert body_surface_area(30, 0.001, 3600) > 0  # the smallest height and weight still convert (no division by 0)


# BSA 0.90 m2: the low step of the BSA band (5 mcg/m2/day) is 4.5 mcg/day; 10% is allowed for rounding.
@pytest.mark.parametrize(
    ("dose_mcg_day", "low_step"),
    [(4.04, False), (4.05, True), (4.5, True), (4.95, True), (4.96, False), (13.5, False)],
)
def test_low_step_charted_in_mcg_per_day_under_45_kg(dose_mcg_day: float, low_step: bool) -> None:
    result = aegrade.assess(icans3(weight=24, height=121.5, dose=dose_mcg_day, unit="mcg/day"))
    assert result.icans is not None and result.icans.grade == 3
    expected = "BLIN-NEURO-G3-DISCONTINUE" if low_step else "BLIN-NEURO-G3-WITHHOLD"
    assert action_ids(result)[0] == expected
    if low_step:
        assert not RESTARTS & set(action_ids(result))


# 70 kg, 170 cm: BSA 1.82 m2; the low step of the fixed band is 9 mcg/day = 4.95 mcg/m2/day.
@pytest.mark.parametrize(("dose_per_m2", "low_step"), [(4.4, False), (4.5, True), (5.0, True), (5.5, False), (15, False)])
def test_low_step_charted_per_m2_at_45_kg_or_more(dose_per_m2: float, low_step: bool) -> None:
    result = aegrade.assess(icans3(weight=70, height=170, dose=dose_per_m2, unit="mcg/m2/day", age=40))
    assert ("BLIN-NEURO-G3-DISCONTINUE" in action_ids(result)) is low_step
    assert ("BLIN-NEURO-G3-WITHHOLD" in action_ids(result)) is not low_step


def test_same_unit_is_compared_as_charted() -> None:
    assert action_ids(aegrade.assess(icans3(weight=24, height=None, dose=5, unit="mcg/m2/day")))[0] == (
        "BLIN-NEURO-G3-DISCONTINUE"
    )
    assert action_ids(aegrade.assess(icans3(weight=24, height=None, dose=15, unit="mcg/m2/day")))[0] == (
        "BLIN-NEURO-G3-WITHHOLD"
    )


def test_other_unit_without_height_leaves_the_step_open() -> None:
    result = aegrade.assess(icans3(weight=24, height=None, dose=4.5, unit="mcg/day"))
    assert result.actions == []
    open_actions = {a.id: a for a in result.undetermined_actions}
    assert {"BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G3-DISCONTINUE"} <= set(open_actions)
    assert "patient.height_cm" in open_actions["BLIN-NEURO-G3-DISCONTINUE"].missing
    assert any("height_cm" in note for note in result.notes)


# ---- the label's grading scale ---------------------------------------------------------------------

ONE_PRESSOR = {
    "patient": {"age_years": 40, "weight_kg": 70},
    "vitals": {"temperature_c": 39.0},
    "crs": {"fever_masked": False, "hypotension": True, "vasopressors": ["norepinephrine"], "oxygen": {"device": "none"}},
    "blinatumomab": {"dose": {"value": 28, "unit": "mcg/day"}},
}


def test_one_pressor_under_most_restrictive_discontinues_and_shows_both_scales() -> None:
    result = aegrade.assess(ONE_PRESSOR)
    assert result.crs is not None and result.crs.grade == 3
    ctcae = {o.ruleset.split("@")[0]: o for o in result.other_scales}["ctcae-v403-crs"]
    assert (ctcae.scale, ctcae.grade) == ("CTCAE v4.03", 4)
    assert action_ids(result) == ["BLIN-CRS-G4-DISCONTINUE"]
    decided = result.actions[0].decided_by[0]
    assert (decided.subject, decided.grade, decided.scale) == ("crs", 4, "CTCAE v4.03")
    assert decided.other == ["ASTCT 2019: grade 3"]


@pytest.mark.parametrize(("source", "expected"), [("astct", "BLIN-CRS-G3-INTERRUPT"), ("ctcae", "BLIN-CRS-G4-DISCONTINUE")])
def test_one_pressor_under_each_scale(source: str, expected: str) -> None:
    engine = aegrade.Engine(settings={"blinatumomab-label-actions": {"label_grade_source": source}}, self_test=False)
    assert action_ids(engine.assess(ONE_PRESSOR))[0] == expected


def test_tremor_graded_by_the_clinician_counts_for_the_label() -> None:
    body = {
        "patient": {"age_years": 40, "weight_kg": 70},
        "neuro": {"ice_score": 10, "consciousness": "alert", **NEURO_NONE, "motor": "tremor_or_myoclonus",
                  "ctcae": [{"term": "tremor", "grade": 3, "version": "5.0"}]},
        "blinatumomab": {"dose": {"value": 28, "unit": "mcg/day"}},
    }
    result = aegrade.assess(body)
    assert result.icans is not None and result.icans.grade == 0
    assert action_ids(result)[0] == "BLIN-NEURO-G3-WITHHOLD"
    assert result.actions[0].decided_by[0].scale.startswith("CTCAE")


def test_unknown_ctcae_term_is_refused_naming_it() -> None:
    body = {"patient": {"age_years": 40}, "neuro": {"ice_score": 10, "ctcae": [{"term": "nausea", "grade": 3, "version": "5.0"}]}}
    with pytest.raises(aegrade.InvalidAssessment) as info:
        aegrade.assess(body)
    assert info.value.errors[0].loc == ("neuro", "ctcae", 0, "term")


# ---- discontinuation supersedes ------------------------------------------------------------------


def test_second_seizure_supersedes_the_restart_and_names_it() -> None:
    body = icans3(weight=70, height=None, dose=28, unit="mcg/day", age=40)
    body["blinatumomab"]["seizures_this_course"] = 2
    result = aegrade.assess(body)
    assert action_ids(result) == ["BLIN-SEIZURE-DISCONTINUE"]
    assert set(result.actions[0].superseded) == {
        "BLIN-NEURO-G3-WITHHOLD", "BLIN-INTERRUPTION-CYCLE", "BLIN-RESTART-PREMEDICATION"}


def test_actions_are_listed_most_restrictive_first() -> None:
    body = {
        "patient": {"age_years": 40, "weight_kg": 70},
        "vitals": {"temperature_c": 39.0},
        "crs": {"fever_masked": False, "hypotension": False, "vasopressors": [],
                "oxygen": {"device": "nonrebreather", "flow_l_min": 10}, "ctcae_v4_grade3": False},
        "neuro": {"ice_score": 0, "unable_to_perform": True},
        "blinatumomab": {"dose": {"value": 28, "unit": "mcg/day"}},
    }
    result = aegrade.assess(body)
    assert action_ids(result) == ["BLIN-NEURO-G4-DISCONTINUE"]  # the CRS interrupt and restart are superseded


@st.composite
def label_cases(draw: st.DrawFn) -> dict[str, Any]:
    weight = draw(st.sampled_from([20, 44.9, 45, 80]))
    body: dict[str, Any] = {"patient": {"age_years": 40 if weight >= 45 else 8, "weight_kg": weight}}
    if draw(st.booleans()):
        body["patient"]["height_cm"] = draw(st.sampled_from([110, 130, 175]))
    if draw(st.booleans()):
        oxygen = draw(st.sampled_from([{"device": "none"}, {"device": "nonrebreather"}, {"device": "bipap"},
                                       {"device": "nasal_cannula", "flow_l_min": 2}]))
        body["vitals"] = {"temperature_c": draw(st.sampled_from([37.5, 38.0, 39.5]))}
        vasopressors = draw(st.sampled_from([[], ["norepinephrine"], ["norepinephrine", "epinephrine"]]))
        body["crs"] = {"fever_masked": draw(st.booleans()), "hypotension": bool(vasopressors) or draw(st.booleans()),
                       "vasopressors": vasopressors, "oxygen": oxygen}
        if draw(st.booleans()):
            body["crs"]["ctcae_v4_grade3"] = draw(st.booleans())
    if draw(st.booleans()):
        score = {"ice_score": draw(st.integers(0, 10))} if weight >= 45 else {"capd_score": draw(st.integers(0, 32))}
        body["neuro"] = {**score, "consciousness": draw(st.sampled_from(["alert", "awakens_to_voice", "awakens_to_tactile"])),
                         **NEURO_NONE}
        if draw(st.booleans()):
            body["neuro"]["ctcae"] = [{"term": "tremor", "grade": draw(st.integers(1, 4)), "version": "5.0"}]
    section: dict[str, Any] = {}
    if draw(st.booleans()):
        section["dose"] = draw(st.sampled_from([{"value": 9, "unit": "mcg/day"}, {"value": 28, "unit": "mcg/day"},
                                                {"value": 5, "unit": "mcg/m2/day"}, {"value": 15, "unit": "mcg/m2/day"},
                                                {"value": 4.5, "unit": "mcg/day"}]))
    for name, values in (("seizures_this_course", st.integers(0, 3)), ("days_to_resolution", st.sampled_from([3, 7, 8])),
                         ("recurred_after_restart", st.booleans())):
        if draw(st.booleans()):
            section[name] = draw(values)
    body["blinatumomab"] = section
    return body


@given(label_cases())
def test_no_restart_beside_an_established_discontinuation(engines: aegrade.Engine, body: dict[str, Any]) -> None:
    result = engines.assess(body)
    ids = action_ids(result)
    if any(i.endswith("DISCONTINUE") for i in ids):
        assert not RESTARTS & set(ids), ids
        assert not RESTARTS & {a.id for a in result.undetermined_actions}
    order = ["SEIZURE", "CRS-G4", "NEURO-G4", "NEURO-G3-DISCONTINUE", "CRS-G3", "NEURO-G3-WITHHOLD", "CYCLE", "PREMEDICATION"]
    ranks = [next(i for i, key in enumerate(order) if key in action) for action in ids]
    assert ranks == sorted(ranks)
