"""The patient's course as a chart: a server-rendered SVG, and the rows of its text alternative.

    course_from_episode(episode, readings)   the episode (GET /v1/patients/{id}/episode) plus, for
                                             each timeline entry, its audit record's request and
                                             result: what was measured and how it was graded
    course_svg(course, translator)           the SVG, as text

The chart shows, on one time axis (UTC):
- temperature (°C; a temperature sent in °F is converted as the engine converts it),
- systolic blood pressure (mmHg),
- oxygen support as the CRS grade the engine gave the oxygen domain (the ASTCT tier: 0 none, 2 low
  flow, 3 high flow or mask, 4 positive pressure; which device is which tier is the CRS rule file's,
  not this module's),
- a band of the CRS grade and one of the ICANS grade, each observation's grade held until the next,
- every treatment as a vertical mark (tocilizumab, corticosteroids and the other fever-masking
  agents dashed; blinatumomab start and stop solid), and the observations whose fever was masked.

A value not reported is not drawn (a line is broken there, never bridged) and a grade not
established is shown as "?": the chart does not make unknown look normal. No threshold is drawn:
those are the rule files' knowledge, and the grades already carry them.

Pure and deterministic: the same course and language give the same text; no clock, no random ids.
Every text is escaped; every visible word goes through the translator. The SVG has role="img",
<title> and <desc> (aria-labelledby), and each point a <title> of its own; the page shows a data table of
the same `Course.readings` as its text alternative. No script, no CDN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any

from aegrade.derive import fahrenheit_to_celsius
from aegrade.episodes import BLINATUMOMAB_COURSE_AGENTS, Episode, FeverMasking, TimelineDomain, TreatmentRecord
from service.i18n import N_, Translator

__all__ = [
    "CHART_ID",
    "Course",
    "GradeMark",
    "Reading",
    "agent_name",
    "course_from_episode",
    "course_svg",
    "format_time",
    "grade_label",
    "grade_words",
]

CHART_ID = "course-chart"
"""The id prefix of the chart's <title> and <desc> (one chart per page)."""


# Display names of the treatment agents (the episode model's vocabulary, not clinical knowledge).
AGENT_NAMES: dict[str, str] = {
    "tocilizumab": N_("Tocilizumab"),
    "dexamethasone": N_("Dexamethasone"),
    "methylprednisolone": N_("Methylprednisolone"),
    "hydrocortisone": N_("Hydrocortisone"),
    "other_corticosteroid": N_("Other corticosteroid"),
    "acetaminophen": N_("Paracetamol (acetaminophen)"),
    "ibuprofen": N_("Ibuprofen"),
    "other_antipyretic": N_("Other antipyretic"),
    "anakinra": N_("Anakinra"),
    "blinatumomab_start": N_("Blinatumomab started"),
    "blinatumomab_stop": N_("Blinatumomab stopped"),
    "pegaspargase": N_("Pegaspargase"),
    "other_asparaginase": N_("Other asparaginase"),
}
# The short marks written on the chart above each treatment line.
AGENT_MARKS: dict[str, str] = {
    "tocilizumab": N_("Toci"),
    "dexamethasone": N_("Dexa"),
    "methylprednisolone": N_("MP"),
    "hydrocortisone": N_("HC"),
    "other_corticosteroid": N_("Steroid"),
    "acetaminophen": N_("PCM"),
    "ibuprofen": N_("Ibu"),
    "other_antipyretic": N_("Antipyr."),
    "anakinra": N_("Anak"),
    "blinatumomab_start": N_("Blina ▶"),
    "blinatumomab_stop": N_("Blina ■"),
    "pegaspargase": N_("PEG"),
    "other_asparaginase": N_("Asp"),
}


def agent_name(agent: str, t: Translator) -> str:
    return t.gettext(AGENT_NAMES[agent]) if agent in AGENT_NAMES else agent


def format_time(moment: datetime) -> str:
    """A time as the course shows it: 2026-11-19 14:00 UTC (every time is kept in UTC)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---- the data -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradeMark:
    """One observation's grade of CRS or ICANS, as stored in its timeline entry."""

    grade: int | None
    grade_max: int | None
    status: str


