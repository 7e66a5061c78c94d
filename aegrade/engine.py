"""`assess()`: validate, derive facts, run both evaluators, compare them, explain the grade.

    assessment ─ parse_assessment ─ contradictions ─┬─ crs_facts ──┬─ DurableEvaluator ─┐ equal? ─ grade ─ CrsResult
                                                   └─ icans_facts ┴─ ReferenceEvaluator ┘ else EvaluatorDisagreement

An `Engine` holds the loaded rule sets (one active rule set per subject) and the settings in force.
Building one checks every rule file and runs each file's own test cases; a failure raises
RuleSelfTestFailed before the engine can grade anything.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aegrade._durable import DurableEvaluator
from aegrade.derive import (
    DerivedFacts,
    blinatumomab_facts,
    crs_facts,
    encephalopathy_tool,
    icans_facts,
    thrombosis_facts,
)
from aegrade.errors import EvaluatorDisagreement, InvalidAssessment, RuleSelfTestFailed, SettingsError
from aegrade.facts import Subject
from aegrade.grading import Outcome, collect, grade
from aegrade.models import Action, Assessment, AssessmentResult, CrsResult, Flag, IcansResult, RulesetRef
from aegrade.reference import ReferenceEvaluator
from aegrade.rulefile import LoadedRuleSet, RuleTestCase, Scalar, load_rulesets
from aegrade.validation import contradictions, parse_assessment

__all__ = ["Engine", "assess", "default_engine"]

logger = logging.getLogger("aegrade.engine")

_DERIVE: dict[Subject, Callable[[Assessment, LoadedRuleSet, Mapping[str, Scalar]], DerivedFacts]] = {
    "crs": crs_facts,
    "icans": icans_facts,
    "thrombosis": thrombosis_facts,
}
SUBJECTS: tuple[Subject, ...] = ("crs", "icans", "thrombosis", "blinatumomab")


@dataclass(frozen=True)
class _Runner:
    """One rule set ready to run: both evaluators and the settings in force."""

    ruleset: LoadedRuleSet
    reference: ReferenceEvaluator
    durable: DurableEvaluator
    settings: Mapping[str, Scalar]

    @property
    def ref(self) -> RulesetRef:
        return RulesetRef(
            id=self.ruleset.id, version=self.ruleset.version, sha256=self.ruleset.sha256, settings=dict(self.settings)
        )


class Engine:
    """The grading engine over one directory of rule files.

    `settings` maps a rule set id to its setting overrides, e.g.
    `{"astct-crs": {"facemask_low_flow": "flow"}}`; every key must be declared in the rule file.
    """

    def __init__(
        self,
        *,
        rules_dir: str | Path | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        self_test: bool = True,
    ) -> None:
        loaded = load_rulesets(rules_dir)
        settings = dict(settings or {})
        active = [rs for rs in loaded if rs.file.status == "active"]
        unknown = sorted(set(settings) - {rs.id for rs in active})
        if unknown:
            raise SettingsError(f"settings given for unknown or inactive rule set(s) {unknown}")
        self._runners: dict[Subject, _Runner] = {}
        for rs in active:
            subject = rs.file.subject
            if subject in self._runners:
                raise SettingsError(
                    f"two active rule sets for {subject}: {self._runners[subject].ruleset.path} and {rs.path}"
                )
            self._runners[subject] = _Runner(
                ruleset=rs,
                reference=ReferenceEvaluator(rs),
                durable=DurableEvaluator(rs),
                settings=rs.resolve_settings(settings.get(rs.id, {})),
            )
        for subject in SUBJECTS:
            if subject not in self._runners:
                raise SettingsError(f"no active rule set for {subject} in {rules_dir or 'rules/'}")
        if self_test:
            self.self_test()

    @property
    def rulesets(self) -> list[LoadedRuleSet]:
        return [runner.ruleset for runner in self._runners.values()]

    def settings_for(self, ruleset_id: str) -> dict[str, Scalar]:
        for runner in self._runners.values():
            if runner.ruleset.id == ruleset_id:
                return dict(runner.settings)
        raise KeyError(ruleset_id)

    # -- grading --------------------------------------------------------------------------------

    def assess(self, assessment: Assessment | Mapping[str, Any]) -> AssessmentResult:
        """Grade one assessment. Raises InvalidAssessment (naming each field) or an EngineError."""
        parsed = self.validate(assessment)
        used: list[_Runner] = []
        crs = icans = None
        if parsed.vitals is not None or parsed.crs is not None:
            runner = self._runners["crs"]
            used.append(runner)
            _, outcome = self._run(runner, parsed, runner.settings)
            crs = _crs_result(runner, outcome)
        if parsed.neuro is not None:
            runner = self._runners["icans"]
            used.append(runner)
            derived, outcome = self._run(runner, parsed, runner.settings)
            icans = _icans_result(runner, derived, outcome)
        flags: list[Flag] = []
        if parsed.thrombosis is not None:
            runner = self._runners["thrombosis"]
            used.append(runner)
            flags = self._collect(runner, thrombosis_facts(parsed, runner.ruleset, runner.settings), runner.settings)  # type: ignore[assignment]
        actions: list[Action] = []
        if parsed.blinatumomab is not None:
            runner = self._runners["blinatumomab"]
            used.append(runner)
            derived = blinatumomab_facts(
                parsed,
                runner.ruleset,
                runner.settings,
                crs_grade=crs.grade if crs else None,
                icans_grade=icans.grade if icans else None,
            )
            actions = self._collect(runner, derived, runner.settings)  # type: ignore[assignment]
        return AssessmentResult(
            id=uuid.uuid4().hex,
            evaluated_at=datetime.now(timezone.utc),
            crs=crs,
            icans=icans,
            flags=flags,
            actions=actions,
            rulesets=[r.ref for r in used],
        )

    def validate(
        self, assessment: Assessment | Mapping[str, Any], *, icans_settings: Mapping[str, Scalar] | None = None
    ) -> Assessment:
        """The parsed assessment, or InvalidAssessment naming every bad or contradictory field.

        Which encephalopathy tool fits the patient depends on the ICANS settings (the age cut-off).
        """
        parsed = parse_assessment(assessment)
        tool = reason = None
        if parsed.neuro is not None:
            icans = self._runners["icans"]
            settings = icans.settings if icans_settings is None else icans_settings
            tool, reason = encephalopathy_tool(parsed.patient, icans.ruleset, settings)
        errors = contradictions(parsed, tool=tool, tool_reason=reason or "")
        if errors:
            raise InvalidAssessment(errors)
        return parsed

    def _run(
        self, runner: _Runner, assessment: Assessment, settings: Mapping[str, Scalar]
    ) -> tuple[DerivedFacts, Outcome]:
        derived = _DERIVE[runner.ruleset.file.subject](assessment, runner.ruleset, settings)
        return derived, grade(runner.reference, self._fire(runner, derived, settings), derived, settings)

    def _collect(self, runner: _Runner, derived: DerivedFacts, settings: Mapping[str, Scalar]) -> list[Flag] | list[Action]:
        return collect(runner.reference, self._fire(runner, derived, settings), derived, settings)

    def _fire(self, runner: _Runner, derived: DerivedFacts, settings: Mapping[str, Scalar]) -> frozenset[str]:
        """The rules that fire, by both evaluators; EvaluatorDisagreement when they differ."""
        by_durable = runner.durable.fired(derived.facts, settings)
        by_reference = runner.reference.fired(derived.facts, settings)
        if by_durable != by_reference:
            logger.error(
                "evaluator disagreement in %s: durable-only=%s reference-only=%s",
                runner.ruleset.label,
                sorted(by_durable - by_reference),
                sorted(by_reference - by_durable),
            )
            raise EvaluatorDisagreement(runner.ruleset.label, durable=by_durable, reference=by_reference)
        return by_reference

    # -- self test ------------------------------------------------------------------------------

    def self_test(self) -> None:
        """Run every rule file's own test cases; every rule must fire in at least one of them."""
        for runner in self._runners.values():
            reached: set[str] = set()
            for case in runner.ruleset.file.tests:
                reached |= self._run_case(runner, case)
            unreached = sorted({r.id for r in runner.ruleset.rules} - reached)
            if unreached:
                raise RuleSelfTestFailed(
                    runner.ruleset.path, f"no test case of the file fires rule(s) {unreached}"
                )

    def _run_case(self, runner: _Runner, case: RuleTestCase) -> set[str]:
        rs = runner.ruleset
        where = f"test {case.id}"
        subject = rs.file.subject
        try:
            settings = rs.resolve_settings(case.settings)  # a case is written against the file's defaults
            parsed = self.validate(case.request, icans_settings=settings if subject == "icans" else None)
            if rs.file.combination.policy == "collect":
                if subject == "blinatumomab":
                    graded = self.assess({**case.request, "blinatumomab": None})  # the grades of the same snapshot
                    derived = blinatumomab_facts(
                        parsed, rs, settings,
                        crs_grade=graded.crs.grade if graded.crs else None,
                        icans_grade=graded.icans.grade if graded.icans else None,
                    )
                else:
                    derived = _DERIVE[subject](parsed, rs, settings)
                fired = self._fire(runner, derived, settings)
                emitted = sorted({r.emits for r in rs.rules if r.id in fired and r.emits})
                if case.expect.emits is not None and emitted != sorted(set(case.expect.emits)):
                    raise RuleSelfTestFailed(rs.path, f"expected {sorted(set(case.expect.emits))}, got {emitted}", rule=where)
                return set(fired)
            derived, outcome = self._run(runner, parsed, settings)
        except RuleSelfTestFailed:
            raise
        except Exception as exc:
            raise RuleSelfTestFailed(rs.path, f"raised {type(exc).__name__}: {exc}", rule=where) from exc
        expect = case.expect
        drivers = sorted(d.rule for d in outcome.drivers if d.drives)
        problems = []
        if (outcome.grade, outcome.status) != (expect.grade, expect.status):
            problems.append(f"expected grade {expect.grade} ({expect.status}), got {outcome.grade} ({outcome.status})")
        if expect.drivers is not None and drivers != sorted(expect.drivers):
            problems.append(f"expected drivers {sorted(expect.drivers)}, got {drivers}")
        if problems:
            raise RuleSelfTestFailed(rs.path, "; ".join(problems), rule=where)
        return {d.rule for d in outcome.drivers}


