"""From the rules that fired to one grade with its explanation, as the rule set's combination says.

Precedence (declared in each rule file's `combination`): `override` rules, then the first `gate`
rule that fired, then the `grade` rules by the policy ("worst_domain"), then, only when no grade rule
gave 1 or more, the first `fallback` rule, then the rule set's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aegrade.derive import DerivedFacts
from aegrade.models import Action, Driver, Flag, GradeStatus, Interpretation
from aegrade.reference import ReferenceEvaluator
from aegrade.rulefile import LoadedRuleSet, Rule, RuleInputs, Scalar

__all__ = ["Outcome", "collect", "grade"]

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Outcome:
    grade: int | None
    status: GradeStatus
    drivers: list[Driver]
    domains: dict[str, int | None]
    missing: list[str]
    interpretations: list[Interpretation]
    notes: list[str]


def grade(
    reference: ReferenceEvaluator, fired_ids: frozenset[str], derived: DerivedFacts, settings: Mapping[str, Scalar]
) -> Outcome:
    """Combine the fired rules of one rule set into its result."""
    ruleset = reference.ruleset
    facts = derived.facts
    fired = [rule for rule in ruleset.rules if rule.id in fired_ids]
    by_kind: dict[str, list[Rule]] = {"override": [], "gate": [], "grade": [], "fallback": []}
    for rule in fired:
        by_kind[rule.kind].append(rule)

    combination = ruleset.file.combination
    grading = [r for r in by_kind["grade"] if (r.grade or 0) >= 1]
    result_grade: int | None
    if by_kind["override"]:
        result_grade = max(r.grade or 0 for r in by_kind["override"])
        drivers = [r for r in by_kind["override"] if r.grade == result_grade]
        status: GradeStatus = "graded"
    elif by_kind["gate"]:
        gate = by_kind["gate"][0]
        drivers, result_grade, status = [gate], gate.grade, gate.status or "graded"
    elif grading:
        result_grade = max(r.grade or 0 for r in grading)
        drivers = [r for r in grading if r.grade == result_grade]
        status = "graded"
    elif by_kind["fallback"]:
        fallback = by_kind["fallback"][0]
        drivers, result_grade, status = [fallback], fallback.grade, fallback.status or "graded"
    else:
        drivers, result_grade, status = [], combination.default_grade, combination.default_status or "graded"

    driver_ids = {r.id for r in drivers}
    inputs = ruleset.rule_inputs
    explained = [_driver(r, inputs[r.id], True, facts, derived.context, settings) for r in drivers] + [
        _driver(r, inputs[r.id], False, facts, derived.context, settings) for r in fired if r.id not in driver_ids
    ]

    domains: dict[str, int | None] = {}
    missing: list[str] = []
    not_reported = reference.missing_domains(facts, settings)
    for domain in ruleset.file.domains:
        if domain.id in not_reported:
            domains[domain.id] = None
            missing.append(domain.id)
        else:
            graded = [r.grade or 0 for r in fired if r.domain == domain.id and r.kind in ("grade", "override")]
            domains[domain.id] = max(graded, default=0)

    interpretations: dict[str, Interpretation] = {}
    for rule in drivers:
        if rule.interpretation is not None:
            interpretations[rule.interpretation] = _interpretation(ruleset, rule.interpretation, settings)
    for setting_id in reference.settings_applying(facts, settings):
        interpretations.setdefault(setting_id, _interpretation(ruleset, setting_id, settings))

    notes = list(derived.notes) + [r.note for r in fired if r.note]
    return Outcome(
        grade=result_grade,
        status=status,
        drivers=explained,
        domains=domains,
        missing=missing,
        interpretations=list(interpretations.values()),
        notes=notes,
    )


def _interpretation(
    ruleset: LoadedRuleSet, setting_id: str, settings: Mapping[str, Scalar], *, local: bool = False
) -> Interpretation:
    """The setting that decided a result: an interpretation of an open point, or (`local`) a site's
    threshold, with its value and the reason for its default."""
    setting = ruleset.setting(setting_id)
    value = settings[setting_id]
    lead = f"A local setting decided this ({setting.evidence_level}):" if local else f"Interpretation: {setting.question} Setting"
    return Interpretation(
        setting=f"{ruleset.id}.{setting_id}", value=value, text=f"{lead} {setting_id} = {value!r}. {setting.decision}"
    )


def _driver(
    rule: Rule,
    inputs: RuleInputs,
    drives: bool,
    facts: Mapping[str, Scalar],
    context: Mapping[str, Any],
    settings: Mapping[str, Scalar],
) -> Driver:
    """The rule as it fired, with its evidence."""
    return Driver(
        rule=rule.id,
        domain=rule.domain,
        grade=rule.grade,
        drives=drives,
        criterion=rule.criterion,
        citation=rule.citation,
        evidence_level=rule.evidence_level,
        evidence=_evidence(rule, inputs, facts, context, settings),
    )


def _evidence(
    rule: Rule,
    inputs: RuleInputs,
    facts: Mapping[str, Scalar],
    context: Mapping[str, Any],
    settings: Mapping[str, Scalar],
) -> dict[str, Any]:
    """The values of the facts a rule tests (null: tested absent), the settings it tests, and the
    context it asks to show."""
    tested, presence, setting_ids = inputs
    evidence: dict[str, Any] = {}
    for name in tested:
        if name in facts:
            evidence[name] = facts[name]
        elif name in presence:
            evidence[name] = None
    for setting_id in setting_ids:
        evidence[f"setting.{setting_id}"] = settings[setting_id]
    for key in rule.show:
        if context.get(key) is not None:
            evidence[key] = context[key]
    return evidence


def collect(
    reference: ReferenceEvaluator, fired_ids: frozenset[str], derived: DerivedFacts, settings: Mapping[str, Scalar]
) -> list[Flag] | list[Action]:
    """Every fired rule of a "collect" rule set as its flag (most severe first) or action.

    Each names the settings its condition used: they are local choices that decided it.
    """
    ruleset = reference.ruleset
    inputs = ruleset.rule_inputs
    fired = [rule for rule in ruleset.rules if rule.id in fired_ids]
    drug = ruleset.file.drug
    flags: list[Flag] = []
    actions: list[Action] = []
    for rule in fired:
        setting_ids = list(dict.fromkeys([*inputs[rule.id][2], *([rule.interpretation] if rule.interpretation else [])]))
        interpretations = [_interpretation(ruleset, sid, settings, local=True) for sid in setting_ids]
        common = {
            "id": rule.emits,
            "rule": rule.id,
            "citation": rule.citation,
            "evidence_level": rule.evidence_level,
            "evidence": _evidence(rule, inputs[rule.id], derived.facts, derived.context, settings),
            "interpretations": interpretations,
        }
        if drug is None:
            flags.append(Flag(severity=rule.severity, message=rule.message, **common))
        else:
            actions.append(Action(drug=drug, text=rule.message, **common))
    if drug is None:
        return sorted(flags, key=lambda f: SEVERITY_ORDER[f.severity])
    return actions
