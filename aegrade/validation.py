"""Input validation: the pydantic models first, then the contradictions between fields.

Every problem becomes a `FieldError` naming the field at fault; all of them are raised together as
one `InvalidAssessment`. Nothing is clamped, guessed or dropped, and invalid input never reaches
the evaluators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from aegrade.derive import neuro_finding
from aegrade.errors import FieldError, InvalidAssessment
from aegrade.models import Assessment, NeuroSection
from aegrade.rulefile import NeuroFinding, OxygenFlow, Vasopressors

__all__ = ["GRADED_SECTIONS", "NOTHING_TO_GRADE", "contradictions", "nothing_to_grade", "parse_assessment"]

NOTHING_TO_GRADE = "nothing_to_grade"
GRADED_SECTIONS = ("vitals", "crs", "neuro", "thrombosis", "blinatumomab")
"""The sections that are graded; `patient` alone grades nothing."""


def nothing_to_grade(assessment: Assessment) -> FieldError | None:
    """The error for an assessment that sends none of GRADED_SECTIONS (only `patient`): it would be
    graded as nothing (no CRS, no ICANS, no flag, no rule set), so it is refused rather than stored."""
    if any(getattr(assessment, section) is not None for section in GRADED_SECTIONS):
        return None
    return FieldError(
        (),
        "nothing to grade: send at least one of the sections "
        + ", ".join(GRADED_SECTIONS)
        + " (patient alone is not graded)",
        NOTHING_TO_GRADE,
    )


def parse_assessment(data: Assessment | Mapping[str, Any]) -> Assessment:
    """An Assessment from the API's request form; raises InvalidAssessment naming each bad field."""
    if isinstance(data, Assessment):
        return data
    if not isinstance(data, Mapping):
        raise InvalidAssessment([FieldError((), f"an assessment must be an object, not {type(data).__name__}", "type_error")])
    try:
        return Assessment.model_validate(data)
    except ValidationError as exc:
        raise InvalidAssessment(
            [
                FieldError(tuple(err["loc"]), err["msg"], err["type"], err.get("input"))
                for err in exc.errors(include_url=False)
            ]
        ) from None


def contradictions(
    assessment: Assessment,
    *,
    tool: str | None,
    tool_reason: str = "",
    neuro_findings: Sequence[NeuroFinding] = (),
    ctcae_terms: Sequence[str] = (),
    oxygen_flow: OxygenFlow | None = None,
    vasopressors: Vasopressors | None = None,
) -> list[FieldError]:
    """Every contradiction between fields. `tool` is the encephalopathy tool that fits the patient;
    `neuro_findings` are the thrombosis facts that the neuro section also reports (one fact, one
    place: when both sections report one and disagree, both fields are named). `oxygen_flow` and
    `vasopressors` are the CRS rule file's declarations: the devices that need a flow, and whether
    a running vasopressor implies hypotension (without them, neither is checked)."""
    errors: list[FieldError] = []
    empty = nothing_to_grade(assessment)
    if empty is not None:
        return [empty]

    def add(loc: tuple[str | int, ...], msg: str, value: Any = None, code: str = "contradiction") -> None:
        errors.append(FieldError(loc, msg, code, value))

    vitals = assessment.vitals
    if vitals is not None:
        if vitals.temperature_c is not None and vitals.temperature_f is not None:
            add(("vitals", "temperature_f"), "give temperature_c or temperature_f, not both", vitals.temperature_f)
        if vitals.sbp_mmhg is not None and vitals.dbp_mmhg is not None and vitals.dbp_mmhg > vitals.sbp_mmhg:
            add(("vitals", "dbp_mmhg"), "diastolic pressure is above systolic pressure", vitals.dbp_mmhg)
        if vitals.map_mmhg is not None:
            if vitals.sbp_mmhg is not None and vitals.map_mmhg > vitals.sbp_mmhg:
                add(("vitals", "map_mmhg"), "mean arterial pressure is above systolic pressure", vitals.map_mmhg)
            if vitals.dbp_mmhg is not None and vitals.map_mmhg < vitals.dbp_mmhg:
                add(("vitals", "map_mmhg"), "mean arterial pressure is below diastolic pressure", vitals.map_mmhg)

    crs = assessment.crs
    if crs is not None:
        agents = crs.vasopressors or []
        errors.extend(_repeats(("crs", "vasopressors"), agents))
        if crs.hypotension is False and agents and vasopressors is not None and vasopressors.imply_hypotension:
            add(
                ("crs", "hypotension"),
                f"hypotension is false but vasopressors are running ({', '.join(agents)}): vasopressors imply hypotension",
                False,
            )
        oxygen = crs.oxygen
        if oxygen is not None:
            flow_loc = ("crs", "oxygen", "flow_l_min")
            needs_flow = oxygen_flow is not None and oxygen.device in oxygen_flow.required_with
            if needs_flow and oxygen.flow_l_min is None:
                add(flow_loc, f"flow_l_min is required with {oxygen.device}: the grade depends on it", None, "missing")
            elif needs_flow and oxygen.flow_l_min == 0:
                add(flow_loc, f"{oxygen.device} at 0 L/min is no oxygen support: send device 'none' instead", 0)
            elif oxygen.device == "none" and oxygen.flow_l_min:
                add(flow_loc, "device is 'none' but a flow is given", oxygen.flow_l_min)

    neuro = assessment.neuro
    if neuro is not None:
        errors.extend(_neuro_contradictions(neuro, tool=tool, tool_reason=tool_reason))
        seen_terms: list[str] = []
        for index, term in enumerate(neuro.ctcae or []):
            if ctcae_terms and term.term not in ctcae_terms:
                add(("neuro", "ctcae", index, "term"), f"{term.term!r} is not one of the label's CTCAE terms: {sorted(ctcae_terms)}", term.term, "unknown_term")
            elif term.term in seen_terms:
                add(("neuro", "ctcae", index, "term"), f"{term.term} is listed twice", term.term, "duplicate")
            seen_terms.append(term.term)

    thrombosis = assessment.thrombosis
    if thrombosis is not None:
        if thrombosis.on_blinatumomab is False and assessment.blinatumomab is not None:
            add(("thrombosis", "on_blinatumomab"), "on_blinatumomab is false but the blinatumomab section is sent", False)
        if thrombosis.on_all_therapy is False and assessment.blinatumomab is not None:
            add(
                ("thrombosis", "on_all_therapy"),
                "on_all_therapy is false but the blinatumomab section is sent (blinatumomab is given only for B-cell ALL)",
                False,
            )
        if neuro is not None:
            for finding in neuro_findings:
                in_neuro = neuro_finding(neuro, finding)
                in_thrombosis = getattr(thrombosis, finding.fact, None)
                if in_neuro is None or in_thrombosis is None or in_neuro == in_thrombosis:
                    continue
                shown = getattr(neuro, finding.neuro_field)
                add(
                    ("thrombosis", finding.fact),
                    f"thrombosis.{finding.fact} is {str(in_thrombosis).lower()} but neuro.{finding.neuro_field} is "
                    f"{shown!r}: report the finding in one section, or make them agree",
                    in_thrombosis,
                )
                add(
                    ("neuro", finding.neuro_field),
                    f"neuro.{finding.neuro_field} {shown!r} disagrees with thrombosis.{finding.fact} "
                    f"({str(in_thrombosis).lower()})",
                    shown,
                )
        if thrombosis.lmwh_intent is not None and thrombosis.lmwh_agent is None:
            add(("thrombosis", "lmwh_intent"), "lmwh_intent is given but no lmwh_agent", thrombosis.lmwh_intent)
        if thrombosis.prior_asp_associated_vte and thrombosis.prior_vte is False:
            add(("thrombosis", "prior_vte"), "prior_vte is false but prior_asp_associated_vte is true", False)
        errors.extend(_repeats(("thrombosis", "thrombophilia_traits"), thrombosis.thrombophilia_traits or []))
    return errors


