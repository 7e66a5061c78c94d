"""`assess()`: validate, derive facts, run both evaluators, compare them, explain the grade.

    assessment ─ parse_assessment ─ contradictions ─┬─ crs_facts ──┬─ derivations ─ rules, each by ─┬─ DurableEvaluator ─┐
                                                   └─ icans_facts ┘                               └─ ReferenceEvaluator ┘
        both give (certain, possible); equal? ─ grade (grade, grade_max) ─ CrsResult;  else EvaluatorDisagreement

Conditions are three-valued (`aegrade.reference`): an unreported input is unknown, never normal.
The grade is what the certain rules establish; `grade_max` what the possible ones allow; and
`undetermined_by` which unreported inputs could raise it, found by trying their values.

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
from aegrade.candidates import input_candidates
from aegrade.derive import (
    DerivedFacts,
    blinatumomab_facts,
    crs_facts,
    encephalopathy_tool,
    icans_facts,
    thrombosis_facts,
)
from aegrade.errors import EvaluatorDisagreement, InvalidAssessment, RuleSelfTestFailed, SettingsError
from aegrade.facts import CATALOGUES, Subject
from aegrade.grading import Outcome, collect, grade
from aegrade.models import (
    Action,
    Assessment,
    AssessmentResult,
    CrsResult,
    Flag,
    IcansResult,
    OtherScaleResult,
    RulesetRef,
    UndeterminedAction,
    UndeterminedFlag,
    UndeterminedInput,
)
from aegrade.reference import Fired, ReferenceEvaluator
from aegrade.rulefile import FeverMasking, LoadedRuleSet, OxygenFlow, RuleTestCase, Scalar, load_rulesets
from aegrade.stage import apply_derivations
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
    """One rule set ready to run: both evaluators, for its derivations and its rules, and the
    settings in force."""

    ruleset: LoadedRuleSet
    reference: ReferenceEvaluator
    durable: DurableEvaluator
    derive_reference: ReferenceEvaluator | None
    derive_durable: DurableEvaluator | None
    settings: Mapping[str, Scalar]

    @property
    def ref(self) -> RulesetRef:
        return RulesetRef(
            id=self.ruleset.id, version=self.ruleset.version, sha256=self.ruleset.sha256, settings=dict(self.settings)
        )


def _runner(ruleset: LoadedRuleSet, settings: Mapping[str, Scalar]) -> _Runner:
    staged = bool(ruleset.derivation_conditions)
    return _Runner(
        ruleset=ruleset,
        reference=ReferenceEvaluator.for_rules(ruleset),
        durable=DurableEvaluator.for_rules(ruleset),
        derive_reference=ReferenceEvaluator.for_derivations(ruleset) if staged else None,
        derive_durable=DurableEvaluator.for_derivations(ruleset) if staged else None,
        settings=settings,
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
        self._additional: dict[Subject, list[_Runner]] = {}
        for rs in active:
            subject = rs.file.subject
            runner = _runner(rs, rs.resolve_settings(settings.get(rs.id, {})))
            if rs.file.role == "additional":
                if subject not in ("crs", "icans"):
                    raise SettingsError(f"{rs.path}: only a grading subject (crs, icans) can have additional scales")
                self._additional.setdefault(subject, []).append(runner)
                continue
            if subject in self._runners:
                raise SettingsError(
                    f"two active primary rule sets for {subject}: {self._runners[subject].ruleset.path} and {rs.path}"
                )
            self._runners[subject] = runner
        for subject in SUBJECTS:
            if subject not in self._runners:
                raise SettingsError(f"no active rule set for {subject} in {rules_dir or 'rules/'}")
        self._candidates: dict[tuple[Subject, str], list[Any]] = {}
        if self_test:
            self.self_test()

    @property
    def _all_runners(self) -> list[_Runner]:
        return [*self._runners.values(), *(r for runners in self._additional.values() for r in runners)]

    @property
    def rulesets(self) -> list[LoadedRuleSet]:
        return [runner.ruleset for runner in self._all_runners]

    def primary(self, subject: Subject) -> LoadedRuleSet:
        """The active primary rule set of `subject` (the one whose result is given)."""
        return self._runners[subject].ruleset

    @property
    def oxygen_flow(self) -> OxygenFlow:
        """The CRS rule file's oxygen devices that need (or are asked) a flow."""
        declared = self.primary("crs").file.derivations.oxygen_flow
        if declared is None:
            raise SettingsError(f"{self.primary('crs').path} declares no derivations.oxygen_flow")
        return declared

    @property
    def fever_masking(self) -> FeverMasking:
        """The CRS rule file's fever-masking agents and episode masking window."""
        declared = self.primary("crs").file.derivations.fever_masking
        if declared is None:
            raise SettingsError(f"{self.primary('crs').path} declares no derivations.fever_masking")
        return declared

    def settings_for(self, ruleset_id: str) -> dict[str, Scalar]:
        for runner in self._all_runners:
            if runner.ruleset.id == ruleset_id:
                return dict(runner.settings)
        raise KeyError(ruleset_id)

    # -- grading --------------------------------------------------------------------------------

    def assess(self, assessment: Assessment | Mapping[str, Any]) -> AssessmentResult:
        """Grade one assessment. Raises InvalidAssessment (naming each field) or an EngineError."""
        parsed = self.validate(assessment)
        used: list[_Runner] = []
        crs = icans = None
        notes: list[str] = []
        other_scales: list[OtherScaleResult] = []
        grades: dict[str, tuple[int | None, int | None]] = {}
        if parsed.vitals is not None or parsed.crs is not None:
            runner = self._runners["crs"]
            used.append(runner)
            derived, outcome = self._graded(runner, parsed, runner.settings)
            crs = CrsResult(
                scale=runner.ruleset.file.scale,
                ruleset=runner.ruleset.label,
                undetermined_by=self._undetermined_by(runner, parsed, derived, outcome),
                **_outcome_fields(outcome),
            )
            grades[runner.ruleset.id] = (crs.grade, crs.grade_max)
        if parsed.neuro is not None:
            runner = self._runners["icans"]
            used.append(runner)
            derived, outcome = self._graded(runner, parsed, runner.settings)
            tool = derived.facts.get("tool")
            icans = IcansResult(
                scale=runner.ruleset.file.scale,
                ruleset=runner.ruleset.label,
                tool="ICE" if tool == "ICE" else "CAPD" if tool == "CAPD" else None,
                undetermined_by=self._undetermined_by(runner, parsed, derived, outcome),
                **_outcome_fields(outcome),
            )
            grades[runner.ruleset.id] = (icans.grade, icans.grade_max)
        for subject, graded in (("crs", crs), ("icans", icans)):
            if graded is None:
                continue
            for runner in self._additional.get(subject, []):  # type: ignore[call-overload]
                used.append(runner)
                derived, outcome = self._graded(runner, parsed, runner.settings)
                other = OtherScaleResult(
                    subject=subject,
                    scale=runner.ruleset.file.scale,
                    ruleset=runner.ruleset.label,
                    undetermined_by=self._undetermined_by(runner, parsed, derived, outcome),
                    **_outcome_fields(outcome),
                )
                other_scales.append(other)
                grades[runner.ruleset.id] = (other.grade, other.grade_max)
        flags: list[Flag] = []
        open_flags: list[UndeterminedFlag] = []
        if parsed.thrombosis is not None or parsed.blinatumomab is not None:
            # A blinatumomab section implies ALL therapy, the population of the thrombosis flags,
            # whose neurological signs are read from neuro (one fact, one place).
            runner = self._runners["thrombosis"]
            used.append(runner)
            derived = thrombosis_facts(parsed, runner.ruleset, runner.settings)
            fired = self._evaluate(runner, derived, runner.settings)
            flags, open_flags = collect(  # type: ignore[assignment]
                runner.reference, fired, derived, runner.settings, reported=reported_inputs(parsed)
            )
            notes += [f"thrombosis: {note}" for note in derived.notes]
        actions: list[Action] = []
        open_actions: list[UndeterminedAction] = []
        if parsed.blinatumomab is not None:
            runner = self._runners["blinatumomab"]
            used.append(runner)
            derived = blinatumomab_facts(parsed, runner.ruleset, runner.settings, grades=grades)
            fired = self._evaluate(runner, derived, runner.settings)
            open_by_subject: dict[str, list[str]] = {"crs": [], "icans": []}
            for graded_part, subject in ((crs, "crs"), (icans, "icans"), *((o, o.subject) for o in other_scales)):
                if graded_part is not None:
                    open_by_subject[subject] += [u.input for u in graded_part.undetermined_by]
            open_inputs = _open_inputs(open_by_subject, runner.ruleset, self.rulesets)
            actions, open_actions = collect(  # type: ignore[assignment]
                runner.reference, fired, derived, runner.settings, open_inputs=open_inputs, reported=reported_inputs(parsed)
            )
            notes += [f"blinatumomab: {note}" for note in derived.notes]
        return AssessmentResult(
            id=uuid.uuid4().hex,
            evaluated_at=datetime.now(timezone.utc),
            crs=crs,
            icans=icans,
            flags=flags,
            undetermined_flags=open_flags,
            actions=actions,
            undetermined_actions=open_actions,
            notes=notes,
            other_scales=other_scales,
            rulesets=[r.ref for r in used],
        )

    def validate(
        self, assessment: Assessment | Mapping[str, Any], *, icans_settings: Mapping[str, Scalar] | None = None
    ) -> Assessment:
        """The parsed assessment, or InvalidAssessment naming every bad or contradictory field.

        Which encephalopathy tool fits the patient depends on the ICANS settings (the age cut-off);
        which neuro findings the thrombosis section repeats, on the thrombosis rule file.
        """
        parsed = parse_assessment(assessment)
        tool = reason = None
        if parsed.neuro is not None:
            icans = self._runners["icans"]
            settings = icans.settings if icans_settings is None else icans_settings
            tool, reason = encephalopathy_tool(parsed.patient, icans.ruleset, settings)
        findings = self._runners["thrombosis"].ruleset.file.derivations.neuro_findings
        terms = self._runners["blinatumomab"].ruleset.file.derivations.ctcae_terms
        crs = self._runners["crs"].ruleset.file.derivations
        errors = contradictions(
            parsed,
            tool=tool,
            tool_reason=reason or "",
            neuro_findings=findings,
            ctcae_terms=terms.terms if terms is not None else (),
            oxygen_flow=crs.oxygen_flow,
            vasopressors=crs.vasopressors,
        )
        if errors:
            raise InvalidAssessment(errors)
        return parsed

    def _graded(
        self, runner: _Runner, assessment: Assessment, settings: Mapping[str, Scalar], *, reference_only: bool = False
    ) -> tuple[DerivedFacts, Outcome]:
        derived = _DERIVE[runner.ruleset.file.subject](assessment, runner.ruleset, settings)
        fired = self._evaluate(runner, derived, settings, reference_only=reference_only)
        derived.fired = fired
        return derived, grade(runner.reference, fired, derived, settings)

    def _evaluate(
        self, runner: _Runner, derived: DerivedFacts, settings: Mapping[str, Scalar], *, reference_only: bool = False
    ) -> Fired:
        """Derivations first, then rules: (certain, possible) by both evaluators (by the reference
        evaluator alone for the what-if questions of `_undetermined_by`)."""
        if runner.derive_reference is not None and runner.derive_durable is not None:
            stage = self._fire(runner.derive_reference, runner.derive_durable, derived, settings, reference_only)
            apply_derivations(runner.ruleset, derived, stage)
        return self._fire(runner.reference, runner.durable, derived, settings, reference_only)

    def _fire(
        self,
        reference: ReferenceEvaluator,
        durable: DurableEvaluator,
        derived: DerivedFacts,
        settings: Mapping[str, Scalar],
        reference_only: bool = False,
    ) -> Fired:
        """(certain, possible) by both evaluators; EvaluatorDisagreement when they differ in either."""
        by_reference = reference.fired(derived.facts, settings)
        if reference_only:
            return by_reference
        by_durable = durable.fired(derived.facts, settings)
        if by_durable != by_reference:
            label = reference.ruleset.label
            durable_names = by_durable[0] | {f"{n} (possible)" for n in by_durable[1]}
            reference_names = by_reference[0] | {f"{n} (possible)" for n in by_reference[1]}
            logger.error(
                "evaluator disagreement in %s: durable-only=%s reference-only=%s",
                label,
                sorted(durable_names - reference_names),
                sorted(reference_names - durable_names),
            )
            raise EvaluatorDisagreement(label, durable=durable_names, reference=reference_names)
        return by_reference

    # -- what the unreported inputs could do ------------------------------------------------------

    def _undetermined_by(
        self, runner: _Runner, assessment: Assessment, derived: DerivedFacts, outcome: Outcome
    ) -> list[UndeterminedInput]:
        """The unreported inputs that would decide the grade, each with the highest grade it could
        lead to. Each candidate value is tried on the assessment as the request would send it,
        validated and graded (by the reference evaluator: these are questions about the result, not
        the result itself). An input is listed when
        - some value of it raises the established grade (`up_to`: the highest grade so established), or
        - it raises none alone, but some value of it lowers grade_max: it decides whether the rest
          can count, as `fever_masked` does for an afebrile patient (`up_to`: the highest grade_max
          its values leave open).
        While a competing cause leaves an attribution (`*_other_cause`) unknown, the finding it
        concerns is tried with the attribution false, the case grade_max already counts."""
        if outcome.grade_max is None or (outcome.grade is not None and outcome.grade_max <= outcome.grade):
            return []
        baseline = outcome.grade if outcome.grade is not None else 0
        subject = runner.ruleset.file.subject
        catalogue = CATALOGUES[subject]
        certain, possible = derived.fired
        relevant: set[str] = set()  # facts that an open rule which could raise the grade or unblock it tests
        for rule in runner.ruleset.rules:
            if rule.id in possible and rule.id not in certain:
                if rule.kind in ("gate", "fallback", "override") or max(rule.grade or 0, rule.up_to or 0) > baseline:
                    relevant.update(runner.ruleset.rule_inputs[rule.id][0])
        paths = [
            path
            for name, spec in catalogue.items()
            if name in relevant and name not in derived.facts and not spec.future and not spec.always_present
            for path in spec.inputs
        ]
        open_attributions = [
            path
            for attribution in dict.fromkeys(a.fact for a in runner.ruleset.file.derivations.attributions)
            if attribution not in derived.facts
            for path in catalogue[attribution].inputs
        ]

        def graded(trial: Mapping[str, Any]) -> Outcome | None:
            try:
                parsed = self.validate(trial)
            except InvalidAssessment:
                return None
            return self._graded(runner, parsed, runner.settings, reference_only=True)[1]

        base = assessment.model_dump(exclude_unset=True)
        filled = base
        for other in open_attributions:
            filled = _with_input(filled, other, False)
        threshold = baseline
        if open_attributions:
            with_fill = graded(filled)
            if with_fill is not None and with_fill.grade is not None:
                threshold = max(threshold, with_fill.grade)
        found: list[UndeterminedInput] = []
        for path in dict.fromkeys(paths):
            raised: int | None = None
            left_open: int | None = None
            narrows = False
            for value in self._input_candidates(runner, path):
                trial = _with_input(base if path in open_attributions else filled, path, value)
                trial_outcome = graded(trial)
                if trial_outcome is None:
                    continue
                if trial_outcome.grade is not None and trial_outcome.grade > (baseline if path in open_attributions else threshold):
                    raised = max(raised or 0, trial_outcome.grade)
                    if raised >= outcome.grade_max:
                        break  # no value can do more than grade_max
                if trial_outcome.grade_max is None or trial_outcome.grade_max < outcome.grade_max:
                    narrows = True
                if trial_outcome.grade_max is not None:
                    left_open = max(left_open or 0, trial_outcome.grade_max)
            if raised is not None:
                found.append(UndeterminedInput(input=path, up_to=raised))
            elif narrows and left_open is not None and left_open > baseline:
                found.append(UndeterminedInput(input=path, up_to=left_open))
        return sorted(found, key=lambda u: (-u.up_to, u.input))

    def _input_candidates(self, runner: _Runner, path: str) -> list[Any]:
        subject = runner.ruleset.file.subject
        key = (subject, path)
        if key not in self._candidates:
            self._candidates[key] = input_candidates(runner.ruleset, path)
        return self._candidates[key]

    # -- self test ------------------------------------------------------------------------------

    def self_test(self) -> None:
        """Run every rule file's own test cases; every rule must fire in at least one of them (for
        flags and actions: or be undetermined in a case that expects undetermined ones)."""
        for runner in self._all_runners:
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
        expect = case.expect
        problems: list[str] = []
        try:
            settings = rs.resolve_settings(case.settings)  # a case is written against the file's defaults
            parsed = self.validate(case.request, icans_settings=settings if subject == "icans" else None)
            if rs.file.combination.policy == "collect":
                if subject == "blinatumomab":
                    # The grades of the same snapshot, each at its own file's defaults: a case is
                    # written against the files, not against the settings this engine runs with.
                    by_ruleset: dict[str, tuple[int | None, int | None]] = {}
                    undetermined: dict[str, list[str]] = {}
                    for subject_runner in self._all_runners:
                        if subject_runner.ruleset.file.subject not in ("crs", "icans"):
                            continue
                        if subject_runner.ruleset.file.subject == "crs" and parsed.vitals is None and parsed.crs is None:
                            continue
                        if subject_runner.ruleset.file.subject == "icans" and parsed.neuro is None:
                            continue
                        defaults = subject_runner.ruleset.resolve_settings({})
                        subject_derived, subject_outcome = self._graded(subject_runner, parsed, defaults)
                        by_ruleset[subject_runner.ruleset.id] = (subject_outcome.grade, subject_outcome.grade_max)
                        undetermined[subject_runner.ruleset.file.subject] = undetermined.get(
                            subject_runner.ruleset.file.subject, []
                        ) + [
                            u.input
                            for u in self._undetermined_by(
                                subject_runner, parsed, subject_derived, subject_outcome
                            )
                        ]
                    derived = blinatumomab_facts(parsed, rs, settings, grades=by_ruleset)
                    open_inputs = _open_inputs(undetermined, rs, self.rulesets)
                else:
                    derived = _DERIVE[subject](parsed, rs, settings)
                    open_inputs = {}
                certain, possible = self._evaluate(runner, derived, settings)
                items, open_items = collect(
                    runner.reference,
                    (certain, possible),
                    derived,
                    settings,
                    reported=reported_inputs(parsed),
                    open_inputs=open_inputs,
                )
                emitted = sorted({item.id for item in items})
                if expect.emits is not None and emitted != sorted(set(expect.emits)):
                    problems.append(f"expected {sorted(set(expect.emits))}, got {emitted}")
                if expect.undetermined is not None:
                    got = sorted({item.id for item in open_items})
                    if got != sorted(set(expect.undetermined)):
                        problems.append(f"expected undetermined {sorted(set(expect.undetermined))}, got {got}")
                if problems:
                    raise RuleSelfTestFailed(rs.path, "; ".join(problems), rule=where)
                # A rule that can only ever be undetermined (an action for an unknown weight band,
                # say) is reached when a case leaves it open.
                return set(certain) | (set(possible) if expect.undetermined is not None else set())
            derived, outcome = self._graded(runner, parsed, settings)
        except RuleSelfTestFailed:
            raise
        except Exception as exc:
            raise RuleSelfTestFailed(rs.path, f"raised {type(exc).__name__}: {exc}", rule=where) from exc
        drivers = sorted(d.rule for d in outcome.drivers if d.drives)
        if (outcome.grade, outcome.status) != (expect.grade, expect.status):
            problems.append(f"expected grade {expect.grade} ({expect.status}), got {outcome.grade} ({outcome.status})")
        if "grade_max" in expect.model_fields_set and outcome.grade_max != expect.grade_max:
            problems.append(f"expected grade_max {expect.grade_max}, got {outcome.grade_max}")
        if expect.drivers is not None and drivers != sorted(expect.drivers):
            problems.append(f"expected drivers {sorted(expect.drivers)}, got {drivers}")
        if problems:
            raise RuleSelfTestFailed(rs.path, "; ".join(problems), rule=where)
        return {d.rule for d in outcome.drivers}


