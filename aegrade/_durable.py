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
- `$neq` on an absent field does not match. Negations are pushed down to the tests and each
  negated fact test also matches when the fact is absent, as in the reference evaluator.
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
from aegrade.facts import CATALOGUES
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

__all__ = ["DurableEvaluator", "compile_ruleset", "encode_fact", "encode_settings", "fact_fields"]

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


class _Compiler:
    """Compiles conditions; a test with a `ref` becomes a test of a difference fact against 0.

    durable_rules is not asked to compare two fields (engine-notes.md: cross-message joins read
    memory out of bounds; comparisons within a message are not used either). The difference
    `fact - ref` is computed in Python before the post; its sign equals that of the comparison
    exactly (IEEE subtraction of finite numbers is zero only for equal operands).
    """

    def __init__(self) -> None:
        self.refs: list[tuple[str, FactTest]] = []

    def condition(self, condition: Condition, *, negate: bool = False) -> dict[str, Any]:
        if isinstance(condition, (AllOf, AnyOf)):
            children = condition.all if isinstance(condition, AllOf) else condition.any
            is_and = isinstance(condition, AllOf) != negate
            return _join("$and" if is_and else "$or", [self.condition(c, negate=negate) for c in children])
        if isinstance(condition, NotOf):
            return self.condition(condition.not_, negate=not negate)
        if isinstance(condition, SettingTest):  # settings are always present
            return _test(_setting_field(condition.setting), _NEGATED[condition.op] if negate else condition.op, condition.value)
        if condition.ref is not None:
            name = f"ref__{len(self.refs)}"
            self.refs.append((name, condition))
            return self._fact_test(name, condition.op, 0, negate)
        if condition.op in ("present", "absent"):
            present = (condition.op == "present") != negate
            return {_presence(condition.fact): 1 if present else 0}
        return self._fact_test(condition.fact, condition.op, condition.value, negate)

    @staticmethod
    def _fact_test(field: str, op: str, value: Any, negate: bool) -> dict[str, Any]:
        if not negate:
            return _test(field, op, value)
        return {"$or": [_test(field, _NEGATED[op], value), {_presence(field): 0}]}


def compile_condition(condition: Condition, *, negate: bool = False) -> dict[str, Any]:
    """A durable_rules expression equivalent to `condition` (or to its negation)."""
    return _Compiler().condition(condition, negate=negate)


def compile_ruleset(ruleset: LoadedRuleSet) -> tuple[dict[str, Any], list[tuple[str, FactTest]]]:
    """The durable_rules definition of a rule set (one rule per rule-file rule, plus the sentinel),
    and the difference facts its `ref` tests need."""
    compiler = _Compiler()
    definition: dict[str, Any] = {
        rule.id: {"all": [{"m": compiler.condition(rule.when)}], "run": rule.id} for rule in ruleset.rules
    }
    definition[SENTINEL] = {"all": [{"m": {SENTINEL: 1}}], "run": SENTINEL}
    return definition, compiler.refs


def ref_differences(
    refs: list[tuple[str, FactTest]], facts: Mapping[str, Scalar], settings: Mapping[str, Scalar]
) -> dict[str, Scalar]:
    """`fact - ref` for each ref test whose operands are both present."""
    out: dict[str, Scalar] = {}
    for name, test in refs:
        x = facts.get(test.fact)
        if x is None or isinstance(x, (bool, str)):
            continue
        ref = test.ref
        if isinstance(ref, ScaledFact):
            y = facts.get(ref.fact)
            if y is None or isinstance(y, (bool, str)):
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


def _encode_value(value: Scalar) -> str:
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


FactFields = tuple[tuple[str, str, str], ...]


def fact_fields(fact_names: tuple[str, ...]) -> FactFields:
    """For each fact: its name, its JSON text when absent, and its JSON prefix when present."""
    return tuple(
        (name, f',"{_presence(name)}":0', f',"{_presence(name)}":1,"{name}":') for name in fact_names
    )


def encode_fact(sid: str, facts: Mapping[str, Scalar], settings_json: str, fields: FactFields) -> str:
    """The JSON text of one fact, with presence flags, settings (from `encode_settings`) and the sentinel."""
    parts = [f'{{"sid":"{sid}","{SENTINEL}":1', settings_json]
    for name, absent, present in fields:
        value = facts.get(name, _ABSENT)
        if value is _ABSENT:
            parts.append(absent)
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
    """Which rules of one rule set fire, according to durable_rules."""

    def __init__(self, ruleset: LoadedRuleSet) -> None:
        self.ruleset = ruleset
        self._name = ruleset.engine_name
        definition, self._refs = compile_ruleset(ruleset)
        self._fields = fact_fields(tuple(CATALOGUES[ruleset.file.subject]) + tuple(name for name, _ in self._refs))
        self._settings_json: dict[tuple[tuple[str, Scalar], ...], str] = {}
        self._known_actions = frozenset(rule.id for rule in ruleset.rules) | {SENTINEL}
        self._max_actions = 4 * len(self._known_actions)
        with _LOCK:
            host = _host()
            if self._name not in host._ruleset_directory:
                try:
                    host.set_rulesets({self._name: definition})
                except Exception as exc:
                    raise RuleFileError(ruleset.path, f"durable_rules refused the compiled rule set: {exc}") from exc
            self._rules = host.get_ruleset(self._name)

    def fired(self, facts: Mapping[str, Scalar], settings: Mapping[str, Scalar]) -> frozenset[str]:
        """The ids of the rules whose condition matched, read from the session's action queue."""
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
        names = [self._action_name(message) for message in fired]
        if SENTINEL not in names:
            raise LostResult(f"{self.ruleset.label}: the sentinel rule's action is missing: the result was lost")
        # A rule fires once per matching branch of an `$or` (durable_rules expands disjunctions),
        # so the same id may be queued more than once: firing is a set.
        return frozenset(names) - {SENTINEL}

    def _action_name(self, message: str) -> str:
        """The rule name of a queued action; its text starts `{"<rule name>":`."""
        name = message[2 : message.find('"', 2)] if message.startswith('{"') else ""
        if name not in self._known_actions:
            raise EngineError(f"{self.ruleset.label}: unexpected action from durable_rules: {message[:80]!r}")
        return name
