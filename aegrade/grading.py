"""From the rules that fired to one grade with its explanation, as the rule set's combination says.

Precedence (declared in each rule file's `combination`): `override` rules, then the first `gate`
rule that fired, then the `grade` rules by the policy ("worst_domain"), then, only when no grade rule
gave 1 or more, the first `fallback` rule, then the rule set's default.

Rules come as (certain, possible) sets (`aegrade.reference`): the grade is what the certain rules
establish, `grade_max` what the possible ones still allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aegrade.derive import DerivedFacts
from aegrade.facts import FactValue, Interval
from aegrade.models import (
    Action,
    Driver,
    Flag,
    GradeStatus,
    Interpretation,
    LabelGrade,
    UndeterminedAction,
    UndeterminedFlag,
)
from aegrade.reference import NOT_ASSESSED, Fired, ReferenceEvaluator
from aegrade.rulefile import LoadedRuleSet, Rule, RuleInputs, Scalar

__all__ = ["Outcome", "collect", "grade", "grade_max"]

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Outcome:
    grade: int | None
    grade_max: int | None
    status: GradeStatus
    drivers: list[Driver]
    domains: dict[str, int | None]
    missing: list[str]
    interpretations: list[Interpretation]
    notes: list[str]


def _rule_max(rules: list[Rule]) -> list[int]:
    return [g for r in rules for g in (r.grade, r.up_to) if g is not None]


def grade_max(ruleset: LoadedRuleSet, fired: Fired) -> int | None:
    """The highest grade that some report of the unreported inputs could give: the combination
    applied to every rule that is possible, blocked only by what is certain."""
    certain, possible = fired
    rules = [r for r in ruleset.rules if r.id in possible]
    kinds = {kind: [r for r in rules if r.kind == kind] for kind in ("override", "gate", "grade", "fallback")}
    grades = [r.grade for r in kinds["override"] if r.grade is not None]
    first_gate = kinds["gate"][0] if kinds["gate"] else None
    if first_gate is not None and first_gate.id in certain:
        grades += _rule_max([first_gate])
    else:
        grades += _rule_max(kinds["gate"]) + _rule_max(kinds["grade"])
        if not any((r.grade or 0) >= 1 and r.id in certain for r in kinds["grade"]):
            grades += _rule_max(kinds["fallback"])
            if ruleset.file.combination.default_grade is not None:
                grades.append(ruleset.file.combination.default_grade)
    return max(grades, default=None)


def grade(reference: ReferenceEvaluator, fired: Fired, derived: DerivedFacts, settings: Mapping[str, Scalar]) -> Outcome:
    """Combine the certain and possible rules of one rule set into its result.

    `grade` comes from the certain rules, by the combination's precedence. `grade_max` from the
    possible ones. A gate whose condition is unknown leaves the result not_assessable (grade null)
    unless the combination lets it stand (`gate_stands_up_to`); a fallback whose condition is
    unknown does the same. A graded result whose `grade_max` is higher is `incomplete`.
    """
    ruleset = reference.ruleset
    certain_ids, possible_ids = fired
    facts = derived.facts
    fired_rules = [rule for rule in ruleset.rules if rule.id in certain_ids]
    by_kind: dict[str, list[Rule]] = {"override": [], "gate": [], "grade": [], "fallback": []}
    for rule in fired_rules:
        by_kind[rule.kind].append(rule)
    possible_gates = [r for r in ruleset.rules if r.kind == "gate" and r.id in possible_ids]
    possible_fallbacks = [r for r in ruleset.rules if r.kind == "fallback" and r.id in possible_ids]

    combination = ruleset.file.combination
    maximum = grade_max(ruleset, fired)
    extra_notes: list[str] = []
    grading = [r for r in by_kind["grade"] if (r.grade or 0) >= 1]
    result_grade: int | None
    drivers: list[Rule]
    status: GradeStatus
    if by_kind["override"]:
        result_grade = max(r.grade or 0 for r in by_kind["override"])
        drivers = [r for r in by_kind["override"] if r.grade == result_grade]
        status = "graded"
    elif possible_gates and possible_gates[0].id not in certain_ids:
        gate = possible_gates[0]
        stands = combination.gate_stands_up_to
        if stands is not None and (maximum is None or maximum <= stands) and reference.gate_may_stand(facts, settings):
            drivers, result_grade, status = [], gate.grade, gate.status or "graded"
            if combination.gate_stands_note:
                extra_notes.append(combination.gate_stands_note)
        else:
            drivers, result_grade, status = [], None, "not_assessable"
            extra_notes.append(combination.undetermined_gate)
    elif by_kind["gate"]:
        gate = by_kind["gate"][0]
        drivers, result_grade, status = [gate], gate.grade, gate.status or "graded"
    elif grading:
        result_grade = max(r.grade or 0 for r in grading)
        drivers = [r for r in grading if r.grade == result_grade]
        status = "graded"
    elif possible_fallbacks and possible_fallbacks[0].id not in certain_ids:
        drivers, result_grade, status = [], None, "not_assessable"
    elif by_kind["fallback"]:
        fallback = by_kind["fallback"][0]
        drivers, result_grade, status = [fallback], fallback.grade, fallback.status or "graded"
    else:
        drivers, result_grade, status = [], combination.default_grade, combination.default_status or "graded"
    if status == "graded" and result_grade is not None and maximum is not None and maximum > result_grade:
        status = "incomplete"
    if result_grade is not None and maximum is not None and maximum < result_grade:
        maximum = result_grade

    driver_ids = {r.id for r in drivers}
    inputs = ruleset.rule_inputs
    explained = [_driver(r, inputs[r.id], True, facts, derived.context, settings) for r in drivers] + [
        _driver(r, inputs[r.id], False, facts, derived.context, settings) for r in fired_rules if r.id not in driver_ids
    ]

    domains: dict[str, int | None] = {}
    missing: list[str] = []
    not_reported = reference.missing_domains(facts, settings)
    for domain in ruleset.file.domains:
        if domain.id in not_reported:
            domains[domain.id] = None
            missing.append(domain.id)
        else:
            graded = [r.grade or 0 for r in fired_rules if r.domain == domain.id and r.kind in ("grade", "override")]
            domains[domain.id] = max(graded, default=0)

    interpretations: dict[str, Interpretation] = {}
    for rule in drivers:
        if rule.interpretation is not None:
            interpretations[rule.interpretation] = _interpretation(ruleset, rule.interpretation, settings)
    for setting_id in reference.settings_applying(facts, settings):
        interpretations.setdefault(setting_id, _interpretation(ruleset, setting_id, settings))

    # A gate's or fallback's note describes the result it gives: said only when it drives.
    rule_notes = [r.note for r in fired_rules if r.note and (r.kind in ("grade", "override") or r.id in driver_ids)]
    notes = list(derived.notes) + rule_notes + extra_notes
    return Outcome(
        grade=result_grade,
        grade_max=maximum,
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
    facts: Mapping[str, FactValue],
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
    facts: Mapping[str, FactValue],
    context: Mapping[str, Any],
    settings: Mapping[str, Scalar],
) -> dict[str, Any]:
    """The values of the facts a rule tests (null: tested absent), the settings it tests, and the
    context it asks to show."""
    tested, presence, setting_ids = inputs
    evidence: dict[str, Any] = {}
    for name in tested:
        if name in facts:
            value = facts[name]
            evidence[name] = {"at_least": value.lo, "at_most": value.hi} if isinstance(value, Interval) else value
        elif name in presence:
            evidence[name] = None
    for setting_id in setting_ids:
        evidence[f"setting.{setting_id}"] = settings[setting_id]
    for key in rule.show:
        if context.get(key) is not None:
            evidence[key] = context[key]
    return evidence


def collect(
    reference: ReferenceEvaluator,
    fired: Fired,
    derived: DerivedFacts,
    settings: Mapping[str, Scalar],
    *,
    open_inputs: Mapping[str, list[str]] | None = None,
    reported: frozenset[str] = frozenset(),
) -> tuple[list[Flag], list[UndeterminedFlag]] | tuple[list[Action], list[UndeterminedAction]]:
    """Every certain rule of a "collect" rule set as its flag (most severe first) or action, and
    the undetermined ones (possible, not certain) with the inputs that would decide them.

    Each fired one names the settings its condition used: they are local choices that decided it.
    An undetermined one is listed only when some of its inputs were reported (so that a section
    without labs does not list every lab flag), and, for flags, only when critical or a warning.
    `open_inputs` gives, for a bounded fact such as a grade, the request paths that leave it open;
    `reported` the request paths that were sent.
    """
    ruleset = reference.ruleset
    certain, possible = fired
    inputs = ruleset.rule_inputs
    catalogue = reference.catalogue
    drug = ruleset.file.drug
    flags: list[Flag] = []
    actions: list[Action] = []
    open_flags: list[UndeterminedFlag] = []
    open_actions: list[UndeterminedAction] = []
    for rule in ruleset.rules:
        if rule.id in certain:
            setting_ids = list(
                dict.fromkeys([*inputs[rule.id][2], *([rule.interpretation] if rule.interpretation else [])])
            )
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
                actions.append(Action(drug=drug, text=rule.message, decided_by=_decided_by(rule, inputs, derived), **common))
        elif rule.id in possible:
            tested = inputs[rule.id][0]
            facts = derived.facts
            sent = any(path in reported for name in tested if name in catalogue for path in catalogue[name].inputs)
            if not sent or (drug is None and rule.severity == "info"):
                continue
            missing: list[str] = []
            for name in tested:
                spec = catalogue.get(name)
                if spec is None:
                    continue
                value = facts.get(name)
                if value is None and not spec.future and not spec.always_present:
                    missing.extend(derived.unknown_because.get(name, spec.inputs))
                elif isinstance(value, Interval):
                    missing.extend((open_inputs or {}).get(name, spec.inputs))
            missing = [path for path in dict.fromkeys(missing) if path not in reported]
            if _open_only_for_unassessed(reference, rule, tested, derived, settings, reported):
                continue
            common = {"id": rule.emits, "rule": rule.id, "citation": rule.citation, "evidence_level": rule.evidence_level}
            if drug is None:
                open_flags.append(UndeterminedFlag(severity=rule.severity, message=rule.message, missing=missing, **common))
            else:
                open_actions.append(
                    UndeterminedAction(
                        drug=drug, text=rule.message, missing=missing, decided_by=_decided_by(rule, inputs, derived), **common
                    )
                )
    if drug is None:
        return (
            sorted(flags, key=lambda f: SEVERITY_ORDER[f.severity]),
            sorted(open_flags, key=lambda f: SEVERITY_ORDER[f.severity]),
        )
    return _supersede(ruleset, actions, open_actions)


def _open_only_for_unassessed(
    reference: ReferenceEvaluator,
    rule: Rule,
    tested: tuple[str, ...],
    derived: DerivedFacts,
    settings: Mapping[str, Scalar],
    reported: frozenset[str],
) -> bool:
    """Whether a rule is open only because a whole subject was not assessed (no CRS section, say):
    with those facts failing every test, its condition is false. Such a rule is left out, as a flag
    none of whose inputs was reported is."""
    catalogue = reference.catalogue
    unassessed = {
        name: NOT_ASSESSED
        for name in tested
        if name in catalogue
        and name not in derived.facts
        and catalogue[name].inputs
        and all("." not in path and path not in reported for path in catalogue[name].inputs)
    }
    if not unassessed:
        return False
    return reference.truth(rule.id, {**derived.facts, **unassessed}, settings) is False


def _decided_by(rule: Rule, inputs: Mapping[str, RuleInputs], derived: DerivedFacts) -> list[LabelGrade]:
    """The label grades (grade and scale) that a rule's condition reads."""
    label_grades = derived.context.get("label_grades") or {}
    return [LabelGrade(**grade) for name in inputs[rule.id][0] for grade in label_grades.get(name, [])]


def _supersede(
    ruleset: LoadedRuleSet, actions: list[Action], open_actions: list[UndeterminedAction]
) -> tuple[list[Action], list[UndeterminedAction]]:
    """An established action that supersedes others (a discontinuation) removes them, established or
    undetermined, and names them; then the actions are put in the rule file's order, most
    restrictive first."""
    supersedes = {rule.id: rule.supersedes for rule in ruleset.rules if rule.supersedes}
    gone: set[str] = set()
    for action in actions:
        gone.update(supersedes.get(action.rule, []))
    present = {a.id for a in actions} | {a.id for a in open_actions}
    kept = [
        action.model_copy(update={"superseded": sorted(set(supersedes[action.rule]) & present)})
        if action.rule in supersedes
        else action
        for action in actions
        if action.id not in gone or action.rule in supersedes  # a discontinuation is never removed
    ]
    kept_open = [action for action in open_actions if action.id not in gone]
    order = {emit: index for index, emit in enumerate(ruleset.file.combination.order)}
    rank = len(order)
    return (
        sorted(kept, key=lambda a: order.get(a.id, rank)),
        sorted(kept_open, key=lambda a: order.get(a.id, rank)),
    )