@dataclass(frozen=True)
class Reading:
    """What one observation measured and how it was graded. None: not reported (or not readable)."""

    observation_id: str
    observed_at: datetime
    assessment_id: str
    temperature_c: float | None
    temperature_f: float | None  # as sent, when sent in °F
    sbp_mmhg: float | None
    oxygen_device: str | None
    oxygen_flow_l_min: float | None
    oxygen_grade: int | None  # the CRS oxygen domain's grade, as graded
    crs: GradeMark | None
    icans: GradeMark | None
    fever_masking: FeverMasking | None


@dataclass(frozen=True)
class Course:
    patient_id: str
    readings: tuple[Reading, ...]
    treatments: tuple[TreatmentRecord, ...]


def _mark(part: TimelineDomain | None) -> GradeMark | None:
    if part is None:
        return None
    return GradeMark(part.grade, part.grade_max if part.grade_max is not None else part.grade, part.status)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _part(value: Any, key: str) -> dict[str, Any]:
    """value[key] when both are JSON objects, else {} (a record of another shape charts nothing)."""
    part = value.get(key) if isinstance(value, dict) else None
    return part if isinstance(part, dict) else {}


def course_from_episode(episode: Episode, readings: Mapping[str, tuple[Any, Any]]) -> Course:
    """The course: `readings` maps a timeline entry's assessment_id to its audit record's (request,
    result) as stored. An observation's request is {"observation": <the observation as sent>, ...};
    a record that is missing or of another shape gives a reading with nothing measured."""
    out = []
    for entry in episode.timeline:
        request, result = readings.get(entry.assessment_id, (None, None))
        sent = _part(request, "observation")
        vitals = _part(sent, "vitals")
        oxygen = _part(_part(sent, "crs"), "oxygen")
        temperature_f = _number(vitals.get("temperature_f"))
        temperature_c = _number(vitals.get("temperature_c"))
        if temperature_c is None and temperature_f is not None:
            temperature_c = fahrenheit_to_celsius(temperature_f)
        oxygen_grade = _part(_part(result, "crs"), "domains").get("oxygen")
        device = oxygen.get("device")
        out.append(
            Reading(
                observation_id=entry.observation_id,
                observed_at=entry.observed_at.astimezone(timezone.utc),
                assessment_id=entry.assessment_id,
                temperature_c=temperature_c,
                temperature_f=temperature_f,
                sbp_mmhg=_number(vitals.get("sbp_mmhg")),
                oxygen_device=device if isinstance(device, str) else None,
                oxygen_flow_l_min=_number(oxygen.get("flow_l_min")),
                oxygen_grade=oxygen_grade if isinstance(oxygen_grade, int) else None,
                crs=_mark(entry.crs),
                icans=_mark(entry.icans),
                fever_masking=entry.fever_masking,
            )
        )
    return Course(episode.patient_id, tuple(out), tuple(episode.treatments))


def grade_words(mark: GradeMark | None, t: Translator) -> str:
    """A grade in a sentence: "grade 2", "grade 1 (up to 3 with what was not reported)", or why there is none."""
    if mark is None:
        return t.gettext("not assessed")
    if mark.grade is None:
        return t.gettext("left to the clinician's review") if mark.status == "clinician_review" else t.gettext("not assessable")
    if mark.grade_max is not None and mark.grade_max > mark.grade:
        return t.gettext("grade {grade} (up to {grade_max} with what was not reported)").format(
            grade=mark.grade, grade_max=mark.grade_max
        )
    return t.gettext("grade {grade}").format(grade=mark.grade)


def grade_label(mark: GradeMark | None, t: Translator) -> str:
    """A grade as the chart and table write it: "2", "1-3" (established 1, unreported inputs allow
    up to 3), "review" (left to the clinician), "?" (not assessable), "-" (not assessed)."""
    if mark is None:
        return "-"
    if mark.grade is None:
        return t.gettext("review") if mark.status == "clinician_review" else "?"
    if mark.grade_max is not None and mark.grade_max > mark.grade:
        return f"{mark.grade}-{mark.grade_max}"
    return str(mark.grade)


# ---- geometry -----------------------------------------------------------------------------------

