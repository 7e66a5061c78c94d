"""The reference evaluator: rule conditions evaluated by plain Python.

It reads the same rule files as durable_rules and runs beside it on every assessment; the engine
compares the two sets of fired rules. Conditions are turned into closures once, at load.

Semantics (durable_rules is compiled to match them, see `aegrade._durable`):
- a test of a fact that is absent (not reported) is false, except `absent`;
- `not` negates its whole subtree;
- settings are always present;
- a test with a `ref` compares the fact with another fact times a constant, or with a setting.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from aegrade.rulefile import (
    AllOf,
    AnyOf,
    Condition,
    FactTest,
    LoadedRuleSet,
    NotOf,
    Scalar,
    ScaledFact,
    SettingTest,
    SettingValue,
)

__all__ = ["Predicate", "ReferenceEvaluator", "compile_condition", "compiled"]

Facts = Mapping[str, Scalar]
Settings = Mapping[str, Scalar]
Predicate = Callable[[Facts, Settings], bool]

_MISSING: Any = object()

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda x, values: x in values,
    "not_in": lambda x, values: x not in values,
}


def compile_condition(condition: Condition) -> Predicate:
    """A closure that evaluates `condition` on (facts, settings)."""
    if isinstance(condition, AllOf):
        return _all_of([compile_condition(c) for c in condition.all])
    if isinstance(condition, AnyOf):
        return _any_of([compile_condition(c) for c in condition.any])
    if isinstance(condition, NotOf):
        inner = compile_condition(condition.not_)
        return lambda f, s: not inner(f, s)
    if isinstance(condition, SettingTest):
        setting, compare = condition.setting, _COMPARE[condition.op]
        setting_value = _hashable(condition.value)
        return lambda f, s: compare(s[setting], setting_value)
    return _compile_fact_test(condition)


_COMPILED: dict[int, tuple[Condition, Predicate]] = {}


def compiled(condition: Condition) -> Predicate:
    """`compile_condition`, once per condition object. Rule-file models are immutable and live as
    long as their rule set; the cache holds the object too, so its id is never reused."""
    entry = _COMPILED.get(id(condition))
    if entry is None:
        entry = _COMPILED.setdefault(id(condition), (condition, compile_condition(condition)))
    return entry[1]


def _all_of(parts: list[Predicate]) -> Predicate:
    def predicate(f: Facts, s: Settings) -> bool:
        for part in parts:
            if not part(f, s):
                return False
        return True

    return parts[0] if len(parts) == 1 else predicate


def _any_of(parts: list[Predicate]) -> Predicate:
    def predicate(f: Facts, s: Settings) -> bool:
        for part in parts:
            if part(f, s):
                return True
        return False

    return parts[0] if len(parts) == 1 else predicate


def _compile_fact_test(test: FactTest) -> Predicate:
    name = test.fact
    if test.op == "present":
        return lambda f, s: name in f
    if test.op == "absent":
        return lambda f, s: name not in f
    compare = _COMPARE[test.op]
    if isinstance(test.ref, ScaledFact):
        other, times = test.ref.fact, test.ref.times

        def against_fact(f: Facts, s: Settings) -> bool:
            x, y = f.get(name, _MISSING), f.get(other, _MISSING)
            return x is not _MISSING and y is not _MISSING and compare(x, y * times)

        return against_fact
    if isinstance(test.ref, SettingValue):
        setting = test.ref.setting

        def against_setting(f: Facts, s: Settings) -> bool:
            x = f.get(name, _MISSING)
            return x is not _MISSING and compare(x, s[setting])

        return against_setting
    value = _hashable(test.value)

    def predicate(f: Facts, s: Settings) -> bool:
        x = f.get(name, _MISSING)
        return x is not _MISSING and compare(x, value)

    return predicate


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class ReferenceEvaluator:
    """Which rules of one rule set fire for given facts and settings."""

    def __init__(self, ruleset: LoadedRuleSet) -> None:
        self.ruleset = ruleset
        self._rules = [(rule.id, compile_condition(rule.when)) for rule in ruleset.rules]
        self._missing = [(d.id, compile_condition(d.missing_when)) for d in ruleset.file.domains]
        self._applies = [
            (s.id, compile_condition(s.applies_when)) for s in ruleset.file.settings if s.applies_when is not None
        ]

    def fired(self, facts: Facts, settings: Settings) -> frozenset[str]:
        """The ids of the rules whose condition holds."""
        return frozenset([rule_id for rule_id, predicate in self._rules if predicate(facts, settings)])

    def missing_domains(self, facts: Facts, settings: Settings) -> frozenset[str]:
        """The domains whose `missing_when` holds: not reported."""
        return frozenset(domain_id for domain_id, predicate in self._missing if predicate(facts, settings))

    def settings_applying(self, facts: Facts, settings: Settings) -> list[str]:
        """The settings whose `applies_when` holds: they decided the result whatever rule drove it."""
        return [setting_id for setting_id, predicate in self._applies if predicate(facts, settings)]
