"""Properties of the thrombosis flags and the blinatumomab actions (issue 4)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from aegrade.engine import default_engine
from aegrade.facts import CHECKBOXES
from aegrade.models import ThrombosisSection
from aegrade.rulefile import AllOf, Condition, FactTest, Rule, ScaledFact
from aegrade.testing import assessments, thrombosis_sections

ENGINE = default_engine()
THROMBOSIS = ENGINE._runners["thrombosis"].ruleset  # noqa: SLF001
INPUTS = set(ThrombosisSection.model_fields)


def required_inputs(rule: Rule) -> set[str]:
    """Request fields a rule cannot fire without: tests reached through `all` only, that need the
    field present (not `absent`, and not a checkbox tested false, which absence satisfies)."""
    found: set[str] = set()

    def walk(condition: Condition) -> None:
        if isinstance(condition, AllOf):
            for child in condition.all:
                walk(child)
        elif isinstance(condition, FactTest) and condition.op != "absent":
            if condition.fact in INPUTS and not (condition.fact in CHECKBOXES and condition.value is False):
                found.add(condition.fact)
            if isinstance(condition.ref, ScaledFact) and condition.ref.fact in INPUTS:
                found.add(condition.ref.fact)

    walk(rule.when)
    return found


def flags(payload: dict[str, Any]) -> dict[str, str]:
    return {f.rule: f.severity for f in ENGINE.assess(payload).flags}


@given(st.builds(lambda p, t: {"patient": p, "thrombosis": t}, st.fixed_dictionaries({"age_years": st.floats(0, 30)}), thrombosis_sections()))
def test_a_flag_never_fires_when_one_of_its_inputs_is_missing(payload: dict[str, Any]) -> None:
    fired = flags(payload)
    for rule in THROMBOSIS.rules:
        if rule.id not in fired:
            continue
        for field in required_inputs(rule):
            reduced = copy.deepcopy(payload)
            reduced["thrombosis"].pop(field, None)
            if field == "lmwh_agent":
                reduced["thrombosis"].pop("lmwh_intent", None)
            assert rule.id not in flags(reduced), f"{rule.id} fired without {field}"


def test_required_inputs_are_found() -> None:
    by_id = {r.id: r for r in THROMBOSIS.rules}
    assert required_inputs(by_id["asp.lab_fibrinogen_ctcae_g3"]) == {"fibrinogen_g_L", "fibrinogen_lln_g_L"}
    assert required_inputs(by_id["asp.ac_antixa_subtherapeutic"]) == {"anti_xa_hours_post_dose", "anti_xa_U_mL"}
    assert "lmwh_agent" not in required_inputs(by_id["asp.vte_prophylaxis_not_documented"])  # absent is the point


FIBRINOGEN_RANK = {None: 0, "LAB-FIBRINOGEN-CTCAE-G3": 1, "LAB-FIBRINOGEN-CTCAE-G4": 2}


def fibrinogen_flag(fibrinogen: float, lln: float | None) -> int:
    section: dict[str, Any] = {"fibrinogen_g_L": fibrinogen}
    if lln is not None:
        section["fibrinogen_lln_g_L"] = lln
    ids = {f.id for f in ENGINE.assess({"patient": {"age_years": 7}, "thrombosis": section}).flags}
    found = [FIBRINOGEN_RANK[i] for i in ids if i in FIBRINOGEN_RANK]
    assert len(found) <= 1, ids  # one fibrinogen grade at a time
    return max(found, default=0)


@given(
    st.floats(0, 20, allow_nan=False),
    st.floats(0, 20, allow_nan=False),
    st.one_of(st.none(), st.sampled_from([1.5, 1.8, 2.0, 4.0]), st.floats(0.01, 20, allow_nan=False)),
)
def test_a_lower_fibrinogen_never_gives_a_milder_fibrinogen_flag(a: float, b: float, lln: float | None) -> None:
    low, high = sorted((a, b))
    assert fibrinogen_flag(low, lln) >= fibrinogen_flag(high, lln)


GRADE_ACTIONS = {
    "BLIN-CRS-G3-INTERRUPT", "BLIN-CRS-G4-DISCONTINUE", "BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G3-DISCONTINUE",
    "BLIN-NEURO-G4-DISCONTINUE",
}


@given(assessments())
def test_the_blinatumomab_action_always_matches_the_grade(payload: dict[str, Any]) -> None:
    assume("blinatumomab" in payload)
    result = ENGINE.assess(payload)
    ids = {a.id for a in result.actions}
    crs = result.crs.grade if result.crs else None
    icans = result.icans.grade if result.icans else None
    assert ("BLIN-CRS-G3-INTERRUPT" in ids) == (crs == 3)
    assert ("BLIN-CRS-G4-DISCONTINUE" in ids) == (crs == 4)
    assert ("BLIN-NEURO-G4-DISCONTINUE" in ids) == (icans == 4)
    assert (len({"BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G3-DISCONTINUE"} & ids) == 1) == (icans == 3)
    if (crs is None or crs <= 2 or crs == 5) and (icans is None or icans <= 2 or icans == 5):
        assert not ids & GRADE_ACTIONS
    seizures = (payload["blinatumomab"].get("seizures_this_course") or 0) >= 2
    assert ("BLIN-SEIZURE-DISCONTINUE" in ids) == seizures
    interrupted = "BLIN-CRS-G3-INTERRUPT" in ids or "BLIN-NEURO-G3-WITHHOLD" in ids
    assert ("BLIN-INTERRUPTION-CYCLE" in ids) == interrupted == ("BLIN-RESTART-PREMEDICATION" in ids)
    for action in result.actions:
        assert action.drug == "blinatumomab" and action.citation
        if action.id != "BLIN-SEIZURE-DISCONTINUE":  # each grade-driven action names the interpretation
            assert [i.setting for i in action.interpretations] == ["blinatumomab-label-actions.label_grade_source"]
