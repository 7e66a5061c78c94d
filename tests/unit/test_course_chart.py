"""The course chart (service/course_chart.py): well-formed, accessible SVG with the points, bands and
treatment marks of the course, unknown never drawn as normal, escaped, deterministic."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aegrade.episodes import Episode, FeverMasking, TreatmentRecord
from service.course_chart import (
    CHART_ID,
    Course,
    GradeMark,
    Reading,
    _time_ticks,
    course_from_episode,
    course_svg,
    grade_label,
    grade_words,
)
from service.i18n import Translator, translator

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 1, 10, 8, 0, tzinfo=timezone.utc)
EN = translator("en")


def reading(
    hour: float,
    *,
    temperature: float | None = 38.0,
    sbp: float | None = 110.0,
    oxygen: int | None = 0,
    crs: GradeMark | None = GradeMark(1, 1, "graded"),
    icans: GradeMark | None = None,
    masked_by: str | None = None,
    name: str = "",
) -> Reading:
    at = T0 + timedelta(hours=hour)
    masking = None
    if masked_by:
        masking = FeverMasking(agent=masked_by, administered_at=at - timedelta(hours=1), onset_at=T0)  # type: ignore[arg-type]
    return Reading(
        observation_id=name or f"obs{hour:g}",
        observed_at=at,
        assessment_id="a" * 32,
        temperature_c=temperature,
        temperature_f=None,
        sbp_mmhg=sbp,
        oxygen_device=None,
        oxygen_flow_l_min=None,
        oxygen_grade=oxygen,
        crs=crs,
        icans=icans,
        fever_masking=masking,
    )


def given(hour: float, agent: str, *, masks: bool) -> TreatmentRecord:
    at = T0 + timedelta(hours=hour)
    return TreatmentRecord(
        id=f"t{hour:g}", agent=agent, administered_at=at, dose_mg=None, dose_unit=None,  # type: ignore[arg-type]
        recorded_at=at, masks_fever=masks,
    )


def shown_text(element: ET.Element) -> str:
    """An element's own text, without its <title> (the tooltip, its first child)."""
    title = element.find(f"{SVG}title")
    return (title.tail if title is not None else element.text) or ""


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    return root


def points(root: ET.Element, key: str) -> list[ET.Element]:
    return [c for c in root.iter(f"{SVG}circle") if f"point-{key}" in c.get("class", "").split()]


def bands(root: ET.Element, key: str) -> list[ET.Element]:
    group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == f"band band-{key}")
    return [r for r in group.iter(f"{SVG}rect") if "grade" in r.get("class", "").split()]


def polylines(root: ET.Element, key: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(float(n) for n in p.split(",")) for p in line.get("points", "").split()]  # type: ignore[misc]
        for line in root.iter(f"{SVG}polyline")
        if f"series-{key}" in line.get("class", "")
    ]


THREE = Course(
    "pt-1",
    (
        reading(0, temperature=39.2, sbp=78, oxygen=0, crs=GradeMark(2, 2, "graded"), icans=GradeMark(0, 0, "graded")),
        reading(6, temperature=38.4, sbp=95, oxygen=2, crs=GradeMark(2, 2, "graded"), icans=GradeMark(1, 3, "incomplete")),
        reading(12, temperature=37.0, sbp=104, oxygen=2, crs=GradeMark(2, 2, "graded"), masked_by="tocilizumab"),
    ),
    (given(4, "tocilizumab", masks=True), given(9, "blinatumomab_stop", masks=False)),
)


def test_the_chart_is_an_accessible_image_named_by_its_title_and_description() -> None:
    root = parse(course_svg(THREE, EN))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == f"{CHART_ID}-title {CHART_ID}-desc"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.get("id") == f"{CHART_ID}-title" and "pt-1" in (title.text or "")
    assert desc is not None and desc.get("id") == f"{CHART_ID}-desc"
    assert "3 observations, 2 treatments" in (desc.text or "")
    assert "<script" not in course_svg(THREE, EN) and "http" not in course_svg(THREE, EN).replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_one_point_per_reported_value_placed_by_time_and_value() -> None:
    root = parse(course_svg(THREE, EN))
    temperature = points(root, "temperature")
    assert [p.get("data-value") for p in temperature] == ["39.2", "38.4", "37"]
    xs = [float(p.get("cx", "nan")) for p in temperature]
    ys = [float(p.get("cy", "nan")) for p in temperature]
    assert xs == sorted(xs) and xs[0] < xs[1] < xs[2]
    assert ys[0] < ys[1] < ys[2]  # hotter is higher on the chart (smaller y)
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.2)  # 6 h apart, 6 h apart
    assert [p.get("data-value") for p in points(root, "sbp")] == ["78", "95", "104"]
    assert [p.get("data-value") for p in points(root, "oxygen")] == ["0", "2", "2"]
    sbp_ys = [float(p.get("cy", "nan")) for p in points(root, "sbp")]
    assert sbp_ys[0] > sbp_ys[1] > sbp_ys[2]


