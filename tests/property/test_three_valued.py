"""Properties of the three-valued ("v1.1") semantics: api-v1.md, "v1.1 additions: clinical fidelity".

- the two evaluators agree on arbitrary partial facts, for both the certain and the possible sets,
  for the rules and the derivations of every rule set, and certain is a subset of possible;
- Kleene soundness of the reference evaluator: completing partial facts never un-fires a certain
  condition, and whatever fires (or stays possible) after the completion was possible before;
- information monotonicity at the API: reporting unreported inputs keeps the grade within
  [grade, grade_max] and never raises grade_max;
- `no_crs` and grade 0 are given only when nothing unreported could raise them, except the one
  relaxation the CRS rule file declares (`gate_stands_up_to: 1`);
- `undetermined_by` is exact: each listed input can reach its `up_to` and no more, and no unlisted
  unreported input can raise the grade;
- the contract table of api-v1.md v1.1, as explicit examples.

Every property runs with the "ci" profile of tests/conftest.py (fixed seed), with fewer examples
than its default where an example is expensive, so that the file stays well under a minute.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from functools import cache
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from aegrade._durable import DurableEvaluator
from aegrade.candidates import SECTIONS, input_candidates
from aegrade.engine import Engine, _with_input, default_engine
from aegrade.errors import InvalidAssessment
from aegrade.facts import CATALOGUES, FactSpec, Interval
from aegrade.models import AssessmentResult
from aegrade.reference import ReferenceEvaluator
from aegrade.rulefile import FactTest, LoadedRuleSet, NumberSetting, ScaledFact, SettingValue, iter_tests, load_rulesets
from tests.profiles import examples

CI = settings.get_profile("ci")

ENGINE_NAMES = ["alternate", "default"]


@cache
def _engine(name: str) -> Engine:
    """The default engine, or one with every CRS choice setting at its other value. Built on first
    use, so that the evaluator properties run even when an engine fails its self test."""
    if name == "default":
        return default_engine()
    return Engine(
        settings={
            "astct-crs": {
                "vasopressin_alone": "not_vasopressor",
                "facemask_low_flow": "flow",
                "hfnc_low_flow": "device",
                "masked_fever_without_findings": "grade_1",
                "hypotension_from_vitals": "flag_only",
                "spo2_reassess_below_pct": 88,
            },
        },
        self_test=False,
    )


RULESETS: dict[str, LoadedRuleSet] = {rs.id: rs for rs in load_rulesets()}


# ================================================================================================
# Raw facts and settings for one rule set
# ================================================================================================


def _conditions(rs: LoadedRuleSet) -> list[Any]:
    found = [r.when for r in rs.rules] + [c for _, c in rs.derivation_conditions]
    found += [d.missing_when for d in rs.file.domains]
    found += [s.applies_when for s in rs.file.settings if s.applies_when is not None]
    return found


@cache
def _constants(ruleset_id: str) -> dict[str, tuple[float, ...]]:
    """For each fact, every number a condition compares it with (constants, and the bounds and
    default of a number setting it is compared with), so that values land on every side."""
    rs = RULESETS[ruleset_id]
    settings_by_id = {s.id: s for s in rs.file.settings}
    out: dict[str, set[float]] = {}
    for condition in _conditions(rs):
        for test in iter_tests(condition):
            if not isinstance(test, FactTest):
                continue
            values = test.value if isinstance(test.value, list) else [test.value]
            for v in values:
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.setdefault(test.fact, set()).add(float(v))
            if isinstance(test.ref, SettingValue):
                s = settings_by_id[test.ref.setting]
                if isinstance(s, NumberSetting):
                    out.setdefault(test.fact, set()).update({s.minimum, s.maximum, s.default})
            if isinstance(test.ref, ScaledFact):
                out.setdefault(test.fact, set()).update({0.0, 1.0, 10.0})
                out.setdefault(test.ref.fact, set()).update({0.0, 1.0, 10.0})
    return {k: tuple(sorted(v)) for k, v in out.items()}


@cache
def _presence_tested(ruleset_id: str) -> dict[str, frozenset[str]]:
    """For each named condition (rules and derivations), the facts it tests with present/absent."""
    rs = RULESETS[ruleset_id]
    named = [(r.id, r.when) for r in rs.rules] + list(rs.derivation_conditions)
    return {
        name: frozenset(t.fact for t in iter_tests(c) if isinstance(t, FactTest) and t.op in ("present", "absent"))
        for name, c in named
    }


def _near_numbers(consts: tuple[float, ...]) -> list[float]:
    spread = {0.0, 0.5, 3.3, 17.25, 123.456, 399.99}
    return sorted({round(c + d, 6) for c in consts for d in (-1.0, -0.01, 0.0, 0.01, 1.0)} | spread)


def _near_integers(consts: tuple[float, ...]) -> list[int]:
    near = {int(c) + d for c in consts if float(c).is_integer() for d in (-1, 0, 1)}
    return sorted(near | set(range(0, 41)))


def _points(spec: FactSpec, consts: tuple[float, ...]) -> list[Any]:
    """Candidate values of one fact (numbers on every side of every constant it is compared with)."""
    if spec.type == "boolean":
        return [True, False]
    if spec.type == "enum":
        return list(spec.values)
    if spec.type == "integer":
        return list(_near_integers(consts))
    return _near_numbers(consts)


def _intervals(spec: FactSpec, consts: tuple[float, ...]) -> list[Interval]:
    ends = _near_integers(consts) if spec.type == "integer" else _near_numbers(consts)
    ends = [e for e in ends if e <= 12 or e in consts] if spec.type == "integer" else ends
    return [Interval(lo, hi) for lo, hi in itertools.combinations(sorted(set(ends)), 2)]


_ABSENT = object()


@cache
def _fact_choices(ruleset_id: str) -> dict[str, tuple[Any, ...]]:
    """For each catalogue fact, what it may be: absent (about half the time), a value of its type,
    or, for a bounded fact, an Interval (lo < hi). One draw a fact keeps generation cheap."""
    rs = RULESETS[ruleset_id]
    consts = _constants(ruleset_id)
    out: dict[str, tuple[Any, ...]] = {}
    for name, spec in CATALOGUES[rs.file.subject].items():
        values = _points(spec, consts.get(name, ()))
        if spec.bounded:
            values = values + _intervals(spec, consts.get(name, ()))
        out[name] = tuple([_ABSENT] * len(values) + values)
    return out


def partial_facts(ruleset_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Each catalogue fact absent or a value of its type (an Interval sometimes, when bounded)."""
    fields = {name: st.sampled_from(choices) for name, choices in _fact_choices(ruleset_id).items()}
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not _ABSENT})


