"""The only module that imports durable_rules: rule files compiled to durable_rules rulesets, and run.

durable_rules 2.0.28 is used in the narrow way of ../shared/spec/engine-notes.md, and in a way
narrower still, for faults measured while building this module (each reproduced in a fresh process
with a two-rule ruleset):

- A private host whose `_run` does nothing: no dispatcher threads (engine-notes).
- One lock around every call into the engine, a fresh session id per evaluation, and the session
  deleted in `finally` (engine-notes).
- Facts, not events, so that every matching rule fires and is recorded (engine-notes).
- A post that matches no rule, followed by `delete_state`, makes the next post on that ruleset
  crash the process (SIGSEGV). So every ruleset carries a sentinel rule that matches every fact;
  its absence from the result also shows that the result was lost.
- `$nex` (field absent) makes the post never return, and `$ex` was seen in the same crash.
  Presence is sent instead as an explicit companion field per fact, `has__<fact>` = 1 or 0.
- A number written with an exponent (`1e-05`, which `json.dumps` writes for 0.00001) makes the
  post fail with error 204. Facts are serialized here, with every number in positional notation.
- `$neq` on an absent field does not match. Conditions are three-valued (see
  `aegrade.reference`), and each rule is compiled twice: "certainly true" and "possibly true".
  Negations are pushed down to the tests (`not` swaps certain and possible, so a leaf keeps the
  strength of its compilation); a leaf is "reported and passes" (`has__<fact>` = 1 and the test)
  when strong, and "not reported or passes" when weak. No absent-field semantics of durable_rules
  is relied on. A bounded fact (an interval) is sent as `<fact>__lo` and `<fact>__hi`.
- Actions are not run. durable_rules queues one action per matched rule; the queue of the session
  is read directly (`start_action_for_state`, then `complete_and_start_action` until it is empty),
  which names every matched rule. Its Python action layer (a closure, a JSON round trip of the
  state and an `update_state` per action) cost about 8.5 us per matched rule, the queue read
  about 0.5 us. And since no Python runs inside durable_rules, no exception can be swallowed
  there (it stores those in the state instead of raising them); every error of its C calls is
  raised here as EngineError.
- Each session's state is about 134 KB. On glibc, freeing it at the top of the heap returns the
  memory to the system and the next post page-faults it back: a post then took 57-60 us instead
  of 18 us, in most processes but not all, by allocation history. Importing this module raises
  glibc's trim and mmap thresholds (`_keep_session_memory`) so that the memory is reused. The
  benchmark (bench/engine.py) shows that resident memory still stays flat.
- A rule whose condition holds through two branches of an `$or` is queued twice for one fact
  (durable_rules expands disjunctions into separate paths); matched rules are read as a set.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import math
import re
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import durable_rules_engine as _dre
from durable import engine as _dr

from aegrade.errors import EngineError, LostResult, RuleFileError
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

__all__ = ["DurableEvaluator", "compile_conditions", "encode_fact", "encode_settings", "fact_fields", "possible_name"]

SENTINEL = "aegrade__sentinel"
_NEGATED = {"eq": "ne", "ne": "eq", "lt": "gte", "lte": "gt", "gt": "lte", "gte": "lt", "in": "not_in", "not_in": "in"}
_DURABLE_OP = {"ne": "$neq", "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}


_ABSENT: Any = object()


def _presence(name: str) -> str:
    return f"has__{name}"


def _setting_field(name: str) -> str:
    return f"setting__{name}"


# ----------------------------------------------------------------------------------------------
# Compilation
# ----------------------------------------------------------------------------------------------


def _join(op: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return parts[0] if len(parts) == 1 else {op: parts}


def _test(field: str, op: str, value: Any) -> dict[str, Any]:
    if op == "eq":
        return {field: value}
    if op == "in":
        return _join("$or", [{field: v} for v in value])
    if op == "not_in":
        return _join("$and", [{"$neq": {field: v}} for v in value])
    return {_DURABLE_OP[op]: {field: value}}


def _lo(name: str) -> str:
    return f"{name}__lo"


def _hi(name: str) -> str:
    return f"{name}__hi"


def _interval_test(name: str, op: str, value: Any, *, strong: bool) -> dict[str, Any]:
    """`x op value` for a bounded fact sent as its bounds: everywhere in them (strong) or somewhere
    (weak). The same table as `aegrade.reference.compare_interval`."""
    lo, hi = _lo(name), _hi(name)
    if op in ("in", "not_in"):
        each = [_interval_test(name, "eq" if op == "in" else "ne", v, strong=strong) for v in value]
        return _join("$or" if op == "in" else "$and", each)
    if op == "eq":
        return {"$and": [{lo: value}, {hi: value}]} if strong else {"$and": [{"$lte": {lo: value}}, {"$gte": {hi: value}}]}
    if op == "ne":
        return {"$or": [{"$gt": {lo: value}}, {"$lt": {hi: value}}]} if strong else {"$or": [{"$neq": {lo: value}}, {"$neq": {hi: value}}]}
    bound = {("lt", True): hi, ("lte", True): hi, ("gt", True): lo, ("gte", True): lo,
             ("lt", False): lo, ("lte", False): lo, ("gt", False): hi, ("gte", False): hi}[(op, strong)]
    return {_DURABLE_OP[op]: {bound: value}}


class _Compiler:
    """Compiles conditions to durable_rules expressions that are true when the condition is
    certainly true (`strong`) or possibly true (not `strong`), in the logic of
    `aegrade.reference`. Negations are pushed down to the tests (`not` swaps certain and possible,
    and so keeps the leaves' strength), and each leaf becomes "reported and passes" (strong) or
    "not reported or passes" (weak), over the explicit presence fields `has__<fact>`.

    A test with a `ref` becomes a test of a difference fact against 0: durable_rules is not asked
    to compare two fields (engine-notes.md: cross-message joins read memory out of bounds;
    comparisons within a message are not used either). The difference `fact - ref` is computed in
    Python before the post; its sign equals that of the comparison exactly (IEEE subtraction of
    finite numbers is zero only for equal operands).
    """

    def __init__(self, catalogue: Mapping[str, FactSpec]) -> None:
        self.catalogue = catalogue
        self.refs: list[tuple[str, FactTest]] = []
        self._ref_names: dict[int, str] = {}

    def condition(self, condition: Condition, *, strong: bool, negate: bool = False) -> dict[str, Any]:
        if isinstance(condition, (AllOf, AnyOf)):
            children = condition.all if isinstance(condition, AllOf) else condition.any
            is_and = isinstance(condition, AllOf) != negate
            return _join("$and" if is_and else "$or", [self.condition(c, strong=strong, negate=negate) for c in children])
        if isinstance(condition, NotOf):
            return self.condition(condition.not_, strong=strong, negate=not negate)
        if isinstance(condition, SettingTest):  # settings are always known
            return _test(_setting_field(condition.setting), _NEGATED[condition.op] if negate else condition.op, condition.value)
        if condition.op in ("present", "absent"):  # the report itself: always known
            present = (condition.op == "present") != negate
            return {_presence(condition.fact): 1 if present else 0}
        op = _NEGATED[condition.op] if negate else condition.op
        spec = self.catalogue[condition.fact]
        value: Any
        if condition.ref is not None:
            key = id(condition)
            if key not in self._ref_names:
                self._ref_names[key] = f"ref__{len(self.refs)}"
                self.refs.append((self._ref_names[key], condition))
            field, value = self._ref_names[key], 0
            future = spec.future and isinstance(condition.ref, SettingValue)
        else:
            field, value, future = condition.fact, condition.value, spec.future
        if future:  # an absent future fact fails its test: two-valued, whatever the strength
            strong = not negate
        if spec.bounded and condition.ref is None:
            passes = _interval_test(field, op, value, strong=strong)
        else:
            passes = _test(field, op, value)
        if strong:
            return {"$and": [{_presence(field): 1}, passes]}
        return {"$or": [passes, {_presence(field): 0}]}


def possible_name(name: str) -> str:
    """The durable_rules rule that holds when `name`'s condition is possibly true."""
    return f"{name}__possible"


def compile_conditions(
    named: list[tuple[str, Condition]], catalogue: Mapping[str, FactSpec]
) -> tuple[dict[str, Any], list[tuple[str, FactTest]]]:
    """The durable_rules definition of named conditions (for each, a certain and a possible rule,
    plus the sentinel), and the difference facts their `ref` tests need."""
    compiler = _Compiler(catalogue)
    definition: dict[str, Any] = {}
    for name, condition in named:
        definition[name] = {"all": [{"m": compiler.condition(condition, strong=True)}], "run": name}
        definition[possible_name(name)] = {
            "all": [{"m": compiler.condition(condition, strong=False)}],
            "run": possible_name(name),
        }
    definition[SENTINEL] = {"all": [{"m": {SENTINEL: 1}}], "run": SENTINEL}
    return definition, compiler.refs


def ref_differences(
    refs: list[tuple[str, FactTest]], facts: Mapping[str, FactValue], settings: Mapping[str, Scalar]
) -> dict[str, Scalar]:
    """`fact - ref` for each ref test whose operands are both present."""
    out: dict[str, Scalar] = {}
    for name, test in refs:
        x = facts.get(test.fact)
        if x is None or isinstance(x, (bool, str, Interval)):
            continue
        ref = test.ref
        if isinstance(ref, ScaledFact):
            y = facts.get(ref.fact)
            if y is None or isinstance(y, (bool, str, Interval)):
                continue
            out[name] = x - y * ref.times
        elif isinstance(ref, SettingValue):
            out[name] = x - float(settings[ref.setting])
    return out


# ----------------------------------------------------------------------------------------------
# Facts
# ----------------------------------------------------------------------------------------------


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise EngineError(f"non-finite number {value!r} must not reach durable_rules")
    text = repr(value)
    return format(Decimal(text), "f") if "e" in text or "E" in text else text


_PLAIN = re.compile(r"^[A-Za-z0-9_.\- ]*$")


def _encode_value(value: Scalar | float) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return _number(value)
    return f'"{value}"' if _PLAIN.match(value) else json.dumps(value, ensure_ascii=False)


def encode_settings(settings: Mapping[str, Scalar]) -> str:
    """The settings part of a fact's JSON text."""
    return "".join(f',"{_setting_field(name)}":{_encode_value(value)}' for name, value in settings.items())


FactFields = tuple[tuple[str, str, str, bool], ...]


def fact_fields(fact_names: tuple[str, ...], bounded: frozenset[str] = frozenset()) -> FactFields:
    """For each fact: its name, its JSON text when absent, its JSON prefix when present, and
    whether it is sent as its bounds (`<fact>__lo`, `<fact>__hi`)."""
    return tuple(
        (
            name,
            f',"{_presence(name)}":0',
            f',"{_presence(name)}":1,"{_lo(name) if name in bounded else name}":',
            name in bounded,
        )
        for name in fact_names
    )


def encode_fact(sid: str, facts: Mapping[str, FactValue], settings_json: str, fields: FactFields) -> str:
    """The JSON text of one fact, with presence flags, settings (from `encode_settings`) and the sentinel."""
    parts = [f'{{"sid":"{sid}","{SENTINEL}":1', settings_json]
    for name, absent, present, bounded in fields:
        value = facts.get(name, _ABSENT)
        if value is _ABSENT:
            parts.append(absent)
        elif bounded:
            lo, hi = (value.lo, value.hi) if isinstance(value, Interval) else (value, value)
            parts.append(f'{present}{_encode_value(lo)},"{_hi(name)}":{_encode_value(hi)}')
        elif isinstance(value, Interval):
            raise EngineError(f"fact {name} is not declared bounded but has bounds {value}")
        else:
            parts.append(present + _encode_value(value))
    parts.append("}")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------
# Host
# ----------------------------------------------------------------------------------------------


def _never_run(rule_id: str) -> Callable[[Any], None]:
    def action(c: Any) -> None:
        raise RuntimeError(f"durable_rules ran action {rule_id}; aegrade reads the action queue instead")

    return action


class _PrivateHost(_dr.Host):  # type: ignore[misc]
    """A durable_rules host with no dispatcher threads. Its actions are never run (see above)."""

    def _run(self) -> None:
        pass

    def get_action(self, action_name: str) -> Callable[[Any], None]:
        return _never_run(action_name)


_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3


def _keep_session_memory() -> bool:
    """Ask glibc to keep freed session memory for reuse (see the module docstring). False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, say): nothing to tune
        return False
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, 32 * 1024 * 1024) and libc.mallopt(_M_MMAP_THRESHOLD, 1024 * 1024))


MALLOC_TUNED = _keep_session_memory()

_LOCK = threading.Lock()
_HOST: _PrivateHost | None = None
_SID_PREFIX = uuid.uuid4().hex[:12]
_SIDS = itertools.count()


def _next_sid() -> str:
    """A session id never used before in this process. Sessions live only inside the lock and are
    deleted at once, so at most one is alive; a patient id is never used (engine-notes.md)."""
    return f"{_SID_PREFIX}-{next(_SIDS)}"


def _host() -> _PrivateHost:
    global _HOST
    if _HOST is None:
        _HOST = _PrivateHost()
    return _HOST


class DurableEvaluator:
    """Which of a list of named conditions over one subject's facts are certainly true, and which
    possibly true, according to durable_rules. `for_rules` and `for_derivations` as in
    `aegrade.reference.ReferenceEvaluator`."""

    def __init__(self, ruleset: LoadedRuleSet, named: list[tuple[str, Condition]], *, stage: str) -> None:
        self.ruleset = ruleset
        self._name = f"{ruleset.engine_name}_{stage}"
        catalogue = CATALOGUES[ruleset.file.subject]
        definition, self._refs = compile_conditions(named, catalogue)
        bounded = frozenset(name for name, spec in catalogue.items() if spec.bounded)
        self._fields = fact_fields(tuple(catalogue) + tuple(name for name, _ in self._refs), bounded)
        self._settings_json: dict[tuple[tuple[str, Scalar], ...], str] = {}
        self._possible = {possible_name(name): name for name, _ in named}
        self._known_actions = frozenset(definition)
        self._max_actions = 4 * len(self._known_actions)
        with _LOCK:
            host = _host()
            if self._name not in host._ruleset_directory:
                try:
                    host.set_rulesets({self._name: definition})
                except Exception as exc:
                    raise RuleFileError(ruleset.path, f"durable_rules refused the compiled rule set: {exc}") from exc
            self._rules = host.get_ruleset(self._name)

    @classmethod
    def for_rules(cls, ruleset: LoadedRuleSet) -> DurableEvaluator:
        return cls(ruleset, [(rule.id, rule.when) for rule in ruleset.rules], stage="rules")

    @classmethod
    def for_derivations(cls, ruleset: LoadedRuleSet) -> DurableEvaluator:
        return cls(ruleset, ruleset.derivation_conditions, stage="derive")

    def fired(self, facts: Mapping[str, FactValue], settings: Mapping[str, Scalar]) -> tuple[frozenset[str], frozenset[str]]:
        """(certain, possible): the names whose certain rule, and whose possible rule, matched,
        read from the session's action queue."""
        sid = _next_sid()
        key = tuple(settings.items())
        settings_json = self._settings_json.get(key)
        if settings_json is None:
            settings_json = self._settings_json.setdefault(key, encode_settings(settings))
        if self._refs:
            facts = {**facts, **ref_differences(self._refs, facts, settings)}
        payload = encode_fact(sid, facts, settings_json, self._fields)
        rules = self._rules
        handle = rules._handle
        fired: list[str] = []
        delete_failure: Exception | None = None
        with _LOCK:
            try:
                state_handle = rules._handle_result(_dre.assert_fact(handle, payload), payload)
                # Drain the whole queue before anything can raise: deleting a session whose
                # actions are still queued can crash durable_rules.
                started = _dre.start_action_for_state(handle, state_handle)
                message = started[1] if started else None
                while message and len(fired) <= self._max_actions:
                    fired.append(message)
                    message = _dre.complete_and_start_action(handle, state_handle)
            except _dr.MessageNotHandledException as exc:
                raise LostResult(f"{self.ruleset.label}: the sentinel rule did not match") from exc
            except EngineError:
                raise
            except Exception as exc:
                raise EngineError(f"{self.ruleset.label}: durable_rules failed: {exc}") from exc
            finally:
                try:
                    rules.delete_state(sid)
                except Exception as exc:  # the session would leak; never ignore it
                    delete_failure = exc
        if delete_failure is not None:
            raise EngineError(f"{self.ruleset.label}: could not delete session: {delete_failure}")
        if len(fired) > self._max_actions:
            raise EngineError(f"{self.ruleset.label}: more queued actions than rules can make")
        names = {self._action_name(message) for message in fired}
        if SENTINEL not in names:
            raise LostResult(f"{self.ruleset.label}: the sentinel rule's action is missing: the result was lost")
        # A rule fires once per matching branch of an `$or` (durable_rules expands disjunctions),
        # so the same id may be queued more than once: firing is a set.
        certain = frozenset(name for name in names if name != SENTINEL and name not in self._possible)
        possible = frozenset(self._possible[name] for name in names if name in self._possible)
        return certain, possible

    def _action_name(self, message: str) -> str:
        """The rule name of a queued action; its text starts `{"<rule name>":`."""
        name = message[2 : message.find('"', 2)] if message.startswith('{"') else ""
        if name not in self._known_actions:
            raise EngineError(f"{self.ruleset.label}: unexpected action from durable_rules: {message[:80]!r}")
        return name