def test_a_value_not_reported_is_not_drawn_and_breaks_the_line() -> None:
    course = Course(
        "pt-2",
        (reading(0, temperature=38.0), reading(2, temperature=None, sbp=None, oxygen=None), reading(4, temperature=39.0),
         reading(6, temperature=39.5)),
        (),
    )
    root = parse(course_svg(course, EN))
    assert [p.get("data-value") for p in points(root, "temperature")] == ["38", "39", "39.5"]
    lines = polylines(root, "temperature")
    assert [len(line) for line in lines] == [2]  # 38 stands alone: no line bridges the unreported value
    assert [len(line) for line in polylines(root, "sbp")] == [2] and len(points(root, "sbp")) == 3
    # the oxygen line holds each value until the next observation: a step, broken where not reported
    assert [len(line) for line in polylines(root, "oxygen")] == [3]


def test_grade_bands_hold_each_observations_grade_until_the_next() -> None:
    root = parse(course_svg(THREE, EN))
    crs = bands(root, "crs")
    assert [b.get("data-grade") for b in crs] == ["2", "2", "2"]
    xs = [float(p.get("cx", "nan")) for p in points(root, "temperature")]
    for band, start in zip(crs, xs, strict=True):
        assert float(band.get("x", "nan")) == pytest.approx(start, abs=0.1)
    assert float(crs[0].get("x", "0")) + float(crs[0].get("width", "0")) == pytest.approx(xs[1], abs=0.1)
    icans = bands(root, "icans")  # the third observation did not assess ICANS: no band of its own
    assert [(b.get("data-grade"), b.get("data-grade-max")) for b in icans] == [("0", "0"), ("1", "3")]
    assert "incomplete" in icans[1].get("class", "") and icans[1].get("stroke-dasharray")
    assert "incomplete" not in icans[0].get("class", "")


def test_a_masked_observation_is_marked_with_the_treatment_that_masked_it() -> None:
    root = parse(course_svg(THREE, EN))
    temperature = points(root, "temperature")
    assert ["masked" in p.get("class", "") for p in temperature] == [False, False, True]
    assert temperature[2].get("fill") == "#ffffff" and temperature[0].get("fill") != "#ffffff"
    marks = [p for p in root.iter(f"{SVG}path") if p.get("class") == "masked-mark"]
    assert [m.get("data-observation") for m in marks] == ["obs12"]
    title = marks[0].find(f"{SVG}title")
    assert title is not None and "fever masked by Tocilizumab" in (title.text or "")


def test_treatments_are_vertical_marks_dashed_when_they_mask_fever() -> None:
    course = Course(
        "pt-3",
        THREE.readings,
        (
            given(1, "dexamethasone", masks=True),
            given(2, "blinatumomab_start", masks=False),
            given(3, "pegaspargase", masks=False),
            given(4, "tocilizumab", masks=True),
        ),
    )
    root = parse(course_svg(course, EN))
    lines = [line for line in root.iter(f"{SVG}line") if line.get("class") == "treatment"]
    assert [line.get("data-agent") for line in lines] == ["dexamethasone", "blinatumomab_start", "pegaspargase", "tocilizumab"]
    assert [line.get("stroke-dasharray") for line in lines] == ["6 3", None, "2 3", "6 3"]
    xs = [float(line.get("x1", "nan")) for line in lines]
    assert xs == sorted(xs) and len(set(xs)) == 4
    texts = [label for label in map(shown_text, root.iter(f"{SVG}text")) if label in ("Dexa", "Blina ▶", "PEG", "Toci")]
    assert texts == ["Dexa", "Blina ▶", "PEG", "Toci"]


def test_grade_labels_say_what_is_established_and_what_could_still_be() -> None:
    assert grade_label(GradeMark(2, 2, "graded"), EN) == "2"
    assert grade_label(GradeMark(2, 3, "incomplete"), EN) == "2-3"  # just above: the bound is shown
    assert grade_label(GradeMark(2, None, "graded"), EN) == "2"
    assert grade_label(GradeMark(None, 4, "not_assessable"), EN) == "?"
    assert grade_label(GradeMark(None, 1, "clinician_review"), EN) == "review"
    assert grade_label(None, EN) == "-"
    assert grade_words(GradeMark(1, 3, "incomplete"), EN) == "grade 1 (up to 3 with what was not reported)"
    assert grade_words(None, EN) == "not assessed"


