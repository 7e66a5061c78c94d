"""Engines with a fault, built inside the grading process (create_app(grader_engine_factory=...)).

Each is a module-level function so that the spawned grading process can import it. A fault is set
off only by its marker (a patient of MARKER_AGE years); every other request is graded normally.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

from aegrade import Engine
from aegrade.models import Assessment, AssessmentResult
from service.grader import GraderConfig

MARKER_AGE = 99.5


class _Disagreeing:
    """A durable evaluator that always fires one rule the reference evaluator does not. Since v1.1
    an evaluator answers (certain, possible): the rules that fire, and those that could."""

    def fired(self, facts: Any, settings: Any) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset({"crs.oxygen.positive_pressure"}), frozenset()


def _engine(config: GraderConfig) -> Engine:
    return Engine(rules_dir=config.rules_dir, settings=config.rule_settings)


def disagreeing_engine(config: GraderConfig) -> Engine:
    """durable_rules and the reference evaluator disagree on every CRS grading (after the self-test)."""
    engine = _engine(config)
    engine._runners["crs"] = dataclasses.replace(engine._runners["crs"], durable=_Disagreeing())  # type: ignore[arg-type]
    return engine


class _Faulty(Engine):
    fault: str = ""

    def assess(self, assessment: Assessment | Any) -> AssessmentResult:
        if isinstance(assessment, Assessment) and assessment.patient.age_years == MARKER_AGE:
            if self.fault == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)  # as durable_rules crashed on inputs it mishandled
            if self.fault == "hang":
                time.sleep(3600)  # as a post to durable_rules that never returned
            if self.fault == "raise":
                raise KeyError(f"unexpected, quoting the request: {assessment.model_dump_json()}")
        return super().assess(assessment)


def crashing_engine(config: GraderConfig) -> Engine:
    engine = _engine(config)
    engine.__class__ = type("Crashing", (_Faulty,), {"fault": "crash"})
    return engine


def hanging_engine(config: GraderConfig) -> Engine:
    engine = _engine(config)
    engine.__class__ = type("Hanging", (_Faulty,), {"fault": "hang"})
    return engine


def _marked(graded: Any) -> bool:
    """Whether a batch the grading process is committing holds a marked request."""
    return any(str(MARKER_AGE) in str(record.request) for record in graded.records)


def _after_commit(action: str) -> Any:
    """Patch the grading process's commit (service.grader._commit, in this process only): once a
    batch with a marked request is committed, do `action` before the reply is sent."""
    import service.grader as grader

    commit = grader._commit

    def committed_then(store: Any, graded: Any, *args: Any) -> Any:
        replies = commit(store, graded, *args)
        if _marked(graded):
            if action == "crash":
                os._exit(70)  # as a crash after the commit, before the reply
            time.sleep(3600)  # a reply that comes too late
        return replies

    grader._commit = committed_then  # type: ignore[assignment]
    return commit


def crash_after_episode_commit_engine(config: GraderConfig) -> Engine:
    """An observation with the marker age is committed (with its audit record and its answer for
    the Idempotency-Key), then the grading process dies before replying."""
    from service.episodes import EpisodeStore

    add_observation = EpisodeStore.add_observation

    def committed_then_crash(self: Any, patient_id: str, observation: Any, **kwargs: Any) -> Any:
        answer = add_observation(self, patient_id, observation, **kwargs)
        if observation.patient.age_years == MARKER_AGE and not answer.replayed:
            os._exit(70)
        return answer

    EpisodeStore.add_observation = committed_then_crash  # type: ignore[method-assign]
    return _engine(config)


def crash_after_commit_engine(config: GraderConfig) -> Engine:
    """The record of a marked request is committed, then the grading process dies."""
    _after_commit("crash")
    return _engine(config)


def late_reply_engine(config: GraderConfig) -> Engine:
    """The record of a marked request is committed, then the reply never comes in time."""
    _after_commit("late")
    return _engine(config)


def once_replaced(send: Any, *, within_s: float = 90.0) -> Any:
    """`send()` again until it is not a 503 grading_unavailable: after a fault, requests that come
    while the replacement grading process builds its engine (seconds, more on a busy machine) are
    answered 503 within the grading time limit, as they should be."""
    deadline = time.monotonic() + within_s
    while True:
        response = send()
        unavailable = response.status_code == 503 and "grading_unavailable" in response.text
        if not unavailable or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def raising_engine(config: GraderConfig) -> Engine:
    """A marked request raises an exception no engine code raises on purpose (a KeyError)."""
    engine = _engine(config)
    engine.__class__ = type("Raising", (_Faulty,), {"fault": "raise"})
    return engine
