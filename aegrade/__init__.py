"""aegrade: adverse-event grading for immunotherapy toxicities (ASTCT 2019 CRS and ICANS).

    >>> import aegrade
    >>> result = aegrade.assess({"patient": {"age_years": 45}, "vitals": {"temperature_c": 38.2}})
    >>> result.crs.grade
    1

The clinical criteria live in rules/ as data; this package validates input, derives facts,
evaluates the rule files with durable_rules and with a plain-Python reference evaluator, compares
the two, and explains the grade.
"""

from aegrade.engine import Engine, assess, default_engine
from aegrade.errors import (
    AegradeError,
    EngineError,
    EvaluatorDisagreement,
    FieldError,
    InvalidAssessment,
    LostResult,
    RuleFileError,
    RuleSelfTestFailed,
    SettingsError,
)
from aegrade.models import Assessment, AssessmentResult, CrsResult, IcansResult

__all__ = [
    "AegradeError",
    "Assessment",
    "AssessmentResult",
    "CrsResult",
    "Engine",
    "EngineError",
    "EvaluatorDisagreement",
    "FieldError",
    "IcansResult",
    "InvalidAssessment",
    "LostResult",
    "RuleFileError",
    "RuleSelfTestFailed",
    "SettingsError",
    "assess",
    "default_engine",
]

__version__ = "0.1.0"