def _open_inputs(
    open_by_subject: Mapping[str, list[str]], actions: LoadedRuleSet, rulesets: list[LoadedRuleSet]
) -> dict[str, list[str]]:
    """For each grade fact of the label actions: the unreported inputs that leave its grade open
    (`open_by_subject`: the undetermined_by inputs of crs and icans, every scale). Which subject a
    grade fact reads is the action rule file's: a grade source names its rule set, a label grade
    names its sources."""
    subject_of = {rs.id: rs.file.subject for rs in rulesets}
    derivations = actions.file.derivations
    subjects: dict[str, list[str]] = {
        source.fact: [subject_of[source.ruleset]] for source in derivations.grade_sources if source.ruleset in subject_of
    }
    for rule in derivations.label_grades:
        subjects[rule.fact] = list(
            dict.fromkeys(subject for names in rule.sources.values() for name in names for subject in subjects.get(name, []))
        )
    return {
        fact: list(dict.fromkeys(path for subject in read for path in open_by_subject.get(subject, [])))
        for fact, read in subjects.items()
    }


def reported_inputs(assessment: Assessment) -> frozenset[str]:
    """The request paths `section.field` (and each section) that the request sent."""
    paths: set[str] = set()
    for section, value in assessment.model_dump(exclude_unset=True, exclude_none=True).items():
        paths.add(section)
        if isinstance(value, Mapping):
            paths.update(f"{section}.{name}" for name in value)
    return frozenset(paths)


def _with_input(base: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the request form `base` with `section.field` set to `value`. An object input that is
    partly reported (an oxygen device without its flow) keeps what was reported: only its unreported
    members take the candidate's values, so a trial never contradicts the request."""
    section, field = path.split(".", 1)
    trial = dict(base)
    reported = (trial.get(section) or {}).get(field)
    if isinstance(reported, Mapping) and isinstance(value, Mapping):
        value = {**value, **reported}
    trial[section] = {**(trial.get(section) or {}), field: value}
    return trial


def _outcome_fields(outcome: Outcome) -> dict[str, Any]:
    return {
        "grade": outcome.grade,
        "grade_max": outcome.grade_max,
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