def settings_for(ruleset_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """The settings in force, from random valid overrides of the declared ones."""
    rs = RULESETS[ruleset_id]
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for s in rs.file.settings:
        if isinstance(s, NumberSetting):
            optional[s.id] = st.one_of(st.sampled_from([s.minimum, s.maximum, s.default]), st.floats(s.minimum, s.maximum))
        else:
            optional[s.id] = st.sampled_from(sorted(s.choices))
    return st.fixed_dictionaries({}, optional=optional).map(rs.resolve_settings)


@cache
def _evaluators(ruleset_id: str, stage: str) -> tuple[ReferenceEvaluator, DurableEvaluator]:
    rs = RULESETS[ruleset_id]
    if stage == "rules":
        return ReferenceEvaluator.for_rules(rs), DurableEvaluator.for_rules(rs)
    return ReferenceEvaluator.for_derivations(rs), DurableEvaluator.for_derivations(rs)


STAGES = [(rs_id, "rules") for rs_id in RULESETS] + [
    (rs_id, "derivations") for rs_id, rs in RULESETS.items() if rs.derivation_conditions
]
STAGE_IDS = [f"{rs_id}-{stage}" for rs_id, stage in STAGES]


def test_every_rule_set_and_its_derivations_are_covered() -> None:
    assert {rs.file.subject for rs in RULESETS.values()} == {"crs", "icans", "thrombosis", "blinatumomab"}
    assert any(stage == "derivations" for _, stage in STAGES)
    assert any(spec.bounded for rs in RULESETS.values() for spec in CATALOGUES[rs.file.subject].values())


# ================================================================================================
# 1. Evaluator agreement on arbitrary partial facts
# ================================================================================================


@pytest.mark.parametrize(("ruleset_id", "stage"), STAGES, ids=STAGE_IDS)
@settings(CI, max_examples=examples(200))
@given(data=st.data())
def test_both_evaluators_agree_on_partial_facts(ruleset_id: str, stage: str, data: st.DataObject) -> None:
    facts = data.draw(partial_facts(ruleset_id), label="facts")
    in_force = data.draw(settings_for(ruleset_id), label="settings")
    reference, durable = _evaluators(ruleset_id, stage)
    by_reference = reference.fired(facts, in_force)
    by_durable = durable.fired(facts, in_force)
    certain, possible = by_reference
    assert certain <= possible
    assert by_durable[0] <= by_durable[1]
    assert by_durable[0] == certain, (
        f"certain: durable-only {sorted(by_durable[0] - certain)}, reference-only {sorted(certain - by_durable[0])}"
    )
    assert by_durable[1] == possible, (
        f"possible: durable-only {sorted(by_durable[1] - possible)}, reference-only {sorted(possible - by_durable[1])}"
    )


# ================================================================================================
# 2. Kleene soundness of the reference evaluator
# ================================================================================================


def _refine(spec: FactSpec, interval: Interval, consts: tuple[float, ...]) -> st.SearchStrategy[Any]:
    """A value, or a narrower interval, within `interval`."""
    lo, hi = interval.lo, interval.hi
    if spec.type == "integer":
        points = st.integers(int(lo), int(hi)) if float(lo).is_integer() and float(hi).is_integer() else st.just(lo)
    else:
        points = st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi, allow_nan=False))
    narrower = st.tuples(points, points).filter(lambda t: t[0] != t[1]).map(lambda t: Interval(min(t), max(t)))
    return st.one_of(points, narrower, st.just(interval))


