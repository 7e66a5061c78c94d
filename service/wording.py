"""How the service words a grade for a person: the one place that does it.

Under the v1.1 semantics (spec api-v1.md, "v1.1 additions: clinical fidelity") a grade is what the
reported inputs establish, and `grade_max` is the highest grade the unreported inputs still allow.
Whenever the two differ, a grade shown to a person carries its bound and the inputs that leave it
open, e.g. "grade 1 (up to 4: crs.hypotension, crs.oxygen not reported)", never a bare "grade 1".
The bedside form, the CDS Hooks cards and the episode timeline all word grades through here.

Every phrase goes through a `Translator` (service/i18n.py; English when none is given), and the
inputs can be named in words (`names`: request path -> label, as the bedside form asks them) rather
than by their request paths, which stay for the API's callers and the record.

The bedside summary (`summary_items`) puts what a nurse acts on first: the CRS and ICANS grades with
their bounds, the number of critical flags, and the decisive blinatumomab action in a verb
("Withhold blinatumomab"), ordered worst first. The engine already orders actions most restrictive
first and lets a discontinuation supersede everything else; the summary shows what it says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.i18n import ENGLISH, N_, Translator

__all__ = [
    "DOMAIN_WORDS",
    "EVIDENCE_LEVELS",
    "SEVERITY_WORDS",
    "SummaryItem",
    "action_verb",
    "bound_text",
    "domain_text",
    "grade_text",
    "input_text",
    "is_open",
    "short_grade",
    "summary_items",
    "undetermined_inputs",
    "undetermined_text",
]

_STATUS = {
    "no_crs": N_("grade 0 (no CRS)"),
    "not_assessable": N_("not assessable"),
    "clinician_review": N_("clinician review"),
}

EVIDENCE_LEVELS: dict[str, str] = {
    "P": N_("primary text read (e.g. the published table itself)"),
    "R2": N_("two or more independent reprints of the primary text agree"),
    "R1": N_("one secondary source: confirm against the primary"),
    "U": N_("unverified: an interpretation, configurable"),
    "LOCAL": N_("a local setting of this site, configurable"),
}
"""The legend of the evidence levels every rule carries (spec README, "Evidence tags")."""

DOMAIN_WORDS: dict[str, str] = {
    "fever": N_("fever"),
    "hypotension": N_("hypotension"),
    "oxygen": N_("oxygen"),
    "death": N_("death"),
    "encephalopathy": N_("encephalopathy (ICE/CAPD)"),
    "consciousness": N_("level of consciousness"),
    "seizure": N_("seizure"),
    "motor": N_("motor findings"),
    "icp": N_("raised intracranial pressure / cerebral edema"),
}
"""The grading domains of the CRS and ICANS rule files, in words (an unknown id is shown as it is)."""

SEVERITY_WORDS: dict[str, str] = {"critical": N_("critical"), "warning": N_("warning"), "info": N_("info")}


def domain_text(domain: str, *, tr: Translator = ENGLISH) -> str:
    return tr(DOMAIN_WORDS[domain]) if domain in DOMAIN_WORDS else domain.replace("_", " ")


# The verb of a label action, from the verb in its id (blinatumomab-actions.md ids: ...-DISCONTINUE,
# ...-INTERRUPT, ...-WITHHOLD, BLIN-INTERRUPTION-CYCLE, BLIN-RESTART-PREMEDICATION). An id without one
# of these is summarised by the first clause of its own (English) text.
_ACTION_VERBS: dict[str, str] = {
    "DISCONTINUE": N_("Stop {drug} permanently"),
    "INTERRUPT": N_("Interrupt {drug}"),
    "WITHHOLD": N_("Withhold {drug}"),
    "CYCLE": N_("After the interruption: same cycle or a new one"),
    "PREMEDICATION": N_("Premedicate before restarting {drug}"),
}
_ACTION_LEVEL = {"DISCONTINUE": 4.8, "INTERRUPT": 3.5, "WITHHOLD": 3.5}
# The drugs label actions name (the rule file's `drug`), in words to translate.
_DRUG_WORDS: dict[str, str] = {"blinatumomab": N_("blinatumomab")}


def _get(part: Any, name: str, default: Any = None) -> Any:
    """A field of a DomainResult, or of its JSON form (a dict)."""
    if isinstance(part, dict):
        return part.get(name, default)
    return getattr(part, name, default)


def _capital(text: str, capital: bool) -> str:
    return text[0].upper() + text[1:] if capital and text else text


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


def input_text(path: str, names: Mapping[str, str] | None) -> str:
    """An input by its label when `names` knows it (or knows a parent of it), else by its path."""
    if names is None:
        return path
    probe = path
    while probe:
        if probe in names:
            return names[probe]
        probe = probe.rpartition(".")[0]
    return path.rpartition(".")[2].replace("_", " ")


def _paths(paths: Iterable[str], tr: Translator, names: Mapping[str, str] | None) -> str:
    listed: list[str] = []
    for path in paths:
        text = input_text(path, names)
        if text not in listed:
            listed.append(text)
    return ", ".join(listed) if listed else tr("some inputs")


def bound_text(
    part: Any, *, inputs: bool = True, tr: Translator = ENGLISH, names: Mapping[str, str] | None = None
) -> str:
    """"(up to 4: crs.hypotension, crs.oxygen not reported)", or "(up to 4)" without the inputs;
    "" when nothing unreported could raise the result."""
    if not is_open(part):
        return ""
    grade_max = _get(part, "grade_max")
    if not inputs:
        return tr("(up to {grade_max})").format(grade_max=grade_max)
    return tr("(up to {grade_max}: {inputs} not reported)").format(
        grade_max=grade_max, inputs=_paths(undetermined_inputs(part), tr, names)
    )


def grade_text(
    part: Any,
    *,
    inputs: bool = True,
    capital: bool = False,
    tr: Translator = ENGLISH,
    names: Mapping[str, str] | None = None,
) -> str:
    """A result in words with its bound: "grade 1 (up to 4: crs.hypotension not reported)",
    "not assessable (up to 3: crs.fever_masked not reported)", "grade 2", "not reported" (None)."""
    if part is None:
        text = tr("not reported")
    else:
        status, grade = _get(part, "status"), _get(part, "grade")
        if status in _STATUS and not (status == "no_crs" and is_open(part)):
            text = tr(_STATUS[status])
        elif grade is None:
            text = tr("not assessable")
        else:
            text = tr("grade {grade}").format(grade=grade)
        bound = bound_text(part, inputs=inputs, tr=tr, names=names)
        if bound:
            text = f"{text} {bound}"
    return _capital(text, capital)


def short_grade(part: Any, *, tr: Translator = ENGLISH) -> str:
    """The grade for the summary bar: "3", "1 (could be up to 4)", "none", "not assessable"."""
    if part is None:
        return tr("not reported")
    status, grade, grade_max = _get(part, "status"), _get(part, "grade"), _get(part, "grade_max")
    if status == "no_crs" and not is_open(part):
        text = tr("none")
    elif status == "clinician_review":
        text = tr("clinician review")
    elif grade is None:
        text = tr("not assessable")
    else:
        text = str(grade)
    if is_open(part):
        text = tr("{grade} (could be up to {grade_max})").format(grade=text, grade_max=grade_max)
    return text


def undetermined_text(
    item: Any, *, capital: bool = False, tr: Translator = ENGLISH, names: Mapping[str, str] | None = None
) -> str:
    """An undetermined flag or action: "could apply: <message>, missing <paths>"."""
    message = _get(item, "message") or _get(item, "text") or _get(item, "id")
    text = tr("could apply: {message}, missing {inputs}").format(
        message=str(message).rstrip("."), inputs=_paths(_get(item, "missing", None) or [], tr, names)
    )
    return _capital(text, capital)


def _verb(action_id: str) -> str | None:
    return next((verb for verb in _ACTION_VERBS if verb in action_id.split("-")), None)


def action_verb(action: Any, *, tr: Translator = ENGLISH) -> str:
    """A label action as the verb a nurse acts on: "Withhold blinatumomab"; else its own first sentence."""
    verb = _verb(str(_get(action, "id")))
    if verb is not None:
        drug = str(_get(action, "drug"))
        return tr(_ACTION_VERBS[verb]).format(drug=tr(_DRUG_WORDS[drug]) if drug in _DRUG_WORDS else drug)
    text = str(_get(action, "text"))
    return re.split(r"\. | - |: ", text, maxsplit=1)[0].rstrip(".")


@dataclass(frozen=True)
class SummaryItem:
    """One entry of the result's summary bar: `level` orders them (worst first) and colours them."""

    key: str  # crs, icans, flags, action, open-action
    text: str
    level: float  # -1 (nothing to act on) .. 5 (grade 5)
    css: str