WIDTH = 760
LEFT = 58  # room for the y-axis numbers and the band names
RIGHT = 16
PLOT_W = WIDTH - LEFT - RIGHT
TOP = 72  # two rows of treatment marks, then the first panel's name
PANEL_GAP = 26  # room for the next panel's name


@dataclass(frozen=True)
class _Panel:
    key: str
    title: str
    top: float
    height: float
    low: float
    high: float
    ticks: tuple[float, ...]

    def y(self, value: float) -> float:
        return self.top + self.height * (self.high - value) / (self.high - self.low)


# Grade colours (fill, text): light to dark, each with a text colour of at least 4.5:1 contrast.
GRADE_FILL = {0: "#e6f4ea", 1: "#fff4c2", 2: "#ffd8a8", 3: "#f4a3a3", 4: "#b3261e", 5: "#4a0e0b"}
GRADE_TEXT = {0: "#1b1b1b", 1: "#1b1b1b", 2: "#1b1b1b", 3: "#1b1b1b", 4: "#ffffff", 5: "#ffffff"}
UNKNOWN_FILL = "#e0e0e0"
INK = "#1b1b1b"
GRID = "#d0d0d0"
SERIES = {"temperature": "#b3261e", "sbp": "#0b57d0", "oxygen": "#146c2e"}
MASKING_COLOUR = "#6a1b9a"
BLINA_COLOUR = "#1b1b1b"
OTHER_COLOUR = "#5f6368"


def _f(value: float) -> str:
    """A coordinate: 1 decimal, no trailing zeros (deterministic text)."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _range(values: Iterable[float], low: float, high: float, step: float) -> tuple[float, float, tuple[float, ...]]:
    """A y range that holds `low`..`high` and every value, on multiples of `step`, and its ticks."""
    present = list(values)
    lo = math.floor(min([low, *present]) / step) * step
    hi = math.ceil(max([high, *present]) / step) * step
    count = round((hi - lo) / step)
    stride = max(1, math.ceil(count / 6))
    return lo, hi, tuple(lo + step * i for i in range(0, count + 1, stride))


_TICK_HOURS = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720)


def _time_ticks(start: datetime, end: datetime) -> list[datetime]:
    """Round times (on the hour, at multiples of 1-720 h from midnight UTC) in [start, end], at most 8."""
    span_h = (end - start).total_seconds() / 3600
    step = next((h for h in _TICK_HOURS if span_h / h <= 7), _TICK_HOURS[-1])
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight + timedelta(hours=math.ceil((start - midnight).total_seconds() / 3600 / step) * step)
    ticks: list[datetime] = []
    moment = first
    while moment <= end and len(ticks) < 8:
        ticks.append(moment)
        moment += timedelta(hours=step)
    return ticks


class _Canvas:
    """The SVG text being written, with escaped text and attributes."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, tag: str, attributes: Mapping[str, str | float], text: str | None = None, title: str | None = None) -> None:
        attrs = "".join(
            f' {name.replace("_", "-")}="{escape(_f(value) if isinstance(value, float) else str(value), quote=True)}"'
            for name, value in attributes.items()
        )
        inner = (f"<title>{escape(title)}</title>" if title else "") + (escape(text) if text is not None else "")
        self.parts.append(f"<{tag}{attrs}>{inner}</{tag}>" if inner else f"<{tag}{attrs}/>")

    def open(self, tag: str, attributes: Mapping[str, str | float]) -> None:
        attrs = "".join(
            f' {name.replace("_", "-")}="{escape(_f(value) if isinstance(value, float) else str(value), quote=True)}"'
            for name, value in attributes.items()
        )
        self.parts.append(f"<{tag}{attrs}>")

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")


# ---- the chart ------------------------------------------------------------------------------------


def _time_range(course: Course) -> tuple[datetime, datetime]:
    moments = [r.observed_at for r in course.readings] + [t.administered_at.astimezone(timezone.utc) for t in course.treatments]
    start, end = min(moments), max(moments)
    if end - start < timedelta(hours=1):
        end = start + timedelta(hours=1)
    pad = (end - start) * 0.04
    return start - pad, end + pad