@pytest.mark.parametrize(("ruleset_id", "stage"), STAGES, ids=STAGE_IDS)
@settings(CI, max_examples=examples(150))
@given(data=st.data())
def test_completing_partial_facts_is_sound(ruleset_id: str, stage: str, data: st.DataObject) -> None:
    """A completion fills some absent facts (never a `future` one: its absence is not an unknown)
    and narrows some intervals. Conditions that test the presence of a filled fact are left out:
    `present`/`absent` test the report itself and are two-valued by design."""
    rs = RULESETS[ruleset_id]
    catalogue = CATALOGUES[rs.file.subject]
    consts = _constants(ruleset_id)
    partial = data.draw(partial_facts(ruleset_id), label="partial")
    in_force = data.draw(settings_for(ruleset_id), label="settings")
    completion = dict(partial)
    open_facts = sorted(n for n, spec in catalogue.items() if n not in partial and not spec.future)
    filled = data.draw(st.sets(st.sampled_from(open_facts)) if open_facts else st.just(set()), label="filled")
    for name in sorted(filled):
        completion[name] = data.draw(st.sampled_from(_points(catalogue[name], consts.get(name, ()))), label=name)
    intervals = sorted(n for n, v in partial.items() if isinstance(v, Interval))
    for name in sorted(data.draw(st.sets(st.sampled_from(intervals)) if intervals else st.just(set()), label="narrowed")):
        completion[name] = data.draw(_refine(catalogue[name], partial[name], consts.get(name, ())), label=name)
    reference, _ = _evaluators(ruleset_id, stage)
    certain, possible = reference.fired(partial, in_force)
    certain_after, possible_after = reference.fired(completion, in_force)
    presence = _presence_tested(ruleset_id)
    checked = {name for name in reference.names if not (presence[name] & filled)}
    note(f"filled {sorted(filled)}")
    assert (certain & checked) <= certain_after, f"certain, then not: {sorted((certain & checked) - certain_after)}"
    assert (certain_after & checked) <= possible, f"fired, but was impossible: {sorted((certain_after & checked) - possible)}"
    assert (possible_after & checked) <= possible, f"possible, but was not: {sorted((possible_after & checked) - possible)}"


# ================================================================================================
# Requests for CRS and ICANS, with completions
# ================================================================================================

