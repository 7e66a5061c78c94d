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
        return super().assess(assessment)


def crashing_engine(config: GraderConfig) -> Engine:
    engine = _engine(config)
    engine.__class__ = type("Crashing", (_Faulty,), {"fault": "crash"})
    return engine


def hanging_engine(config: GraderConfig) -> Engine:
    engine = _engine(config)
    engine.__class__ = type("Hanging", (_Faulty,), {"fault": "hang"})
    return engine
