"""One exception tree for aegrade, each class with a stable error code.

    AegradeError                      base; never raised itself
    ├── InvalidAssessment             invalid_assessment   the input cannot be graded (names each field)
    │   └── FhirInputError            fhir_input_invalid   FHIR resources cannot be mapped (names resource and element)
    ├── RuleFileError                 rule_file_invalid    a rule file is malformed (names file and rule)
    │   └── RuleSelfTestFailed        rule_self_test_failed  a rule file's own test case fails
    ├── SettingsError                 settings_invalid     an unknown setting or a value out of its domain
    └── EngineError                   engine_error         the evaluation itself went wrong
        ├── EvaluatorDisagreement     evaluator_disagreement  durable_rules and the reference evaluator differ
        └── LostResult                engine_lost_result   durable_rules lost the result of a post

The codes are a closed list (`ERROR_CODES`); README.md documents each one and a test fails when
the two drift apart. HTTP statuses are chosen by `service/`, never here; the service's own errors
are a subtree of AegradeError in service/errors.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ERROR_CODES",
    "AegradeError",
    "EngineError",
    "EvaluatorDisagreement",
    "FhirInputError",
    "FieldError",
    "InvalidAssessment",
    "LostResult",
    "RuleFileError",
    "RuleSelfTestFailed",
    "SettingsError",
]


class AegradeError(Exception):
    """Base of every error aegrade raises on purpose."""

    code = "aegrade_error"


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field.

    `loc` is the path of the field inside the assessment, e.g. ("neuro", "ice_score"); `code` is a
    short machine-readable kind ("contradiction", "wrong_tool", ...); `msg` is for a person.
    """

    loc: tuple[str | int, ...]
    msg: str
    code: str
    input: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.code}


class InvalidAssessment(AegradeError, ValueError):
    """The assessment cannot be graded: a value is invalid or two values contradict each other."""

    code = "invalid_assessment"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        if not errors:
            raise ValueError("InvalidAssessment needs at least one FieldError")
        self.errors: tuple[FieldError, ...] = tuple(errors)
        summary = "; ".join(f"{'.'.join(map(str, e.loc)) or '<root>'}: {e.msg}" for e in self.errors)
        super().__init__(summary)


class FhirInputError(InvalidAssessment):
    """FHIR resources cannot be mapped: each FieldError names the resource and the element at
    fault, its `loc` a path in the request body (aegrade/fhir.py)."""

    code = "fhir_input_invalid"


class RuleFileError(AegradeError):
    """A rule file does not load: bad YAML, a schema violation, an unknown fact or operator."""

    code = "rule_file_invalid"

    def __init__(self, file: str, message: str, *, rule: str | None = None) -> None:
        self.file = file
        self.rule = rule
        self.message = message
        where = f"{file}" + (f", rule {rule}" if rule else "")
        super().__init__(f"{where}: {message}")


class RuleSelfTestFailed(RuleFileError):
    """A test case carried by a rule file gives a different result from the one it expects."""

    code = "rule_self_test_failed"


class SettingsError(AegradeError, ValueError):
    """An engine setting is unknown, or its value is outside what its rule file declares."""

    code = "settings_invalid"


class EngineError(AegradeError, RuntimeError):
    """The evaluation went wrong. The result, if any, must not be used."""

    code = "engine_error"


class EvaluatorDisagreement(EngineError):
    """durable_rules and the reference evaluator fired different rules for the same facts."""

    code = "evaluator_disagreement"

    def __init__(self, ruleset: str, *, durable: frozenset[str], reference: frozenset[str]) -> None:
        self.ruleset = ruleset
        self.durable = durable
        self.reference = reference
        only_durable = sorted(durable - reference)
        only_reference = sorted(reference - durable)
        super().__init__(
            f"{ruleset}: evaluators disagree; only durable_rules fired {only_durable}, "
            f"only the reference evaluator fired {only_reference}"
        )


class LostResult(EngineError):
    """durable_rules lost the result of a post: its sentinel rule's action is missing."""

    code = "engine_lost_result"


ERROR_CODES: dict[str, type[AegradeError]] = {
    cls.code: cls
    for cls in (
        AegradeError,
        InvalidAssessment,
        FhirInputError,
        RuleFileError,
        RuleSelfTestFailed,
        SettingsError,
        EngineError,
        EvaluatorDisagreement,
        LostResult,
    )
}
