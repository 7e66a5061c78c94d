"""The engine's safety checks: evaluator disagreement, lost results, safe encoding for durable_rules."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

import aegrade
from aegrade import _durable
from aegrade.errors import ERROR_CODES
from aegrade.facts import CATALOGUES
from aegrade.reference import compile_condition
from aegrade.rulefile import FactTest, NotOf, AllOf, AnyOf

REPO = Path(__file__).resolve().parents[2]
REQUEST = {"patient": {"age_years": 57}, "vitals": {"temperature_c": 39.5}, "crs": {"fever_masked": False, "hypotension": True, "vasopressors": ["norepinephrine"], "oxygen": {"device": "nasal_cannula", "flow_l_min": 2}}}


class _Fixed:
    """An evaluator that always answers the same set (to prove that a disagreement is caught)."""

    def __init__(self, certain: frozenset[str]) -> None:
        self.answer = (certain, certain)

    def fired(self, facts: Any, settings: Any) -> tuple[frozenset[str], frozenset[str]]:
        return self.answer


def test_evaluator_disagreement_is_an_error_never_a_chosen_grade() -> None:
    engine = aegrade.Engine(self_test=False)
    runner = engine._runners["crs"]
    engine._runners["crs"] = dataclasses.replace(runner, durable=_Fixed(frozenset({"crs.oxygen.positive_pressure"})))  # type: ignore[arg-type]
    with pytest.raises(aegrade.EvaluatorDisagreement) as info:
        engine.assess(REQUEST)
    assert "crs.oxygen.positive_pressure" in str(info.value)
    assert info.value.code == "evaluator_disagreement"


_real_start = _durable._dre.start_action_for_state


def _actions_taken_elsewhere(handle: Any, state: Any) -> None:
    """What engine-notes.md saw when another thread ran the actions: the queue is empty for us."""
    started = _real_start(handle, state)
    while started:
        started = _durable._dre.complete_and_start_action(handle, state)
    return None


def _renamed_first_action(handle: Any, state: Any) -> Any:
    started = _real_start(handle, state)
    return (started[0], re.sub(r'^\{"[^"]+"', '{"crs.made_up"', started[1])) if started else started


def test_lost_result_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = aegrade.Engine(self_test=False)
    runner = engine._runners["crs"]
    monkeypatch.setattr(_durable._dre, "start_action_for_state", _actions_taken_elsewhere)
    with pytest.raises(aegrade.LostResult):
        runner.durable.fired({"temperature_c": 39.0}, runner.settings)


def test_unexpected_action_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = aegrade.Engine(self_test=False)
    runner = engine._runners["crs"]
    monkeypatch.setattr(_durable._dre, "start_action_for_state", _renamed_first_action)
    with pytest.raises(aegrade.EngineError, match="unexpected action"):
        runner.durable.fired({"temperature_c": 39.0}, runner.settings)


def test_sessions_are_deleted_even_when_the_evaluation_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = aegrade.Engine(self_test=False)
    runner = engine._runners["icans"]
    deleted: list[str] = []
    real_delete = runner.durable._rules.delete_state

    def spy(sid: str) -> None:
        deleted.append(sid)
        real_delete(sid)

    monkeypatch.setattr(runner.durable._rules, "delete_state", spy)
    monkeypatch.setattr(_durable._dre, "start_action_for_state", _actions_taken_elsewhere)
    with pytest.raises(aegrade.LostResult):
        runner.durable.fired({"tool": "ICE"}, runner.settings)
    assert len(deleted) == 1
    monkeypatch.undo()
    # ...and the ruleset still works afterwards (the crash of engine-notes.md does not follow).
    facts = {"tool": "ICE", "ice_score": 5, "unable_to_perform": False, "consciousness_other_cause": False, "encephalopathy_other_cause": False}
    certain, possible = runner.durable.fired(facts, runner.settings)
    assert certain == frozenset({"icans.ice.grade_2"})
    assert (certain, possible) == runner.reference.fired(facts, runner.settings)


@pytest.mark.parametrize("value", [1e-05, 5e-324, 1e-300, 0.1, 6.000000000000001, 1e16, 123456789.125, -0.0])
def test_numbers_are_written_without_exponents(value: float) -> None:
    text = _durable._encode_value(value)
    assert "e" not in text.lower()
    assert float(text) == value


def test_non_finite_numbers_never_reach_durable_rules() -> None:
    for value in (math.nan, math.inf):
        with pytest.raises(aegrade.EngineError):
            _durable._encode_value(value)


def test_negation_matches_absent_facts_as_the_reference_does() -> None:
    """A test of an unreported fact is unknown: under `not` it stays unknown, so the certain
    compilation must not match an absent fact and the possible one must (three-valued logic)."""
    catalogue = CATALOGUES["crs"]
    condition = NotOf.model_validate({"not": {"fact": "temperature_c", "op": "gte", "value": 38.0}})
    compiler = _durable._Compiler(catalogue)
    assert compiler.condition(condition, strong=True) == {"$and": [{"has__temperature_c": 1}, {"$lt": {"temperature_c": 38.0}}]}
    assert compiler.condition(condition, strong=False) == {"$or": [{"$lt": {"temperature_c": 38.0}}, {"has__temperature_c": 0}]}
    predicate = compile_condition(condition, catalogue)
    assert predicate({}, {}) is None
    assert predicate({"temperature_c": 37.0}, {}) is True
    assert predicate({"temperature_c": 38.0}, {}) is False
    # `not` over `any` is pushed down to an `all` of negated leaves; `absent` is always known.
    nested = AllOf.model_validate(
        {"all": [{"not": {"any": [{"fact": "hypotension", "op": "eq", "value": True}, {"fact": "spo2_pct", "op": "absent"}]}}]}
    )
    assert _durable._Compiler(catalogue).condition(nested, strong=True) == {
        "$and": [{"$and": [{"has__hypotension": 1}, {"$neq": {"hypotension": True}}]}, {"has__spo2_pct": 1}]
    }
    nested_predicate = compile_condition(nested, catalogue)
    assert nested_predicate({"spo2_pct": 95}, {}) is None  # hypotension unreported: unknown
    assert nested_predicate({"hypotension": False, "spo2_pct": 95}, {}) is True
    assert nested_predicate({"hypotension": False}, {}) is False  # spo2 absent: the `absent` test is true
    assert isinstance(AnyOf.model_validate({"any": [{"fact": "a", "op": "present"}]}), AnyOf)
    assert isinstance(FactTest.model_validate({"fact": "a", "op": "present"}), FactTest)


def test_public_api_is_sorted_and_importable() -> None:
    assert aegrade.__all__ == sorted(aegrade.__all__)
    for name in aegrade.__all__:
        assert hasattr(aegrade, name)
    from aegrade import testing

    assert testing.__all__ == sorted(testing.__all__)


def test_every_error_code_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \| `[A-Za-z]+` \|", readme, flags=re.M))
    from service.errors import SERVICE_ERROR_CODES, ServiceError

    codes = set(ERROR_CODES) | set(SERVICE_ERROR_CODES)
    assert documented == codes, (documented ^ codes)
    for code, cls in SERVICE_ERROR_CODES.items():  # the status in the table is the class's
        if cls.__name__ != "GradingFailed":
            assert re.search(rf"^\| `{code}` \| `{cls.__name__}` \| {cls.status} \|", readme, flags=re.M), code
    import service.errors

    subclasses = {c for c in vars(service.errors).values() if isinstance(c, type) and issubclass(c, ServiceError)}
    assert subclasses == set(SERVICE_ERROR_CODES.values())


def test_only_the_private_module_imports_durable_rules() -> None:
    offenders = [
        p.relative_to(REPO)
        for p in (REPO / "aegrade").rglob("*.py")
        if p.name != "_durable.py" and re.search(r"^\s*(import|from)\s+durable", p.read_text(), flags=re.M)
    ]
    assert offenders == []


@pytest.mark.slow
def test_memory_stays_bounded_over_many_evaluations(engine: aegrade.Engine) -> None:
    """A short guard; bench/engine.py measures 200,000 assessments."""
    def rss_kib() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4

    for _ in range(2000):
        engine.assess(REQUEST)
    before = rss_kib()
    for _ in range(20000):
        engine.assess(REQUEST)
    assert rss_kib() - before < 5 * 1024


def test_a_partly_reported_oxygen_object_is_tried_with_what_was_reported() -> None:
    """A facemask without its flow: the trials for `crs.oxygen` keep the facemask and vary only the
    flow. (They once replaced the device too, so a ventilator made `up_to` 4 above grade_max 3.)
    Found by test_every_valid_input_gets_a_grade_in_range_or_a_documented_null."""
    result = aegrade.Engine().assess({"patient": {"age_years": 0.0667}, "crs": {"hypotension": False, "oxygen": {"device": "simple_facemask"}}})
    assert result.crs is not None and result.crs.grade_max == 3
    assert all(u.up_to <= 3 for u in result.crs.undetermined_by), result.crs.undetermined_by
    assert "crs.oxygen" not in {u.input for u in result.crs.undetermined_by}  # no flow changes a facemask's grade 3