def _series(
    canvas: _Canvas,
    panel: _Panel,
    x: Any,
    points: Sequence[tuple[Reading, float | None]],
    colour: str,
    describe: Any,
    *,
    step: bool = False,
) -> None:
    """A line through the reported values, broken where one was not reported, and a dot at each
    (hollow for an observation whose fever was masked, so that a normal temperature there reads as
    masked, not as afebrile)."""
    run: list[tuple[float, float]] = []
    runs: list[list[tuple[float, float]]] = []
    for reading, value in points:
        if value is None:
            if run:
                runs.append(run)
            run = []
            continue
        run.append((x(reading.observed_at), panel.y(value)))
    if run:
        runs.append(run)
    for line in runs:
        if len(line) > 1:
            coordinates: list[tuple[float, float]] = []
            for i, (px, py) in enumerate(line):
                if step and i:
                    coordinates.append((px, coordinates[-1][1]))
                coordinates.append((px, py))
            canvas.add(
                "polyline",
                {
                    "class": f"series series-{panel.key}",
                    "points": " ".join(f"{_f(px)},{_f(py)}" for px, py in coordinates),
                    "fill": "none",
                    "stroke": colour,
                    "stroke_width": "2",
                },
            )
    for reading, value in points:
        if value is None:
            continue
        masked = panel.key == "temperature" and reading.fever_masking is not None
        canvas.add(
            "circle",
            {
                "class": f"point point-{panel.key}" + (" masked" if masked else ""),
                "data-observation": reading.observation_id,
                "data-value": _f(value),
                "cx": float(x(reading.observed_at)),
                "cy": float(panel.y(value)),
                "r": "4.5" if masked else "3.5",
                "fill": "#ffffff" if masked else colour,
                "stroke": colour,
                "stroke_width": "2",
            },
            title=describe(reading, value),
        )


