"""Candidate values of one unreported request input, for the question "could reporting it raise the grade?".

The values come from the request schema (every value of a boolean or an enum; the empty list, each
item and each pair of a list of items; each device of an oxygen object) and, for numbers, from the
rule file: every constant a rule compares the input's facts with, and the values just below and
just above it. So the candidates reach every side of every threshold without Python knowing one.
"""

from __future__ import annotations

import itertools
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from aegrade import models
from aegrade.facts import CATALOGUES
from aegrade.rulefile import ORDER_OPS, FactTest, LoadedRuleSet, iter_tests

__all__ = ["input_candidates"]

SECTIONS: dict[str, type[BaseModel]] = {
    "vitals": models.Vitals,
    "crs": models.CrsSection,
    "neuro": models.NeuroSection,
    "thrombosis": models.ThrombosisSection,
    "blinatumomab": models.BlinatumomabSection,
}


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _base(annotation: Any) -> Any:
    """The type under `Annotated[...]`."""
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _thresholds(ruleset: LoadedRuleSet, facts: set[str]) -> list[float]:
    """Each constant a rule or derivation compares one of `facts` with."""
    found: set[float] = set()
    conditions = [rule.when for rule in ruleset.rules] + [c for _, c in ruleset.derivation_conditions]
    for condition in conditions:
        for test in iter_tests(condition):
            if not isinstance(test, FactTest) or test.fact not in facts or test.ref is not None:
                continue
            if test.op in ORDER_OPS or test.op in ("eq", "ne"):
                value = test.value
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.add(float(value))
    return sorted(found)


def _numbers(ruleset: LoadedRuleSet, facts: set[str], *, integer: bool) -> list[float | int]:
    step = 1.0 if integer else 0.01
    values: set[float] = set()
    for c in _thresholds(ruleset, facts):
        values.update({round(c - step, 6), c, round(c + step, 6)})
    if integer:
        return sorted({int(v) for v in values if float(v).is_integer()})
    return sorted(values)


def _is_integer(annotation: Any) -> bool:
    return _base(annotation) is int


def input_candidates(ruleset: LoadedRuleSet, path: str) -> list[Any]:
    """Values to try for the request path `section.field` (invalid ones are refused later by validation)."""
    section, _, name = path.partition(".")
    model = SECTIONS.get(section)
    if model is None or name not in model.model_fields:
        return []
    catalogue = CATALOGUES[ruleset.file.subject]
    facts = {fact for fact, spec in catalogue.items() if path in spec.inputs}
    annotation = _base(_strip_optional(model.model_fields[name].annotation))
    if annotation is bool:
        return [True, False]
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    if get_origin(annotation) is list:
        item = _base(get_args(annotation)[0])
        if get_origin(item) is Literal:
            items = list(get_args(item))
            return [[]] + [[i] for i in items] + [list(pair) for pair in itertools.combinations(items, 2)]
        return []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is models.Oxygen:
        devices = get_args(models.OxygenDevice)
        flows: list[Any] = [None] + _numbers(ruleset, facts, integer=False)
        return [{"device": d} if f is None else {"device": d, "flow_l_min": f} for d in devices for f in flows]
    if annotation in (int, float):
        return _numbers(ruleset, facts, integer=_is_integer(model.model_fields[name].annotation) or annotation is int)
    return []