def _grade_item(key: str, title: str, part: Any, tr: Translator) -> SummaryItem:
    grade = _get(part, "grade") if part is not None else None
    grade_max = _get(part, "grade_max") if part is not None else None
    level = float(grade if grade is not None else -1) + (0.1 * (grade_max or 0) if is_open(part) else 0.0)
    css = f"grade-{grade}" if grade is not None else "grade-review"
    return SummaryItem(key, f"{title} {short_grade(part, tr=tr)}", level, css + (" grade-open" if is_open(part) else ""))


def summary_items(result: Any, *, tr: Translator = ENGLISH) -> list[SummaryItem]:
    """What the summary bar shows, worst first: CRS, ICANS, the critical flags, the decisive action."""
    items = [_grade_item("crs", tr("CRS"), _get(result, "crs"), tr), _grade_item("icans", tr("ICANS"), _get(result, "icans"), tr)]
    critical = [f for f in _get(result, "flags", None) or [] if _get(f, "severity") == "critical"]
    count = len(critical)
    items.append(
        SummaryItem(
            "flags",
            tr.ngettext("{count} critical flag", "{count} critical flags", count).format(count=count) if count
            else tr("No critical flags"),
            4.5 if count else -0.5,
            "severity-critical" if count else "severity-none",
        )
    )
    actions = _get(result, "actions", None) or []
    open_actions = _get(result, "undetermined_actions", None) or []
    if actions:
        first = actions[0]
        verb = _verb(str(_get(first, "id")))
        items.append(SummaryItem("action", action_verb(first, tr=tr), _ACTION_LEVEL.get(verb or "", 1.0), "action"))
    elif open_actions:
        first = open_actions[0]
        verb = _verb(str(_get(first, "id")))
        text = tr("Could need: {action}").format(action=action_verb(first, tr=tr))
        items.append(SummaryItem("open-action", text, _ACTION_LEVEL.get(verb or "", 1.0) - 0.5, "action undetermined"))
    return sorted(items, key=lambda item: -item.level)