def test_text_is_escaped() -> None:
    hostile = Translator("en", lambda text: text + ' <b>&"x"</b>', lambda s, p, n: (s if n == 1 else p) + " <&>")
    svg = course_svg(THREE, hostile)
    root = parse(svg)
    assert "<b>" not in svg
    title = root.find(f"{SVG}title")
    assert title is not None and (title.text or "").endswith(' <b>&"x"</b>')


def test_the_same_course_gives_the_same_text() -> None:
    assert course_svg(THREE, EN) == course_svg(THREE, EN)
    assert course_svg(THREE, EN) != course_svg(Course("pt-1", THREE.readings[:2], THREE.treatments), EN)


def test_an_empty_course_is_a_chart_that_says_so() -> None:
    root = parse(course_svg(Course("pt-4", (), ()), EN))
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "Nothing has been recorded" in (desc.text or "")
    assert points(root, "temperature") == []


def test_one_observation_alone_is_charted() -> None:
    root = parse(course_svg(Course("pt-5", (reading(0),), ()), EN))
    assert len(points(root, "temperature")) == 1 and len(bands(root, "crs")) == 1


@pytest.mark.parametrize(("hours", "step"), [(6.9, 1), (7.0, 1), (7.1, 2), (13.9, 2), (14.0, 2), (14.1, 3)])
def test_time_ticks_at_most_seven_steps_of_a_round_size(hours: float, step: int) -> None:
    midnight = T0.replace(hour=0)
    ticks = _time_ticks(midnight, midnight + timedelta(hours=hours))
    assert ticks[0] == midnight and len(ticks) <= 8
    assert {b - a for a, b in zip(ticks, ticks[1:])} == {timedelta(hours=step)}


def episode(timeline: list[dict[str, Any]], treatments: list[dict[str, Any]] | None = None) -> Episode:
    course = {"current_grade": None, "current_status": None, "peak_grade": None, "peak_at": None, "onset_at": None,
              "resolved_at": None, "masking_since": None}
    return Episode.model_validate(
        {"patient_id": "pt-6", "crs": course, "icans": course, "timeline": timeline, "treatments": treatments or []}
    )


def entry(n: int, hour: int, crs: int | None, masked: bool = False) -> dict[str, Any]:
    at = (T0 + timedelta(hours=hour)).isoformat()
    return {
        "observation_id": f"o{n}", "observed_at": at, "assessment_id": f"{n:032x}",
        "crs": {"grade": crs, "grade_max": crs, "status": "graded" if crs is not None else "not_assessable", "explanation": []},
        "icans": None,
        "fever_masking": {"agent": "tocilizumab", "administered_at": at, "onset_at": T0.isoformat()} if masked else None,
        "flags": [], "actions": [],
    }


def test_the_course_reads_the_values_from_each_observations_audit_record() -> None:
    records = {
        f"{1:032x}": (
            {"patient_id": "pt-6", "observation_id": "o1", "observation": {
                "observed_at": T0.isoformat(), "patient": {"age_years": 9},
                "vitals": {"temperature_f": 102.2, "sbp_mmhg": 78},
                "crs": {"oxygen": {"device": "nasal_cannula", "flow_l_min": 2}}}},
            {"crs": {"domains": {"fever": 1, "hypotension": 2, "oxygen": 2, "death": 0}}},
        ),
        f"{2:032x}": ({"observation": {"vitals": {"temperature_c": 37.2}}}, {"crs": {"domains": {"oxygen": None}}}),
    }
    course = course_from_episode(episode([entry(1, 0, 2), entry(2, 4, 2, masked=True), entry(3, 8, None)]), records)
    first, second, third = course.readings
    assert first.temperature_c == pytest.approx(39.0) and first.temperature_f == 102.2 and first.sbp_mmhg == 78
    assert (first.oxygen_device, first.oxygen_flow_l_min, first.oxygen_grade) == ("nasal_cannula", 2, 2)
    assert second.temperature_c == 37.2 and second.oxygen_grade is None and second.sbp_mmhg is None
    assert second.fever_masking is not None and second.fever_masking.agent == "tocilizumab"
    # a record that could not be read: nothing measured, shown as not reported (never as normal)
    assert (third.temperature_c, third.sbp_mmhg, third.oxygen_grade) == (None, None, None)
    assert third.crs == GradeMark(None, None, "not_assessable")
    root = parse(course_svg(course, EN))
    assert [p.get("data-value") for p in points(root, "temperature")] == ["39", "37.2"]
    assert [b.get("data-grade") for b in bands(root, "crs")] == ["2", "2", ""]
