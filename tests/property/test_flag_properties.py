"""Properties of the thrombosis flags and the blinatumomab actions (issue 4)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from aegrade.engine import Engine, default_engine
from aegrade.facts import CHECKBOXES
from aegrade.models import ThrombosisSection
from aegrade.rulefile import AllOf, Condition, FactTest, Rule, ScaledFact
from aegrade.testing import assessments, thrombosis_sections

ENGINE = default_engine()
ASTCT_LABEL = Engine(settings={"blinatumomab-label-actions": {"label_grade_source": "astct"}}, self_test=False)
"""The label actions read on the ASTCT grades alone, so that each can be checked against the result's grades."""
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


def _determined(part: Any) -> int | None:
    """The grade when nothing unreported could change it, else None."""
    if part is None or part.grade is None or part.grade_max != part.grade:
        return None
    return part.grade  # type: ignore[no-any-return]


@given(assessments())
def test_the_blinatumomab_action_always_matches_the_grade(payload: dict[str, Any]) -> None:
    """A grade-driven action is given exactly when the grade is established and determined (v1.1:
    the grade is an interval [grade, grade_max]; an action that only the upper part of it
    supports is undetermined, never given)."""
    assume("blinatumomab" in payload)
    result = ASTCT_LABEL.assess(payload)
    ids = {a.id for a in result.actions}
    open_ids = {a.id for a in result.undetermined_actions}
    assert not ids & open_ids
    discontinued = any(i.endswith("DISCONTINUE") for i in ids)  # it supersedes every restart (v1.1 §1)
    crs, icans = _determined(result.crs), _determined(result.icans)
    assert ("BLIN-CRS-G3-INTERRUPT" in ids) == (crs == 3 and not discontinued)
    assert ("BLIN-CRS-G4-DISCONTINUE" in ids) == (crs == 4)
    assert ("BLIN-NEURO-G4-DISCONTINUE" in ids) == (icans == 4)
    neuro_3 = {"BLIN-NEURO-G3-WITHHOLD", "BLIN-NEURO-G3-DISCONTINUE"}
    assert len(neuro_3 & ids) <= 1
    if neuro_3 & ids:
        assert icans == 3
    if icans == 3 and not discontinued:  # withhold or discontinue, or both open while the dose step is not known
        assert len(neuro_3 & ids) == 1 or neuro_3 <= open_ids
    for part in (result.crs, result.icans):  # a grade that could still be 3 or 4 never drives an action as certain
        if part is not None and part.grade is not None and part.grade_max is not None and part.grade_max > part.grade:
            name = "CRS" if part is result.crs else "NEURO"
            assert not {a for a in ids if a.startswith(f"BLIN-{name}-G")}
    for part, name in ((result.crs, "CRS"), (result.icans, "NEURO")):
        actions_of = {a for a in GRADE_ACTIONS if a.startswith(f"BLIN-{name}-")}
        if part is None:  # not assessed: never a certain action (an open one may be listed)
            assert not ids & actions_of
            continue
        ceiling = part.grade_max if part.grade_max is not None else part.grade
        if ceiling is None or ceiling <= 2 or part.grade == 5:
            assert not (ids | open_ids) & actions_of
    seizures = (payload["blinatumomab"].get("seizures_this_course") or 0) >= 2
    assert ("BLIN-SEIZURE-DISCONTINUE" in ids) == seizures
    interrupted = "BLIN-CRS-G3-INTERRUPT" in ids or "BLIN-NEURO-G3-WITHHOLD" in ids
    assert ("BLIN-INTERRUPTION-CYCLE" in ids) == interrupted == ("BLIN-RESTART-PREMEDICATION" in ids)
    if discontinued:
        assert not ids & {"BLIN-CRS-G3-INTERRUPT", "BLIN-NEURO-G3-WITHHOLD", "BLIN-INTERRUPTION-CYCLE", "BLIN-RESTART-PREMEDICATION"}
    for action in result.actions:
        assert action.drug == "blinatumomab" and action.citation
        if action.id != "BLIN-SEIZURE-DISCONTINUE":  # each grade-driven action names the interpretation
            assert [i.setting for i in action.interpretations] == ["blinatumomab-label-actions.label_grade_source"]