def _crs_result(runner: _Runner, outcome: Outcome) -> CrsResult:
    return CrsResult(scale=runner.ruleset.file.scale, ruleset=runner.ruleset.label, **_outcome_fields(outcome))


def _icans_result(runner: _Runner, derived: DerivedFacts, outcome: Outcome) -> IcansResult:
    tool = derived.facts.get("tool")
    return IcansResult(
        scale=runner.ruleset.file.scale,
        ruleset=runner.ruleset.label,
        tool="ICE" if tool == "ICE" else "CAPD" if tool == "CAPD" else None,
        **_outcome_fields(outcome),
    )


def _outcome_fields(outcome: Outcome) -> dict[str, Any]:
    return {
        "grade": outcome.grade,
        "status": outcome.status,
        "drivers": outcome.drivers,
        "domains": outcome.domains,
        "missing": outcome.missing,
        "interpretations": outcome.interpretations,
        "notes": outcome.notes,
    }


_DEFAULT: Engine | None = None
_DEFAULT_LOCK = threading.Lock()


def default_engine() -> Engine:
    """The engine over `rules/` with every setting at its default, built (and self-tested) once."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Engine()
        return _DEFAULT


def assess(assessment: Assessment | Mapping[str, Any], *, engine: Engine | None = None) -> AssessmentResult:
    """Grade one assessment with `engine` (default: the rules/ directory at default settings)."""
    return (engine or default_engine()).assess(assessment)