VASOPRESSORS = ["norepinephrine", "epinephrine", "phenylephrine", "dopamine", "vasopressin", "other"]
DEVICES = [
    "none", "nasal_cannula", "blow_by", "high_flow_nasal_cannula", "simple_facemask", "nonrebreather", "venturi",
    "cpap", "bipap", "mechanical_ventilation",
]
CANNULAS = {"nasal_cannula", "high_flow_nasal_cannula"}
FLOWS = [0.5, 2.0, 5.99, 6.0, 6.01, 15.0, 40.0]
TEMPERATURES = [36.0, 37.2, 37.99, 38.0, 38.01, 39.0, 40.5]
AGES = [0.5, 4.0, 9.0, 11.9, 12.0, 16.0, 45.0, 80.0]
CONSCIOUSNESS = ["alert", "awakens_spontaneously", "awakens_to_voice", "awakens_to_tactile", "unarousable"]
SEIZURE = [
    "none", "resolved_rapidly", "nonconvulsive_resolved_with_intervention", "prolonged_over_5_min",
    "repetitive_without_return_to_baseline",
]
MOTOR = ["none", "tremor_or_myoclonus", "deep_focal_weakness"]
EDEMA = ["none", "focal", "diffuse"]
ICP_SIGNS = ["posturing", "cn6_palsy", "papilledema", "cushings_triad"]

# A request is described by its fields (path -> value); `_payload` builds it. Each field is one
# request input as undetermined_by names it: `crs.oxygen` is the whole oxygen object.
Fields = dict[str, Any]


@st.composite
def oxygen(draw: st.DrawFn) -> dict[str, Any]:
    device = draw(st.one_of(st.just("none"), st.sampled_from(DEVICES)))
    if device == "none":
        return {"device": "none"}
    if device in CANNULAS:
        return {"device": device, "flow_l_min": draw(st.sampled_from(FLOWS))}
    flow = draw(st.sampled_from([None, *FLOWS]))
    return {"device": device} if flow is None else {"device": device, "flow_l_min": flow}


@st.composite
def full_fields(draw: st.DrawFn) -> tuple[float, set[str], Fields]:
    """A patient age, the sections to send, and a value for every CRS and neuro input, consistent
    with one another (as validation requires)."""
    age = draw(st.sampled_from(AGES))
    sections = draw(st.sampled_from([{"crs"}, {"neuro"}, {"crs", "neuro"}]))
    fields: Fields = {}
    if "crs" in sections:
        fields["vitals.temperature_c"] = draw(st.sampled_from(TEMPERATURES))
        fields["crs.fever_masked"] = draw(st.booleans())
        agents = draw(st.lists(st.sampled_from(VASOPRESSORS), unique=True, max_size=3))
        fields["crs.vasopressors"] = agents
        # hypotension false is never sent with a vasopressor running
        fields["crs.hypotension"] = True if agents else draw(st.booleans())
        fields["crs.oxygen"] = draw(oxygen())
    if "neuro" in sections:
        fields["neuro.consciousness"] = draw(st.sampled_from(CONSCIOUSNESS))
        fields["neuro.seizure"] = draw(st.sampled_from(SEIZURE))
        fields["neuro.motor"] = draw(st.sampled_from(MOTOR))
        fields["neuro.cerebral_edema"] = draw(st.sampled_from(EDEMA))
        fields["neuro.icp_signs"] = draw(st.lists(st.sampled_from(ICP_SIGNS), unique=True, max_size=2))
        if age >= 12:
            fields["neuro.ice_score"] = draw(st.integers(0, 10))
        else:
            fields["neuro.capd_score"] = draw(st.integers(0, 32))
    return age, sections, fields


