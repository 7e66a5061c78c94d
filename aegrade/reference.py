"""The reference evaluator: rule conditions evaluated by plain Python, in three-valued logic.

It reads the same rule files as durable_rules and runs beside it on every assessment; the engine
compares the two evaluators' sets of certainly-true and possibly-true rules. Conditions are turned
into closures once, at load.

Semantics (api-v1.md, "v1.1 additions"; durable_rules is compiled to match them, see
`aegrade._durable`). A condition is True, False or unknown (None):
- a test of a fact that was not reported is unknown; so is a test whose `ref` fact was not reported;
- `present` and `absent` test the report itself: always known;
- a `future` fact (see `aegrade.facts`) that is absent fails its test, as in two-valued logic;
- a `bounded` fact (an `Interval`) is true when every value in its bounds passes, false when none
  does, unknown otherwise;
- `all` is false when any part is false, true when every part is true, unknown otherwise; `any` is
  the dual; `not` swaps true and false and keeps unknown (Kleene's strong logic);
- settings are always known.

A rule is *certain* when its condition is true, *possible* when it is not false.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aegrade.facts import CATALOGUES, FactSpec, FactValue, Interval
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

__all__ = ["NOT_ASSESSED", "Fired", "ReferenceEvaluator", "Truth", "compile_condition", "compare_interval"]

Facts = Mapping[str, FactValue]
Settings = Mapping[str, Scalar]
Truth = bool | None
Predicate = Callable[[Facts, Settings], Truth]
Fired = tuple[frozenset[str], frozenset[str]]
"""(certain, possible): the names whose condition is true, and those whose condition is not false."""

_MISSING: Any = object()


class _NotAssessed:
    """A fact of a subject that was not assessed at all (no section sent): every test of it fails.
    Used only to ask whether a rule is open *only* because a whole subject was not assessed."""

    def __repr__(self) -> str:
        return "NOT_ASSESSED"


NOT_ASSESSED: Any = _NotAssessed()

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


def compare_interval(op: str, lo: float, hi: float, value: Any) -> Truth:
    """`x op value` for an x known only to lie in [lo, hi]."""
    if op in ("in", "not_in"):
        inside = [compare_interval("eq", lo, hi, v) for v in value]
        truth: Truth = True if True in inside else None if None in inside else False
        return truth if op == "in" else (None if truth is None else not truth)
    everywhere = {"eq": lo == hi == value, "ne": value < lo or value > hi, "lt": hi < value, "lte": hi <= value,
                  "gt": lo > value, "gte": lo >= value}[op]
    if everywhere:
        return True
    somewhere = {"eq": lo <= value <= hi, "ne": lo != hi or lo != value, "lt": lo < value, "lte": lo <= value,
                 "gt": hi > value, "gte": hi >= value}[op]
    return None if somewhere else False


def compile_condition(condition: Condition, catalogue: Mapping[str, FactSpec]) -> Predicate:
    """A closure that evaluates `condition` on (facts, settings) to True, False or None (unknown)."""
    if isinstance(condition, AllOf):
        return _all_of([compile_condition(c, catalogue) for c in condition.all])
    if isinstance(condition, AnyOf):
        return _any_of([compile_condition(c, catalogue) for c in condition.any])
    if isinstance(condition, NotOf):
        inner = compile_condition(condition.not_, catalogue)

        def negation(f: Facts, s: Settings) -> Truth:
            value = inner(f, s)
            return None if value is None else not value

        return negation
    if isinstance(condition, SettingTest):
        setting, compare = condition.setting, _COMPARE[condition.op]
        setting_value = _hashable(condition.value)
        return lambda f, s: compare(s[setting], setting_value)
    return _compile_fact_test(condition, catalogue)


def _all_of(parts: list[Predicate]) -> Predicate:
    def predicate(f: Facts, s: Settings) -> Truth:
        unknown = False
        for part in parts:
            value = part(f, s)
            if value is False:
                return False
            if value is None:
                unknown = True
        return None if unknown else True

    return parts[0] if len(parts) == 1 else predicate


def _any_of(parts: list[Predicate]) -> Predicate:
    def predicate(f: Facts, s: Settings) -> Truth:
        unknown = False
        for part in parts:
            value = part(f, s)
            if value is True:
                return True
            if value is None:
                unknown = True
        return None if unknown else False

    return parts[0] if len(parts) == 1 else predicate


def _compile_fact_test(test: FactTest, catalogue: Mapping[str, FactSpec]) -> Predicate:
    name = test.fact
    if test.op == "present":
        return lambda f, s: name in f
    if test.op == "absent":
        return lambda f, s: name not in f
    op = test.op
    compare = _COMPARE[op]
    when_absent: Truth = False if catalogue[name].future else None
    if isinstance(test.ref, ScaledFact):
        other, times = test.ref.fact, test.ref.times

        def against_fact(f: Facts, s: Settings) -> Truth:
            x, y = f.get(name, _MISSING), f.get(other, _MISSING)
            if x is NOT_ASSESSED or y is NOT_ASSESSED:
                return False
            if x is _MISSING or y is _MISSING:
                return None
            return compare(x, y * times)

        return against_fact
    if isinstance(test.ref, SettingValue):
        setting = test.ref.setting

        def against_setting(f: Facts, s: Settings) -> Truth:
            x = f.get(name, _MISSING)
            if x is NOT_ASSESSED:
                return False
            return when_absent if x is _MISSING else compare(x, s[setting])

        return against_setting
    value = _hashable(test.value)

    def predicate(f: Facts, s: Settings) -> Truth:
        x = f.get(name, _MISSING)
        if x is _MISSING:
            return when_absent
        if x is NOT_ASSESSED:
            return False
        if isinstance(x, Interval):
            return compare_interval(op, x.lo, x.hi, value)
        return compare(x, value)

    return predicate


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class ReferenceEvaluator:
    """Which of a list of named conditions over one subject's facts are certain, and which possible.

    `ReferenceEvaluator.for_rules(ruleset)` evaluates a rule set's rules;
    `ReferenceEvaluator.for_derivations(ruleset)` its derivations (see
    `LoadedRuleSet.derivation_conditions`).
    """

    def __init__(self, ruleset: LoadedRuleSet, named: Iterable[tuple[str, Condition]]) -> None:
        self.ruleset = ruleset
        catalogue = CATALOGUES[ruleset.file.subject]
        self.catalogue = catalogue
        self._named = [(name, compile_condition(condition, catalogue)) for name, condition in named]
        self._by_name = dict(self._named)
        self._missing = [(d.id, compile_condition(d.missing_when, catalogue)) for d in ruleset.file.domains]
        stands = ruleset.file.combination.gate_stands_when
        self._gate_stands = compile_condition(stands, catalogue) if stands is not None else None
        self._applies = [
            (s.id, compile_condition(s.applies_when, catalogue))
            for s in ruleset.file.settings
            if s.applies_when is not None
        ]

    @classmethod
    def for_rules(cls, ruleset: LoadedRuleSet) -> ReferenceEvaluator:
        return cls(ruleset, [(rule.id, rule.when) for rule in ruleset.rules])

    @classmethod
    def for_derivations(cls, ruleset: LoadedRuleSet) -> ReferenceEvaluator:
        return cls(ruleset, ruleset.derivation_conditions)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._named]

    def fired(self, facts: Facts, settings: Settings) -> Fired:
        """(certain, possible): the names whose condition is true, and those whose condition is not false."""
        certain: list[str] = []
        possible: list[str] = []
        for name, predicate in self._named:
            value = predicate(facts, settings)
            if value is not False:
                possible.append(name)
                if value is True:
                    certain.append(name)
        return frozenset(certain), frozenset(possible)

    def gate_may_stand(self, facts: Facts, settings: Settings) -> bool:
        """Whether the combination's `gate_stands_when` is certainly true (true when none is declared)."""
        return self._gate_stands is None or self._gate_stands(facts, settings) is True

    def truth(self, name: str, facts: Facts, settings: Settings) -> Truth:
        """The truth of one named condition."""
        return self._by_name[name](facts, settings)

    def missing_domains(self, facts: Facts, settings: Settings) -> frozenset[str]:
        """The domains whose `missing_when` is true: not reported."""
        return frozenset(domain_id for domain_id, predicate in self._missing if predicate(facts, settings) is True)

    def settings_applying(self, facts: Facts, settings: Settings) -> list[str]:
        """The settings whose `applies_when` is true: they decided the result whatever rule drove it."""
        return [setting_id for setting_id, predicate in self._applies if predicate(facts, settings) is True]
