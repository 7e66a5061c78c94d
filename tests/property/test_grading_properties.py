"""Properties of the grading, on inputs from aegrade.testing (2,000 examples each in CI, fixed seed).

- totality: every valid input gets a grade in range, or a documented null, and a grade_max that
  bounds it (v1.1: `incomplete` exactly when grade_max is higher);
- monotonicity: worsening any single input never lowers a grade (when every input that can decide
  the grade is reported; and, for partial inputs, never lowers the grade the reported ones establish);
- the grade is the worst domain;
- degrees F and C agree;
- the order of lists and keys does not matter;
- both evaluators agree (through assess(), and on arbitrary facts and settings);
- invalid input is refused, naming the field.
"""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aegrade
from aegrade.derive import fahrenheit_to_celsius
from aegrade.engine import default_engine
from aegrade.testing import assessments, fact_values, invalid_assessments
from aegrade.testing.strategies import _agree_with_neuro
from tests.profiles import examples

ENGINE = default_engine()
NULL_STATUSES = {"not_assessable", "clinician_review"}


def grades(payload: dict[str, Any]) -> tuple[int | None, int | None]:
    result = ENGINE.assess(payload)
    return (result.crs.grade if result.crs else None, result.icans.grade if result.icans else None)


# ---- totality -----------------------------------------------------------------------------------


@given(assessments())
def test_every_valid_input_gets_a_grade_in_range_or_a_documented_null(payload: dict[str, Any]) -> None:
    result = ENGINE.assess(payload)
    assert (result.crs is not None) == ("vitals" in payload or "crs" in payload)
    assert (result.icans is not None) == ("neuro" in payload)
    for part in (result.crs, result.icans):
        if part is None:
            continue
        if part.grade is None:
            assert part.status in NULL_STATUSES
            assert part.grade_max is None or 0 <= part.grade_max <= 5
        else:
            assert 0 <= part.grade <= 5
            assert part.status in ("graded", "incomplete", "no_crs")
            assert part.grade_max is not None and part.grade <= part.grade_max <= 5
            # incomplete exactly when an unreported input could raise the grade
            assert (part.status == "incomplete") == (part.grade_max > part.grade and part.status != "no_crs")
        if part.status == "no_crs":
            # no_crs only when nothing unreported could make it more than grade 1 (gate_stands_up_to)
            assert part.grade == 0 and part.grade_max is not None and part.grade_max <= 1
        for open_input in part.undetermined_by:
            assert part.grade_max is not None and open_input.up_to <= part.grade_max
        if part.grade:  # every grade of 1 or more names the rule that set it
            assert [d for d in part.drivers if d.drives and d.grade == part.grade]


# ---- worst domain -------------------------------------------------------------------------------


@given(assessments())
def test_the_grade_is_the_worst_domain(payload: dict[str, Any]) -> None:
    result = ENGINE.assess(payload)
    for part in (result.crs, result.icans):
        if part is not None and part.status in ("graded", "incomplete"):
            reported = [g for g in part.domains.values() if g is not None]
            assert part.grade == max(reported, default=0)
            assert set(part.missing) == {d for d, g in part.domains.items() if g is None}


# ---- monotonicity ------------------------------------------------------------------------------

CONSCIOUSNESS_ORDER = ["alert", "awakens_spontaneously", "awakens_to_voice", "awakens_to_tactile", "unarousable"]
SEIZURE_ORDER = [
    ["none"],
    ["resolved_rapidly", "nonconvulsive_resolved_with_intervention"],
    ["prolonged_over_5_min", "repetitive_without_return_to_baseline"],
]
EDEMA_ORDER = ["none", "focal", "diffuse"]
VASOPRESSORS = ["norepinephrine", "epinephrine", "phenylephrine", "dopamine", "vasopressin", "other"]