def _payload(age: float, sections: set[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"patient": {"age_years": age}}
    for section in sorted(sections):  # an empty section is sent: "section sent, nothing reported"
        payload[section] = {}
    for path, value in fields.items():
        section, name = path.split(".", 1)
        payload.setdefault(section, {})[name] = value
    return payload


@st.composite
def request_and_completion(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """R (some inputs of a consistent full request) and R' (R plus some of the inputs R left out,
    with the values of the same full request: consistent and valid)."""
    age, sections, full = draw(full_fields())
    kept = {p: v for p, v in full.items() if draw(st.booleans(), label=f"R reports {p}")}
    added = {p: v for p, v in full.items() if p not in kept and draw(st.booleans(), label=f"R' adds {p}")}
    return _payload(age, sections, kept), _payload(age, sections, {**kept, **added})


def requests() -> st.SearchStrategy[dict[str, Any]]:
    return request_and_completion().map(lambda pair: pair[0])


def _parts(result: AssessmentResult) -> dict[str, Any]:
    return {name: part for name, part in (("crs", result.crs), ("icans", result.icans)) if part is not None}


# ================================================================================================
# 3. Information monotonicity at the API
# ================================================================================================


@settings(CI, max_examples=examples(500))
@given(pair=request_and_completion(), engine_name=st.sampled_from(ENGINE_NAMES))
def test_reporting_more_keeps_the_grade_within_grade_and_grade_max(
    pair: tuple[dict[str, Any], dict[str, Any]], engine_name: str
) -> None:
    request, completion = pair
    engine = _engine(engine_name)
    before, after = _parts(engine.assess(request)), _parts(engine.assess(completion))
    assert before.keys() == after.keys()
    for subject, part in before.items():
        new = after[subject]
        g, m = part.grade, part.grade_max
        where = f"{subject}: {request} gives {g}..{m} ({part.status}); {completion} gives {new.grade}..{new.grade_max} ({new.status})"
        if new.grade is not None:
            if g is not None:
                assert new.grade >= g, where
            if m is not None:
                assert new.grade <= m, where
        if m is not None and new.grade_max is not None:
            assert new.grade_max <= m, where
        if g is not None and m is not None:
            assert g <= m, where
        _check_closed_zero(subject, part, request)
        _check_closed_zero(subject, new, completion)


# ================================================================================================
# 4. no_crs, and grade 0, only when nothing unreported could raise them
# ================================================================================================


def _check_closed_zero(subject: str, part: Any, request: Mapping[str, Any]) -> None:
    """No `no_crs`, and no grade 0 that is `graded` or `no_crs`, while grade_max is above 0, except
    the one relaxation of the CRS rule file (`gate_stands_up_to: 1`): afebrile with no CRS
    hypotension or hypoxia stays no_crs while fever_masked is unreported, since masked fever with
    no findings cannot exceed grade 1."""
    closed_zero = part.status == "no_crs" or (part.grade == 0 and part.status in ("graded", "no_crs"))
    if not closed_zero or part.grade_max is None or part.grade_max == 0:
        return
    relaxed = (
        subject == "crs"
        and part.status == "no_crs"
        and part.grade == 0
        and part.grade_max <= 1
        and "fever_masked" not in request.get("crs", {})
    )
    assert relaxed, f"{subject}: {part.status} grade {part.grade} with grade_max {part.grade_max} for {request}"


@settings(CI, max_examples=examples(400))
@given(request=requests(), engine_name=st.sampled_from(ENGINE_NAMES))
def test_no_crs_and_grade_0_only_when_nothing_could_raise_them(request: dict[str, Any], engine_name: str) -> None:
    for subject, part in _parts(_engine(engine_name).assess(request)).items():
        _check_closed_zero(subject, part, request)


def test_no_temperature_is_not_no_crs() -> None:
    """The relaxation is only for fever_masked unreported: with no temperature, a fever could make it grade 1."""
    request = {
        "patient": {"age_years": 50},
        "crs": {"fever_masked": False, "hypotension": False, "vasopressors": [], "oxygen": {"device": "none"}},
    }
    crs = _engine("default").assess(request).crs
    assert crs is not None
    assert [u.model_dump() for u in crs.undetermined_by] == [{"input": "vitals.temperature_c", "up_to": 1}]
    assert (crs.status, crs.grade, crs.grade_max) == ("not_assessable", None, 1)


# ================================================================================================
# 5. undetermined_by is exact
# ================================================================================================


def _sent(request: Mapping[str, Any]) -> set[str]:
    return {f"{s}.{f}" for s, section in request.items() if isinstance(section, Mapping) for f in section}


def _open_paths(subject: str, request: Mapping[str, Any]) -> list[str]:
    """The request inputs of the subject's catalogue facts that were not sent."""
    sent = _sent(request)
    paths: dict[str, None] = {}
    for spec in CATALOGUES[subject].values():  # type: ignore[index]
        if spec.future or spec.always_present:
            continue
        for path in spec.inputs:
            section, _, name = path.partition(".")
            if path not in sent and section in SECTIONS and name in SECTIONS[section].model_fields:
                paths[path] = None
    return list(paths)


def _tried(engine: Engine, subject: str, request: Mapping[str, Any], path: str) -> dict[str, tuple[int | None, int | None]]:
    """Each candidate value of `path` that gives a valid request, with the (grade, grade_max) it gives."""
    rs = next(r for r in engine.rulesets if r.file.subject == subject)
    out: dict[str, tuple[int | None, int | None]] = {}
    for value in input_candidates(rs, path):
        trial = _with_input(request, path, value)
        try:
            result = engine.assess(trial)
        except InvalidAssessment:
            continue
        part = _parts(result)[subject]
        out[repr(value)] = (part.grade, part.grade_max)
    return out


@settings(CI, max_examples=examples(50))
@given(request=requests(), engine_name=st.sampled_from(ENGINE_NAMES))
def test_undetermined_by_lists_exactly_the_inputs_that_would_decide_the_grade(
    request: dict[str, Any], engine_name: str
) -> None:
    """Listed: some value raises the grade (up_to: the highest so established); or none does but
    some value lowers grade_max, so the input decides whether the rest can count (up_to: the
    highest grade_max its values leave open). Not listed: neither."""
    engine = _engine(engine_name)
    for subject, part in _parts(engine.assess(request)).items():
        baseline = part.grade if part.grade is not None else 0
        listed = {u.input: u.up_to for u in part.undetermined_by}
        assert len(listed) == len(part.undetermined_by), part.undetermined_by
        assert not set(listed) & _sent(request), f"{subject}: a sent input is listed: {part.undetermined_by}"
        open_paths = _open_paths(subject, request)
        assert set(listed) <= set(open_paths), f"{subject}: {sorted(set(listed) - set(open_paths))} is no open input"
        for path in open_paths:
            tried = _tried(engine, subject, request, path)
            raised = {v: g for v, (g, _) in tried.items() if g is not None and g > baseline}
            narrows = part.grade_max is not None and any(m is None or m < part.grade_max for _, m in tried.values())
            left_open = max((m for _, m in tried.values() if m is not None), default=None)
            decides = narrows and left_open is not None and left_open > baseline
            where = f"{subject} {path} for {request} (grade {part.grade}, grade_max {part.grade_max}, {part.status})"
            if path in listed:
                assert part.grade_max is not None and listed[path] <= part.grade_max, where
                if raised:
                    assert max(raised.values()) == listed[path], f"{where}: listed up to {listed[path]}, values give {raised}"
                else:
                    assert decides and left_open == listed[path], f"{where}: listed up to {listed[path]}, values give {tried}"
            else:
                assert not raised, f"{where}: not listed, but these values raise the grade: {raised}"
                assert not decides, f"{where}: not listed, but its values decide what stays open: {tried}"


# ================================================================================================
# 6. grade_max is attained: some report of the unreported inputs reaches it
# ================================================================================================

# Values on every side of every threshold of the CRS and ICANS rule files (a representative of each
# class of value, so that the product of the unreported inputs stays small).
REPRESENTATIVES: dict[str, list[Any]] = {
    "vitals.temperature_c": [37.0, 38.0],
    "crs.fever_masked": [True, False],
    "crs.hypotension": [True, False],
    "crs.vasopressors": [[], ["vasopressin"], ["norepinephrine"], ["norepinephrine", "epinephrine"]],
    "crs.oxygen": [
        {"device": "none"}, {"device": "blow_by"}, {"device": "nasal_cannula", "flow_l_min": 2.0},
        {"device": "nasal_cannula", "flow_l_min": 7.0}, {"device": "high_flow_nasal_cannula", "flow_l_min": 3.0},
        {"device": "high_flow_nasal_cannula", "flow_l_min": 7.0}, {"device": "simple_facemask"},
        {"device": "simple_facemask", "flow_l_min": 3.0}, {"device": "simple_facemask", "flow_l_min": 7.0},
        {"device": "cpap"},
    ],
    "neuro.consciousness": CONSCIOUSNESS,
    "neuro.seizure": ["none", "resolved_rapidly", "prolonged_over_5_min"],
    "neuro.motor": ["none", "deep_focal_weakness"],
    "neuro.cerebral_edema": EDEMA,
    "neuro.icp_signs": [[], ["papilledema"]],
    "neuro.ice_score": [10, 8, 5, 1],
    "neuro.capd_score": [0, 4, 9],
}


@settings(CI, max_examples=examples(30))
@given(pair=request_and_completion(), engine_name=st.sampled_from(ENGINE_NAMES))
def test_grade_max_is_reached_by_some_report_of_the_unreported_inputs(
    pair: tuple[dict[str, Any], dict[str, Any]], engine_name: str
) -> None:
    """grade_max is "the highest grade the unreported inputs still allow": the highest grade over
    every report of them (for a report graded null, its own grade_max: a clinician review "up to 1")."""
    request, _ = pair
    engine = _engine(engine_name)
    for subject, part in _parts(engine.assess(request)).items():
        reached, open_paths = _highest_report(engine, subject, request)
        assert part.grade_max == reached, (
            f"{subject}: {request} has grade {part.grade}, grade_max {part.grade_max} ({part.status}); "
            f"the highest over every report of {open_paths} is {reached}"
        )


def _highest_report(engine: Engine, subject: str, request: Mapping[str, Any]) -> tuple[int | None, list[str]]:
    age = request["patient"]["age_years"]
    sections = ("vitals", "crs") if subject == "crs" else ("neuro",)
    sent = _sent(request)
    open_paths = [
        p for p in REPRESENTATIVES
        if p.split(".")[0] in sections and p not in sent
        and not (p == "neuro.ice_score" and age < 12) and not (p == "neuro.capd_score" and age >= 12)
    ]
    reached: int | None = None
    for combination in itertools.product(*(REPRESENTATIVES[p] for p in open_paths)):
        trial: dict[str, Any] = dict(request)
        for path, value in zip(open_paths, combination):
            trial = _with_input(trial, path, value)
        try:
            part = _parts(engine.assess(trial))[subject]
        except InvalidAssessment:
            continue
        value = part.grade if part.grade is not None else part.grade_max
        if value is not None:
            reached = value if reached is None else max(reached, value)
    return reached, open_paths


# ================================================================================================
# The contract table of api-v1.md v1.1
# ================================================================================================


def _crs(payload: dict[str, Any]) -> Any:
    result = _engine("default").assess(payload).crs
    assert result is not None
    return result


def _icans(payload: dict[str, Any]) -> Any:
    result = _engine("default").assess(payload).icans
    assert result is not None
    return result


def test_afebrile_on_norepinephrine_without_fever_masked_is_not_assessable_up_to_3() -> None:
    crs = _crs(
        {"patient": {"age_years": 50}, "vitals": {"temperature_c": 37.2},
         "crs": {"vasopressors": ["norepinephrine"], "oxygen": {"device": "none"}}}
    )
    assert (crs.status, crs.grade, crs.grade_max) == ("not_assessable", None, 3)
    assert [u.model_dump() for u in crs.undetermined_by] == [{"input": "crs.fever_masked", "up_to": 3}]


def test_fever_and_nothing_else_is_incomplete_1_to_4() -> None:
    crs = _crs({"patient": {"age_years": 50}, "vitals": {"temperature_c": 39.0}})
    assert (crs.status, crs.grade, crs.grade_max) == ("incomplete", 1, 4)
    assert {"hypotension", "oxygen"} <= set(crs.missing)


def test_a_normal_pressure_leaves_the_hypotension_domain_open() -> None:
    crs = _crs(
        {"patient": {"age_years": 50}, "vitals": {"temperature_c": 38.5, "sbp_mmhg": 120},
         "crs": {"fever_masked": False, "oxygen": {"device": "none"}}}
    )
    assert (crs.status, crs.grade, crs.grade_max) == ("incomplete", 1, 4)
    assert "hypotension" in crs.missing
    assert {u.input: u.up_to for u in crs.undetermined_by}["crs.vasopressors"] == 4


def test_alert_adult_with_other_domains_none_and_no_ice_is_incomplete_0_to_3() -> None:
    icans = _icans(
        {"patient": {"age_years": 40},
         "neuro": {"consciousness": "alert", "seizure": "none", "motor": "none", "cerebral_edema": "none", "icp_signs": []}}
    )
    assert (icans.status, icans.grade, icans.grade_max) == ("incomplete", 0, 3)
    assert [u.model_dump() for u in icans.undetermined_by] == [{"input": "neuro.ice_score", "up_to": 3}]


def test_alert_adult_with_nothing_else_reported_is_up_to_4() -> None:
    icans = _icans({"patient": {"age_years": 40}, "neuro": {"consciousness": "alert"}})
    assert (icans.status, icans.grade, icans.grade_max) == ("incomplete", 0, 4)


def test_afebrile_with_no_findings_and_fever_masked_not_sent_stays_no_crs_up_to_1() -> None:
    crs = _crs(
        {"patient": {"age_years": 50}, "vitals": {"temperature_c": 37.2},
         "crs": {"hypotension": False, "vasopressors": [], "oxygen": {"device": "none"}}}
    )
    assert (crs.status, crs.grade, crs.grade_max) == ("no_crs", 0, 1)
