"""The derivation stage: derived booleans, scores and competing causes, from their conditions' truth.

A rule file's derivations (`LoadedRuleSet.derivation_conditions`) are evaluated before its rules,
by both evaluators, in three-valued logic. This module turns their (certain, possible) sets into
facts:
- a derived boolean is true when its condition is certain, false when it is not possible, and
  unknown (absent) otherwise;
- a score is the sum of its parts; each part gives the points of its first option that holds. With
  unknown options a part can take several values, and the score is an `Interval` [lowest, highest];
- an attribution (`*_other_cause`) that the request did not send is unknown while a competing cause
  is reported (its condition is certain), and false otherwise: a cause that nobody reported does
  not compete.
"""

from __future__ import annotations

from aegrade.derive import DerivedFacts
from aegrade.facts import Interval
from aegrade.reference import Fired
from aegrade.rulefile import DerivedScore, LoadedRuleSet

__all__ = ["apply_derivations", "score_bounds"]


def score_bounds(score: DerivedScore, fired: Fired) -> tuple[int, int, dict[str, str]]:
    """The lowest and highest value of a score, and each part's points in words."""
    certain, possible = fired
    low = high = 0
    shown: dict[str, str] = {}
    for part in score.parts:
        values: set[int] = set()
        earlier_may_fail = True  # every earlier option may be false, so this one may be the first to hold
        for index, option in enumerate(part.options):
            name = f"score.{score.fact}.{part.id}.{index}"
            if name in possible and earlier_may_fail:
                values.add(option.points)
            if name in certain:
                earlier_may_fail = False
        if earlier_may_fail:
            values.add(0)
        low, high = low + min(values), high + max(values)
        shown[part.id] = str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)} (not all reported)"
    return low, high, shown


def apply_derivations(ruleset: LoadedRuleSet, derived: DerivedFacts, fired: Fired) -> None:
    """Add the derived facts to `derived` (in place), with notes for what stays unknown."""
    certain, possible = fired
    derivations = ruleset.file.derivations
    facts = derived.facts
    for boolean in derivations.booleans:
        name = f"derive.{boolean.fact}"
        if name in certain:
            facts[boolean.fact] = True
        elif name not in possible:
            facts[boolean.fact] = False
    for score in derivations.scores:
        low, high, shown = score_bounds(score, fired)
        facts[score.fact] = low if low == high else Interval(low, high)
        derived.context[f"{score.fact.removesuffix('_score')}_points"] = shown
    competing: dict[str, list[str]] = {}
    for index, attribution in enumerate(derivations.attributions):
        if f"attribution.{attribution.fact}.{index}" in certain:
            competing.setdefault(attribution.fact, []).append(attribution.criterion)
    for fact in dict.fromkeys(a.fact for a in derivations.attributions):
        if fact in facts:  # sent by the clinician: their attribution stands
            continue
        if fact in competing:
            derived.notes.append(
                f"A competing cause is reported ({'; '.join(competing[fact])}), and {fact} was not sent: what it "
                f"could explain is undetermined (it counts toward grade_max, not grade) until the clinician says."
            )
        else:
            facts[fact] = False