def _worsenings(payload: dict[str, Any], rnd: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Copies of `payload`, each with one input made worse (and still valid)."""
    out: list[tuple[str, dict[str, Any]]] = []

    def variant(name: str) -> dict[str, Any]:
        worse = copy.deepcopy(payload)
        out.append((name, worse))
        return worse

    vitals, crs, neuro = payload.get("vitals"), payload.get("crs"), payload.get("neuro")
    if vitals and "temperature_c" in vitals:
        variant("temperature up")["vitals"]["temperature_c"] = min(45.0, vitals["temperature_c"] + rnd.choice([0.01, 0.5, 2.0]))
    if vitals and "temperature_f" in vitals:
        variant("temperature F up")["vitals"]["temperature_f"] = min(113.0, vitals["temperature_f"] + rnd.choice([0.1, 1.0]))
    if vitals and "sbp_mmhg" in vitals:
        floor = max(vitals.get("map_mmhg", 20.0), vitals.get("dbp_mmhg", 20.0))
        worse = variant("SBP down")
        worse["vitals"]["sbp_mmhg"] = max(floor, vitals["sbp_mmhg"] - rnd.choice([0.5, 5.0, 30.0]))
    if vitals and "map_mmhg" in vitals:
        floor = vitals.get("dbp_mmhg", 20.0)
        variant("MAP down")["vitals"]["map_mmhg"] = max(floor, vitals["map_mmhg"] - rnd.choice([0.5, 10.0]))
    if crs is not None:
        if crs.get("hypotension") is not True:
            variant("hypotension reported")["crs"]["hypotension"] = True
        missing = [v for v in VASOPRESSORS if v not in (crs.get("vasopressors") or [])]
        if missing:
            worse = variant("vasopressor added")
            worse["crs"]["vasopressors"] = [*(crs.get("vasopressors") or []), rnd.choice(missing)]
            if worse["crs"].get("hypotension") is False:
                worse["crs"]["hypotension"] = True
        oxygen = crs.get("oxygen")
        if oxygen and oxygen.get("flow_l_min") and oxygen["device"] != "none":
            variant("flow up")["crs"]["oxygen"]["flow_l_min"] = min(80.0, oxygen["flow_l_min"] + rnd.choice([0.1, 1.0, 10.0]))
        if not oxygen or oxygen["device"] == "none":
            variant("oxygen started")["crs"]["oxygen"] = {"device": "nasal_cannula", "flow_l_min": rnd.choice([1.0, 6.0, 6.5])}
        variant("positive pressure")["crs"]["oxygen"] = {"device": rnd.choice(["cpap", "bipap", "mechanical_ventilation"])}
        for flag in ("hypotension_other_cause", "hypoxia_other_cause"):
            if crs.get(flag):
                variant(f"{flag} removed")["crs"][flag] = False
        if not crs.get("death_attributed"):
            variant("CRS death")["crs"]["death_attributed"] = True
    if neuro is not None:
        if "ice_score" in neuro and neuro["ice_score"] > 0 and not neuro.get("unable_to_perform"):
            variant("ICE down")["neuro"]["ice_score"] = neuro["ice_score"] - rnd.randint(1, neuro["ice_score"])
        if "ice" in neuro and not neuro.get("unable_to_perform"):
            item = rnd.choice([k for k, v in neuro["ice"].items() if v > 0] or [None])
            if item:
                variant("ICE item down")["neuro"]["ice"][item] -= 1
        if "capd_score" in neuro and neuro["capd_score"] < 32:
            variant("CAPD up")["neuro"]["capd_score"] = rnd.randint(neuro["capd_score"] + 1, 32)
        if "capd" in neuro:
            index = rnd.choice([i for i, v in enumerate(neuro["capd"]) if v < 4] or [None])
            if index is not None:
                variant("CAPD item up")["neuro"]["capd"][index] += 1
        level = neuro.get("consciousness")
        position = CONSCIOUSNESS_ORDER.index(level) if level else -1
        if position < len(CONSCIOUSNESS_ORDER) - 1 and not neuro.get("unable_to_perform"):  # unable: unarousable already
            variant("consciousness down")["neuro"]["consciousness"] = rnd.choice(CONSCIOUSNESS_ORDER[max(position + 1, 1):])
        if neuro.get("consciousness_other_cause"):
            variant("other cause removed")["neuro"]["consciousness_other_cause"] = False
        seizure = neuro.get("seizure")
        tier = next((i for i, t in enumerate(SEIZURE_ORDER) if seizure in t), -1)
        if tier < len(SEIZURE_ORDER) - 1:
            variant("seizure worse")["neuro"]["seizure"] = rnd.choice(SEIZURE_ORDER[tier + 1])
        if neuro.get("motor") != "deep_focal_weakness":
            variant("weakness")["neuro"]["motor"] = "deep_focal_weakness"
        edema = neuro.get("cerebral_edema")
        position = EDEMA_ORDER.index(edema) if edema else -1
        if position < 2:
            variant("edema worse")["neuro"]["cerebral_edema"] = EDEMA_ORDER[position + 1]
        signs = neuro.get("icp_signs") or []
        absent = [s for s in ("posturing", "cn6_palsy", "papilledema", "cushings_triad") if s not in signs]
        if absent:
            variant("ICP sign added")["neuro"]["icp_signs"] = [*signs, rnd.choice(absent)]
        if not neuro.get("death_attributed"):
            variant("ICANS death")["neuro"]["death_attributed"] = True
    # One fact, one place: the thrombosis section repeats neuro's signs, so they must agree. A
    # variant that reports in neuro the absence of a sign the thrombosis section reported (seizure
    # "none" where thrombosis.seizure was true, say) is a better state, not a worse one: left out.
    kept: list[tuple[str, dict[str, Any]]] = []
    for name, worse in out:
        if "thrombosis" in worse and "neuro" in worse:
            _agree_with_neuro(worse["thrombosis"], worse["neuro"])
            before = payload.get("thrombosis", {})
            if any(before.get(k) is True and v is False for k, v in worse["thrombosis"].items()):
                continue
        kept.append((name, worse))
    return kept


def _complete(payload: dict[str, Any]) -> bool:
    """Every grade of the assessment is determined: nothing unreported could raise it."""
    result = ENGINE.assess(payload)
    return all(part is None or part.grade is None or part.grade_max == part.grade for part in (result.crs, result.icans))


@given(assessments(complete=True), st.randoms(use_true_random=False))
def test_worsening_any_single_input_never_lowers_a_grade(payload: dict[str, Any], rnd: random.Random) -> None:
    assert _complete(payload), payload  # the strategy reports every deciding input
    before = grades(payload)
    for name, worse in _worsenings(payload, rnd):
        after = grades(worse)
        for b, a, which in zip(before, after, ("CRS", "ICANS"), strict=True):
            if b is not None and a is not None:
                assert a >= b, f"{name}: {which} grade went from {b} to {a}\nbefore: {payload}\nafter: {worse}"


# 200 examples, not the profile's 400: each example grades some twenty variants, and the thresholds
# themselves are pinned, at and just above each one, by tests/unit/test_boundaries.py.
@settings(max_examples=examples(200))
@given(assessments(), st.randoms(use_true_random=False))
def test_worsening_a_reported_input_never_lowers_the_established_grade(payload: dict[str, Any], rnd: random.Random) -> None:
    """With inputs left unreported, `grade` is what the reported ones establish: a worse report
    cannot establish less."""
    before = grades(payload)
    for name, worse in _worsenings(payload, rnd):
        after = grades(worse)
        for b, a, which in zip(before, after, ("CRS", "ICANS"), strict=True):
            if b is not None and a is not None:
                assert a >= b, f"{name}: {which} grade went from {b} to {a}\nbefore: {payload}\nafter: {worse}"


# ---- unit equivalence ---------------------------------------------------------------------------


@given(assessments(), st.floats(77, 113, allow_nan=False))
def test_fahrenheit_and_celsius_agree(payload: dict[str, Any], temperature_f: float) -> None:
    in_f = copy.deepcopy(payload)
    in_f.setdefault("vitals", {}).pop("temperature_c", None)
    in_f["vitals"]["temperature_f"] = temperature_f
    in_c = copy.deepcopy(in_f)
    del in_c["vitals"]["temperature_f"]
    in_c["vitals"]["temperature_c"] = fahrenheit_to_celsius(temperature_f)
    result_f, result_c = ENGINE.assess(in_f), ENGINE.assess(in_c)
    assert result_f.crs is not None and result_c.crs is not None
    assert (result_f.crs.grade, result_f.crs.status) == (result_c.crs.grade, result_c.crs.status)
    icans_f, icans_c = (r.icans.grade if r.icans else None for r in (result_f, result_c))
    assert icans_f == icans_c  # (grades() would assess both again)


# ---- order independence -------------------------------------------------------------------------


def _comparable(result: aegrade.AssessmentResult) -> dict[str, Any]:
    data = result.model_dump(mode="json", exclude={"id", "evaluated_at"})
    return data


def _reordered(payload: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    def shuffle_keys(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rnd.shuffle(items)
            return {k: shuffle_keys(v) for k, v in items}
        return value

    out = shuffle_keys(copy.deepcopy(payload))
    for section, key in (("crs", "vasopressors"), ("neuro", "icp_signs")):
        if out.get(section, {}).get(key):
            rnd.shuffle(out[section][key])
    return out  # type: ignore[no-any-return]


@settings(max_examples=examples(200))  # order is structural: 200 shuffles of a payload, graded twice each
@given(assessments(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(payload: dict[str, Any], rnd: random.Random) -> None:
    reordered = _reordered(payload, rnd)
    assert _comparable(ENGINE.assess(payload)) == _comparable(ENGINE.assess(reordered))


# ---- the two evaluators -------------------------------------------------------------------------


# 100 examples: every ENGINE.assess of every property here (thousands a run) already compares the
# two evaluators and raises EvaluatorDisagreement; this test only names that check.
@settings(max_examples=examples(100))
@given(assessments())
def test_both_evaluators_agree_through_assess(payload: dict[str, Any]) -> None:
    ENGINE.assess(payload)  # raises EvaluatorDisagreement if they differ


def _settings_strategy(subject: str) -> st.SearchStrategy[dict[str, Any]]:
    runner = ENGINE._runners[subject]  # noqa: SLF001 - the test reaches the runners on purpose
    choices: dict[str, st.SearchStrategy[Any]] = {}
    for setting in runner.ruleset.file.settings:
        if setting.kind == "choice":
            choices[setting.id] = st.sampled_from(sorted(setting.choices))
        else:
            choices[setting.id] = st.sampled_from([setting.minimum, setting.default, setting.maximum]).map(float)
    return st.fixed_dictionaries(choices)


@given(st.data())
def test_both_evaluators_agree_on_arbitrary_facts_and_settings(data: st.DataObject) -> None:
    for subject in ("crs", "icans", "thrombosis", "blinatumomab"):
        runner = ENGINE._runners[subject]  # noqa: SLF001
        facts = data.draw(fact_values(subject), label=f"{subject} facts")
        settings = data.draw(_settings_strategy(subject), label=f"{subject} settings")
        certain, possible = runner.reference.fired(facts, settings)
        assert certain <= possible
        assert runner.durable.fired(facts, settings) == (certain, possible)
        if runner.derive_reference is not None and runner.derive_durable is not None:
            assert runner.derive_durable.fired(facts, settings) == runner.derive_reference.fired(facts, settings)


# ---- invalid input ------------------------------------------------------------------------------


@given(invalid_assessments())
def test_invalid_input_is_refused_naming_the_field(case: tuple[dict[str, Any], tuple[Any, ...]]) -> None:
    payload, loc = case
    try:
        ENGINE.assess(payload)
    except aegrade.InvalidAssessment as error:
        locs = [e.loc for e in error.errors]
        assert any(tuple(found[: len(loc)]) == loc for found in locs), (loc, locs)
    else:
        raise AssertionError(f"accepted invalid input at {loc}: {payload}")


@pytest.mark.slow
def test_the_property_inputs_reach_every_status() -> None:
    """The strategies are not too narrow: a sample reaches every status of both results."""
    seen: set[tuple[str, str]] = set()

    # A coverage check, not a search for a counterexample: it must not depend on the profile's
    # random draws (with the dev profile's 300 random examples a rare status was missed by chance).
    @settings(max_examples=2000, derandomize=True, deadline=None)
    @given(assessments())
    def sample(payload: dict[str, Any]) -> None:
        result = ENGINE.assess(payload)
        for name, part in (("crs", result.crs), ("icans", result.icans)):
            if part is not None:
                seen.add((name, part.status))

    sample()
    expected = {("crs", s) for s in ("graded", "incomplete", "no_crs", "not_assessable", "clinician_review")} | {
        ("icans", s) for s in ("graded", "incomplete", "not_assessable")
    }
    assert expected <= seen, expected - seen


def test_worsening_list_is_not_empty() -> None:
    payload = {"patient": {"age_years": 40}, "vitals": {"temperature_c": 38.0}, "crs": {}, "neuro": {"ice_score": 9}}
    names = {name for name, _ in _worsenings(payload, random.Random(0))}
    assert {"temperature up", "ICE down", "vasopressor added"} <= names
    assert len(list(itertools.islice(names, 5))) == 5
