"""How the service words a grade for a person: the one place that does it.

Under the v1.1 semantics (spec api-v1.md, "v1.1 additions: clinical fidelity") a grade is what the
reported inputs establish, and `grade_max` is the highest grade the unreported inputs still allow.
Whenever the two differ, a grade shown to a person carries its bound and the inputs that leave it
open, e.g. "grade 1 (up to 4: crs.hypotension, crs.oxygen not reported)", never a bare "grade 1".
The bedside form, the CDS Hooks cards and the episode timeline all word grades through here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["bound_text", "grade_text", "is_open", "undetermined_inputs", "undetermined_text"]

_STATUS = {
    "no_crs": "grade 0 (no CRS)",
    "not_assessable": "not assessable",
    "clinician_review": "clinician review",
}


def _get(part: Any, name: str, default: Any = None) -> Any:
    """A field of a DomainResult, or of its JSON form (a dict)."""
    if isinstance(part, dict):
        return part.get(name, default)
    return getattr(part, name, default)


def is_open(part: Any) -> bool:
    """True when unreported inputs could still raise the result: grade_max above the grade (or a
    grade_max with no grade established)."""
    if part is None:
        return False
    grade, grade_max = _get(part, "grade"), _get(part, "grade_max")
    return grade_max is not None and (grade is None or grade_max > grade)


def undetermined_inputs(part: Any) -> list[str]:
    """The request paths of the unreported inputs that could raise the result, in the engine's order."""
    grade = _get(part, "grade")
    out = []
    for item in _get(part, "undetermined_by", None) or []:
        path, up_to = _get(item, "input"), _get(item, "up_to")
        if (grade is None or up_to is None or up_to > grade) and path not in out:
            out.append(path)
    return out


def _paths(paths: Iterable[str]) -> str:
    listed = list(paths)
    return ", ".join(listed) if listed else "some inputs"


def bound_text(part: Any, *, inputs: bool = True) -> str:
    """"(up to 4: crs.hypotension, crs.oxygen not reported)", or "(up to 4)" without the inputs;
    "" when nothing unreported could raise the result."""
    if not is_open(part):
        return ""
    grade_max = _get(part, "grade_max")
    if not inputs:
        return f"(up to {grade_max})"
    return f"(up to {grade_max}: {_paths(undetermined_inputs(part))} not reported)"


def grade_text(part: Any, *, inputs: bool = True, capital: bool = False) -> str:
    """A result in words with its bound: "grade 1 (up to 4: crs.hypotension not reported)",
    "not assessable (up to 3: crs.fever_masked not reported)", "grade 2", "not reported" (None)."""
    if part is None:
        text = "not reported"
    else:
        status, grade = _get(part, "status"), _get(part, "grade")
        if status in _STATUS and not (status == "no_crs" and is_open(part)):
            text = _STATUS[status]
        elif grade is None:
            text = "not assessable"
        else:
            text = f"grade {grade}"
        bound = bound_text(part, inputs=inputs)
        if bound:
            text = f"{text} {bound}"
    return text[0].upper() + text[1:] if capital else text


def undetermined_text(item: Any, *, capital: bool = False) -> str:
    """An undetermined flag or action: "could apply: <message>, missing <paths>"."""
    message = _get(item, "message") or _get(item, "text") or _get(item, "id")
    text = f"could apply: {str(message).rstrip('.')}, missing {_paths(_get(item, 'missing', None) or [])}"
    return text[0].upper() + text[1:] if capital else text