def course_svg(course: Course, t: Translator) -> str:
    """The course chart as SVG text (see the module docstring). An empty course is a chart that says so."""
    _ = t.gettext
    canvas = _Canvas()
    title = _("Course of CRS and ICANS for patient {patient}").format(patient=course.patient_id)
    n_obs, n_treat = len(course.readings), len(course.treatments)
    desc = (
        t.ngettext("{n} observation", "{n} observations", n_obs).format(n=n_obs)
        + ", "
        + t.ngettext("{n} treatment", "{n} treatments", n_treat).format(n=n_treat)
        + ". "
        + _(
            "Temperature, systolic blood pressure and oxygen support over time, the CRS and ICANS grade of each "
            "observation as bands, and the treatments as vertical marks. The table below gives the same data."
        )
    )
    if not course.readings and not course.treatments:
        canvas.open(
            "svg",
            {
                "xmlns": "http://www.w3.org/2000/svg",
                "id": CHART_ID,
                "class": "course-chart",
                "viewBox": f"0 0 {WIDTH} 80",
                "role": "img",
                "aria-labelledby": f"{CHART_ID}-title {CHART_ID}-desc",
            },
        )
        canvas.add("title", {"id": f"{CHART_ID}-title"}, title)
        canvas.add("desc", {"id": f"{CHART_ID}-desc"}, _("Nothing has been recorded for this patient yet."))
        canvas.add("text", {"x": float(LEFT), "y": 44.0, "fill": INK, "font-size": "14"}, _("Nothing recorded yet."))
        canvas.close("svg")
        return "".join(canvas.parts)

    start, end = _time_range(course)
    span = (end - start).total_seconds()

    def x(moment: datetime) -> float:
        return LEFT + PLOT_W * (moment.astimezone(timezone.utc) - start).total_seconds() / span

    temperatures = [r.temperature_c for r in course.readings if r.temperature_c is not None]
    pressures = [r.sbp_mmhg for r in course.readings if r.sbp_mmhg is not None]
    t_lo, t_hi, t_ticks = _range(temperatures, 36.0, 40.0, 1.0)
    p_lo, p_hi, p_ticks = _range(pressures, 60.0, 140.0, 20.0)
    top = float(TOP)
    temperature = _Panel("temperature", _("Temperature °C"), top, 120, t_lo, t_hi, t_ticks)
    top += 120 + PANEL_GAP
    pressure = _Panel("sbp", _("Systolic BP mmHg"), top, 100, p_lo, p_hi, p_ticks)
    top += 100 + PANEL_GAP
    oxygen = _Panel("oxygen", _("Oxygen support (CRS grade of the oxygen domain)"), top, 84, 0.0, 4.0, (0.0, 2.0, 3.0, 4.0))
    top += 84 + 18
    band_h = 26.0
    crs_top, icans_top = top, top + band_h + 6
    bottom = icans_top + band_h
    axis_y = bottom + 18
    height = axis_y + 40

    canvas.open(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "id": CHART_ID,
            "class": "course-chart",
            "viewBox": f"0 0 {WIDTH} {_f(height)}",
            "role": "img",
            "aria-labelledby": f"{CHART_ID}-title {CHART_ID}-desc",
            "font-family": "system-ui, sans-serif",
            "font-size": "12",
        },
    )
    canvas.add("title", {"id": f"{CHART_ID}-title"}, title)
    canvas.add("desc", {"id": f"{CHART_ID}-desc"}, desc)

    # time grid and axis
    canvas.open("g", {"class": "time-axis"})
    for moment in _time_ticks(start, end):
        tx = x(moment)
        canvas.add("line", {"x1": tx, "x2": tx, "y1": float(TOP), "y2": bottom, "stroke": GRID, "stroke_width": "1"})
        canvas.add(
            "text",
            {"x": tx, "y": axis_y, "text-anchor": "middle", "fill": INK},
            moment.strftime("%m-%d %H:%M"),
        )
    canvas.add("text", {"x": float(LEFT + PLOT_W), "y": axis_y + 20, "text-anchor": "end", "fill": INK}, _("Time (UTC)"))
    canvas.close("g")

    # the three measured panels
    oxygen_names = {0: _("none"), 2: "2", 3: "3", 4: "4"}
    for panel in (temperature, pressure, oxygen):
        canvas.open("g", {"class": f"panel panel-{panel.key}"})
        canvas.add(
            "rect",
            {"x": float(LEFT), "y": panel.top, "width": float(PLOT_W), "height": panel.height, "fill": "none", "stroke": GRID},
        )
        canvas.add("text", {"x": float(LEFT), "y": panel.top - 6, "fill": INK, "font-weight": "bold"}, panel.title)
        for value in panel.ticks:
            ty = panel.y(value)
            canvas.add("line", {"x1": float(LEFT), "x2": float(LEFT + PLOT_W), "y1": ty, "y2": ty, "stroke": GRID})
            label = oxygen_names.get(int(value), "") if panel.key == "oxygen" else _f(value)
            canvas.add("text", {"x": float(LEFT - 6), "y": ty + 4, "text-anchor": "end", "fill": INK}, label)
        canvas.close("g")

    def at(reading: Reading) -> str:
        return format_time(reading.observed_at)

    def temperature_title(reading: Reading, value: float) -> str:
        text = _("{time}: temperature {value} °C").format(time=at(reading), value=f"{value:.1f}")
        if reading.fever_masking is not None:
            text += "; " + _("fever masked by {agent}").format(agent=agent_name(reading.fever_masking.agent, t))
        return text

    canvas.open("g", {"class": "series-group"})
    _series(canvas, temperature, x, [(r, r.temperature_c) for r in course.readings], SERIES["temperature"], temperature_title)
    _series(
        canvas, pressure, x, [(r, r.sbp_mmhg) for r in course.readings], SERIES["sbp"],
        lambda r, v: _("{time}: systolic BP {value} mmHg").format(time=at(r), value=_f(v)),
    )
    _series(
        canvas, oxygen, x,
        [(r, None if r.oxygen_grade is None else float(r.oxygen_grade)) for r in course.readings],
        SERIES["oxygen"],
        lambda r, v: _("{time}: oxygen support, CRS grade {value}").format(time=at(r), value=_f(v)),
        step=True,
    )
    canvas.close("g")

    # the grade bands: each observation's grade held until the next observation
    for key, band_top, name in (("crs", crs_top, "CRS"), ("icans", icans_top, "ICANS")):
        canvas.open("g", {"class": f"band band-{key}"})
        canvas.add("text", {"x": 4.0, "y": band_top + 17, "fill": INK, "font-weight": "bold"}, name)
        canvas.add(
            "rect",
            {"x": float(LEFT), "y": band_top, "width": float(PLOT_W), "height": band_h, "fill": "none", "stroke": GRID},
        )
        readings = [r for r in course.readings if getattr(r, key) is not None]
        for i, reading in enumerate(readings):
            mark: GradeMark = getattr(reading, key)
            x0 = x(reading.observed_at)
            x1 = x(readings[i + 1].observed_at) if i + 1 < len(readings) else float(LEFT + PLOT_W)
            label = grade_label(mark, t)
            fill = UNKNOWN_FILL if mark.grade is None else GRADE_FILL[mark.grade]
            text_colour = INK if mark.grade is None else GRADE_TEXT[mark.grade]
            incomplete = mark.grade is not None and mark.grade_max is not None and mark.grade_max > mark.grade
            what = _("{name} grade {grade} from {time}").format(name=name, grade=label, time=at(reading))
            if key == "crs" and reading.fever_masking is not None:
                what += "; " + _("fever masked by {agent}").format(agent=agent_name(reading.fever_masking.agent, t))
            attributes: dict[str, str | float] = {
                "class": "grade" + (" incomplete" if incomplete else ""),
                "data-observation": reading.observation_id,
                "data-grade": "" if mark.grade is None else str(mark.grade),
                "data-grade-max": "" if mark.grade_max is None else str(mark.grade_max),
                "data-status": mark.status,
                "x": x0,
                "y": band_top,
                "width": max(x1 - x0, 1.0),
                "height": band_h,
                "fill": fill,
                "stroke": INK if incomplete else "#ffffff",
            }
            if incomplete:
                attributes["stroke-dasharray"] = "4 3"
            canvas.add("rect", attributes, title=what)
            if x1 - x0 >= 14:
                canvas.add(
                    "text",
                    {"x": x0 + 4, "y": band_top + 17, "fill": text_colour, "aria-hidden": "true"},
                    label,
                )
            if key == "crs" and reading.fever_masking is not None:
                canvas.add(
                    "path",
                    {
                        "class": "masked-mark",
                        "data-observation": reading.observation_id,
                        "d": f"M{_f(x0)},{_f(band_top - 1)} l-5,-8 h10 z",
                        "fill": MASKING_COLOUR,
                    },
                    title=_("{time}: fever masked by {agent}").format(
                        time=at(reading), agent=agent_name(reading.fever_masking.agent, t)
                    ),
                )
        canvas.close("g")

    # treatments: a vertical line across the panels, a short mark above (two rows, alternating)
    canvas.open("g", {"class": "treatments"})
    for i, given in enumerate(course.treatments):
        tx = x(given.administered_at)
        if given.agent in BLINATUMOMAB_COURSE_AGENTS:
            colour, dash = BLINA_COLOUR, ""
        elif given.masks_fever:
            colour, dash = MASKING_COLOUR, "6 3"
        else:
            colour, dash = OTHER_COLOUR, "2 3"
        row_y = 20.0 if i % 2 == 0 else 40.0
        line: dict[str, str | float] = {
            "class": "treatment",
            "data-agent": given.agent,
            "x1": tx, "x2": tx, "y1": row_y + 4, "y2": bottom,
            "stroke": colour, "stroke_width": "2",
        }
        if dash:
            line["stroke-dasharray"] = dash
        dose = ""
        if given.dose_mg is not None:
            dose = f" {given.dose_mg:g} {given.dose_unit or 'mg'}"
        what = f"{format_time(given.administered_at)}: {agent_name(given.agent, t)}{dose}"
        canvas.add("line", line, title=what)
        canvas.add(
            "text",
            {"x": tx, "y": row_y, "text-anchor": "middle", "fill": colour, "font-weight": "bold"},
            _(AGENT_MARKS.get(given.agent, given.agent)),
            title=what,
        )
    canvas.close("g")
    canvas.close("svg")
    return "".join(canvas.parts)