def _neuro_contradictions(neuro: NeuroSection, *, tool: str | None, tool_reason: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if neuro.ice is not None and neuro.ice_score is not None:
        errors.append(FieldError(("neuro", "ice_score"), "give ice (items) or ice_score, not both", "contradiction", neuro.ice_score))
    if neuro.capd is not None and neuro.capd_score is not None:
        errors.append(FieldError(("neuro", "capd_score"), "give capd (items) or capd_score, not both", "contradiction", neuro.capd_score))

    ice_field = "ice" if neuro.ice is not None else "ice_score" if neuro.ice_score is not None else None
    capd_field = "capd" if neuro.capd is not None else "capd_score" if neuro.capd_score is not None else None
    if tool == "CAPD" and ice_field:
        errors.append(
            FieldError(("neuro", ice_field), f"CAPD applies to this patient, not ICE ({tool_reason}); send capd or capd_score", "wrong_tool")
        )
    if tool == "ICE" and capd_field:
        errors.append(
            FieldError(("neuro", capd_field), f"ICE applies to this patient, not CAPD ({tool_reason}); send ice or ice_score", "wrong_tool")
        )

    if neuro.unable_to_perform:
        ice_points = (
            sum(neuro.ice.model_dump().values()) if neuro.ice is not None else neuro.ice_score
        )
        if ice_field and ice_points:
            errors.append(
                FieldError(("neuro", ice_field), f"unable_to_perform is true but the ICE score is {ice_points}; only 0 fits", "contradiction", ice_points)
            )
        if capd_field:
            errors.append(
                FieldError(("neuro", capd_field), "unable_to_perform is true but a CAPD score is given", "contradiction")
            )
        if neuro.consciousness is not None and neuro.consciousness != "unarousable":
            errors.append(
                FieldError(
                    ("neuro", "unable_to_perform"),
                    f"unable_to_perform means unarousable, but consciousness is {neuro.consciousness!r}: "
                    "send unable_to_perform only with 'unarousable' or with no consciousness",
                    "contradiction",
                    True,
                )
            )
    errors.extend(_repeats(("neuro", "icp_signs"), neuro.icp_signs or []))
    return errors


def _repeats(loc: tuple[str, ...], items: Sequence[str]) -> list[FieldError]:
    """An error at each item of a list that repeats an earlier one (the lists are sets of agents,
    signs or traits: a repeat is ambiguous, never merged)."""
    return [
        FieldError((*loc, index), f"{item} is listed twice", "duplicate", item)
        for index, item in enumerate(items)
        if item in items[:index]
    ]
