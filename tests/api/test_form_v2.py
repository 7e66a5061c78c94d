"""The bedside form, version 2 (issue 17), over HTTP with no JavaScript: forgiving numbers, every
error in one round, age in years and months, answers in words (CAPD scored by the form), the
summary bar, plain words in the nurse view, the note for the chart, the printout's values, the
course link, the local time's UTC fallback, and closed optional sections."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.form import CAPD_ANSWERS, FIELDS, parse_form
from service.settings import ServiceSettings
from tests.form_filling import post_form

ICE_ALL = {f"neuro.ice.{k}": v for k, v in (("orientation", "4"), ("naming", "3"), ("commands", "1"), ("writing", "1"), ("attention", "1"))}
NEURO_NONE = {"neuro.seizure": "none", "neuro.motor": "none", "neuro.cerebral_edema": "none", "neuro.icp_signs": "none"}
CRS_NONE = {"crs.fever_masked": "no", "crs.hypotension": "no", "crs.vasopressors": "none", "crs.oxygen.device": "none"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('form-v2') / 'audit.sqlite3'}"
    with TestClient(create_app(ServiceSettings(database_url=url))) as test_client:
        yield test_client


def errors_of(page: str) -> dict[str, str]:
    return {
        name: html.unescape(message)
        for name, message in re.findall(r'<p class="error" id="([^"]+)-error"><span aria-hidden="true">⚠ </span>([^<]*)</p>', page)
    }


def record_of(client: TestClient, page: str) -> dict[str, Any]:
    found = re.search(r'id="assessment-id">([0-9a-f]{32})<', page)
    assert found is not None, errors_of(page)
    record: dict[str, Any] = client.get(f"/v1/assessments/{found.group(1)}").json()
    return record


def chips(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<li class="chip[^"]*" data-summary="([^"]+)">([^<]*)</li>', page)


# ---- fast and forgiving ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "read"),
    [("38,5", 38.5), ("38.5", 38.5), ("0,25", 0.25), ("1,2345", 1.2345), (" 39,0 ", 39.0), ("38", 38.0)],
)
def test_a_decimal_comma_is_read_where_it_cannot_be_a_thousands_separator(typed: str, read: float) -> None:
    parsed = parse_form({"patient.age_years": ["40"], "vitals.temperature": [typed]})
    assert not parsed.errors and parsed.data["vitals"]["temperature_c"] == read


@pytest.mark.parametrize(
    ("name", "typed", "says"),
    [
        ("thrombosis.alt_U_L", "1,200", "'1,200' could be 1.2 or 1200"),
        ("thrombosis.platelets_10e9_L", "150,000", "could be 150 or 150000"),
        ("vitals.sbp_mmhg", "85/50", "systolic only, e.g. 85"),
        ("vitals.map_mmhg", "85/50", "One number only for Mean arterial pressure, e.g. 85"),
        ("vitals.spo2_pct", "94%", "drop the unit. Enter 94"),
        ("patient.weight_kg", "24 kg", "drop the unit. Enter 24"),
        ("vitals.temperature", "101.3F", "drop the unit. Enter 101.3 and choose °C or °F"),
        ("vitals.temperature", "38,5 °C", "drop the unit. Enter 38,5"),
        ("vitals.temperature", "38.5.1", "Enter a number for Temperature"),
        ("vitals.temperature", "３８", "digits 0-9 only"),
        ("blinatumomab.seizures_this_course", "1,5", "Enter a whole number"),
    ],
)
def test_what_cannot_be_read_gets_a_message_that_says_what_to_type(name: str, typed: str, says: str) -> None:
    parsed = parse_form({"patient.age_years": ["40"], name: [typed]})
    assert says in " ".join(parsed.errors[name]), parsed.errors
    assert FIELDS[name].label in " ".join(parsed.errors[name]), "the message names the field"


def test_every_error_comes_in_one_round(client: TestClient) -> None:
    """Unreadable fields, a bound of the model and a contradiction the engine finds, all named at
    once."""
    fields = {
        "patient.age_years": "40",
        "patient.weight_kg": "70 kg",
        "vitals.sbp_mmhg": "85/50",
        "vitals.temperature": "50",  # above the model's 45 °C
        "crs.oxygen.device": "nasal_cannula",  # the engine: a flow is needed
        "crs.hypotension": "no",
        "crs.vasopressors": "norepinephrine",  # the engine: vasopressors imply hypotension
        "neuro.ice.orientation": "4",  # the other four tasks missing
    }
    page = post_form(client, fields)
    assert page.status_code == 422
    errors = errors_of(page.text)
    assert set(errors) >= {
        "patient.weight_kg", "vitals.sbp_mmhg", "vitals.temperature", "crs.oxygen.flow_l_min", "crs.hypotension",
        "neuro.ice.naming",
    }, errors
    assert "Must be at most 45 °C" in errors["vitals.temperature"]
    assert "Give the flow" in errors["crs.oxygen.flow_l_min"]
    assert 'id="assessment-id"' not in page.text, "no grade with an error"


def test_an_unreadable_age_is_named_once_as_unreadable(client: TestClient) -> None:
    errors = errors_of(post_form(client, {"patient.age_years": "forty", "vitals.sbp_mmhg": "85/50"}).text)
    assert set(errors) == {"patient.age_years", "vitals.sbp_mmhg"}
    assert "Enter a number for Age" in errors["patient.age_years"] and "Required" not in errors["patient.age_years"]


@pytest.mark.parametrize(
    ("years", "months", "age"),
    [("0", "7", 0.5833), ("", "7", 0.5833), ("1", "11", 1.9167), ("", "35", 2.9167), ("0", "0", 0.0), ("2", "", 2.0)],
)
def test_age_in_years_and_months(years: str, months: str, age: float) -> None:
    parsed = parse_form({"patient.age_years": [years], "patient.age_months": [months], "vitals.temperature": ["38"]})
    assert not parsed.errors and parsed.data["patient"] == {"age_years": age}


@pytest.mark.parametrize(
    ("years", "months", "says"),
    [("1", "12", "from 0 to 11"), ("", "36", "from 0 to 35"), ("1.5", "2", "either as years with a decimal"),
     ("0", "-1", "from 0 to 11"), ("0", "6.5", "whole number")],
)
def test_months_out_of_range_are_refused(years: str, months: str, says: str) -> None:
    parsed = parse_form({"patient.age_years": [years], "patient.age_months": [months]})
    assert says in " ".join(parsed.errors["patient.age_months"]), parsed.errors


def test_an_infant_in_months_is_graded_with_its_age_on_record(client: TestClient) -> None:
    page = post_form(client, {"patient.age_years": "0", "patient.age_months": "7", "vitals.temperature": "38,4"})
    record = record_of(client, page.text)
    assert record["request"]["patient"] == {"age_years": 0.5833}
    assert record["request"]["vitals"] == {"temperature_c": 38.4}


# ---- answers in words ------------------------------------------------------------------------------


class Radios(HTMLParser):
    """Each radio group of a page: name -> [(value, label text)], and the selects' names."""

    def __init__(self) -> None:
        super().__init__()
        self.radios: dict[str, list[tuple[str, str]]] = {}
        self.selects: dict[str, int] = {}
        self._ids: dict[str, tuple[str, str]] = {}
        self._label: str | None = None
        self._text: list[str] = []
        self._labels: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("type") == "radio":
            self._ids[a["id"]] = (a["name"], a["value"])
        elif tag == "label":
            self._label, self._text = a.get("for"), []
        elif tag == "select":
            self._select = a["name"]
            self.selects[a["name"]] = 0
        elif tag == "option" and self._select:
            self.selects[self._select] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label:
            self._labels[self._label] = " ".join("".join(self._text).split())
            self._label = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._label:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        for radio_id, (name, value) in self._ids.items():
            self.radios.setdefault(name, []).append((value, self._labels[radio_id]))


def controls(page: str) -> Radios:
    parser = Radios()
    parser.feed(page)
    parser.close()
    return parser


def test_choices_of_five_or_fewer_are_buttons_and_the_rest_selects(client: TestClient) -> None:
    found = controls(client.get("/").text)
    for name, spec in FIELDS.items():
        if spec.kind in ("yesno", "choice"):
            if len(spec.choices) <= 5:
                assert name in found.radios and name not in found.selects, name
            else:
                assert name in found.selects and name not in found.radios, name
    assert "crs.oxygen.device" in found.selects  # ten devices
    # every select left has more than five answers (and "not reported")
    assert all(count > 6 for count in found.selects.values()), found.selects
    assert [label for _, label in found.radios["neuro.consciousness"]][-1] == (
        "Unarousable or requires vigorous or repetitive tactile stimuli to arouse; stupor or coma"
    )
    assert found.radios["crs.fever_masked"] == [("", "Not reported"), ("yes", "Yes"), ("no", "No")]
    assert found.radios["neuro.ice.naming"] == [("0", "0"), ("1", "1"), ("2", "2"), ("3", "3")]


def test_capd_is_answered_in_words_and_items_1_to_4_score_in_reverse(client: TestClient) -> None:
    """The answers as the nurse reads them, and the score each one posts: checked against the
    instrument's scoring (crs-icans-research.md §3.3) item by item."""
    found = controls(client.get("/").text)
    words = ["Never", "Rarely", "Sometimes", "Often", "Always"]
    for item in range(8):
        offered = found.radios[f"neuro.capd.{item}"]
        assert [label.split(" ")[0] for _, label in offered] == words
        scores = [int(value) for value, _ in offered]
        assert scores == ([4, 3, 2, 1, 0] if item < 4 else [0, 1, 2, 3, 4]), item
        for value, label in offered:
            assert label.endswith(f"{value} point" + ("" if value == "1" else "s")), label
    assert CAPD_ANSWERS[0][0] == ("4", "Never") and CAPD_ANSWERS[7][0] == ("0", "Never")


def answers(page: str, words_by_item: list[str]) -> dict[str, str]:
    """The values posted by tapping these words, read from the page as a browser would."""
    found = controls(page)
    return {
        f"neuro.capd.{item}": next(v for v, label in found.radios[f"neuro.capd.{item}"] if label.startswith(word))
        for item, word in enumerate(words_by_item)
    }


@pytest.mark.parametrize(
    ("words", "total", "icans"),
    [
        (["Always"] * 4 + ["Never"] * 4, 0, 0),  # a well child: CAPD 0
        (["Often"] * 4 + ["Rarely"] * 4, 8, 1),  # just below the delirium cut-off
        (["Often"] * 4 + ["Rarely"] * 3 + ["Sometimes"], 9, 3),  # at it
        (["Rarely"] * 4 + ["Often"] * 4, 24, 3),  # a delirious child
    ],
)
def test_capd_answered_in_words_grades_by_the_scores_they_post(
    client: TestClient, words: list[str], total: int, icans: int
) -> None:
    fields = {"patient.age_years": "6", "neuro.consciousness": "alert", **NEURO_NONE}
    page = post_form(client, {**fields, **answers(client.get("/").text, words)})
    record = record_of(client, page.text)
    assert sum(record["request"]["neuro"]["capd"]) == total
    assert record["result"]["icans"]["grade"] == icans and record["result"]["icans"]["tool"] == "CAPD"


# ---- result first, plain words, copy and print ---------------------------------------------------------

ICANS3_WITHHOLD = {
    "patient.age_years": "30", "patient.weight_kg": "70", "vitals.temperature": "37", **CRS_NONE,
    **{f"neuro.ice.{k}": v for k, v in (("orientation", "1"), ("naming", "1"), ("commands", "0"), ("writing", "0"), ("attention", "0"))},
    "neuro.consciousness": "alert", **NEURO_NONE,
    "blinatumomab.on": "yes", "blinatumomab.dose.value": "28", "blinatumomab.dose.unit": "mcg/day",
}


def test_the_summary_bar_puts_the_worst_first(client: TestClient) -> None:
    page = post_form(client, ICANS3_WITHHOLD).text
    record = record_of(client, page)
    assert record["result"]["icans"]["grade"] == 3 and record["result"]["actions"][0]["id"] == "BLIN-NEURO-G3-WITHHOLD"
    shown = dict(chips(page))
    assert shown["icans"] == "ICANS 3" and shown["crs"] == "CRS none" and shown["action"] == "Withhold blinatumomab"
    assert shown["flags"] == "No critical flags"
    order = [key for key, _ in chips(page)]
    assert order.index("action") < order.index("icans") < order.index("crs") and order[-1] == "flags"
    assert page.index('id="summary"') < page.index('class="grade-card'), "the summary comes before the details"


def test_an_open_grade_is_summarised_with_its_bound(client: TestClient) -> None:
    fields = {"patient.age_years": "40", "vitals.temperature": "39", **{**ICE_ALL, "neuro.ice.orientation": "2", "neuro.ice.naming": "2"}}
    shown = dict(chips(post_form(client, fields).text))
    assert shown["crs"] == "CRS 1 (could be up to 4)"
    assert shown["icans"] == "ICANS 1 (could be up to 4)"


class VisibleText(HTMLParser):
    """The text a nurse sees: leaves out the record's details, the note's textarea, scripts and titles."""

    SKIP = {"script", "style", "textarea", "title", "code"}

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self._skip: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag in self.SKIP or "record-details" in classes or self._skip:
            self._skip.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def visible(page: str) -> str:
    parser = VisibleText()
    parser.feed(page.split("<body", 1)[1].split(">", 1)[1].split('<form method="post" action="/" ')[0])
    return " ".join(" ".join(parser.text).split())


def test_the_nurse_view_has_no_field_paths_or_rule_ids(client: TestClient) -> None:
    fields = {**ICANS3_WITHHOLD, "crs.oxygen.device": "", "vitals.spo2_pct": "88"}
    fields.pop("neuro.motor")
    page = post_form(client, fields).text
    text = visible(page)
    assert "Withhold blinatumomab" in text
    assert not re.search(r"\b(?:crs|neuro|vitals|blinatumomab|thrombosis|patient)\.[a-z_]+", text), text
    assert not re.search(r"\b[A-Z]+-[A-Z0-9]+-[A-Z0-9-]+\b", text), "no rule or action ids"
    assert not re.search(r"\b[a-z]+_[a-z_]+\b", text), "no snake_case names"
    # they are behind the toggle
    details = page.split('<details class="record-details">', 1)[1].split("</details>", 1)[0]
    assert "BLIN-NEURO-G3-WITHHOLD" in details and "neuro.motor" in details, details


def test_evidence_levels_have_a_legend(client: TestClient) -> None:
    page = post_form(client, ICANS3_WITHHOLD).text
    legend = page.split('id="evidence-legend"', 1)[1].split("</section>", 1)[0]
    for level in ("P", "R2", "R1", "U", "LOCAL"):
        assert f"<dt>{level}</dt>" in legend
    assert 'href="#evidence-legend"' in page


def test_a_low_spo2_on_room_air_is_shown_as_a_note(client: TestClient) -> None:
    fields = {"patient.age_years": "40", "vitals.temperature": "38.5", "vitals.spo2_pct": "88", **CRS_NONE}
    page = post_form(client, fields).text
    card = page.split('aria-label="CRS"', 1)[1].split("</section>", 1)[0]
    assert "Reassess whether oxygen is needed" in html.unescape(card)
    ok = post_form(client, {**fields, "vitals.spo2_pct": "96"}).text
    assert "Reassess whether oxygen is needed" not in html.unescape(ok)


def note_of(page: str) -> str:
    found = re.search(r'<textarea id="note-text" readonly rows="\d+">(.*?)</textarea>', page, re.S)
    assert found is not None
    return html.unescape(found.group(1))


def test_the_note_for_the_chart_has_grades_criteria_gaps_actions_id_time_and_values(client: TestClient) -> None:
    fields = {**ICANS3_WITHHOLD, "crs.hypotension": "", "vitals.temperature": "101.3", "vitals.temperature_unit": "f"}
    page = post_form(client, fields).text
    record = record_of(client, page)
    note = note_of(page)
    icans = record["result"]["icans"]
    assert f"ICANS (ASTCT 2019, ICE): grade {icans['grade']}" in note
    for driver in (d for d in icans["drivers"] if d["drives"]):
        assert driver["criterion"] in note
    assert "Blinatumomab: Withhold blinatumomab. " in note
    assert f"Assessment {record['id']}, {record['result']['evaluated_at'][:16].replace('T', ' ')} UTC" in note
    assert "Temperature: 101.3 °F (38.5 °C)" in note, "°F with its °C"
    assert "Values entered:" in note and "Age: 30 years" in note
    crs_line = next(line for line in note.splitlines() if line.startswith("CRS ("))
    assert "could" not in crs_line or "not reported" in crs_line
    if record["result"]["crs"]["missing"]:
        assert "Not reported: " in note


def test_the_printout_carries_the_values_entered(client: TestClient) -> None:
    page = post_form(client, {"patient.age_years": "6", "vitals.temperature": "100.4", "vitals.temperature_unit": "f",
                              **answers(client.get("/").text, ["Always"] * 4 + ["Never"] * 4)}).text
    entered = page.split('class="entered print-only"', 1)[1].split("</section>", 1)[0]
    assert "<dt>Temperature</dt><dd>100.4 °F (38.0 °C)</dd>" in entered
    assert "<dt>CAPD 1: Makes eye contact</dt><dd>Always (0 points)</dd>" in entered
    assert "<dt>CAPD 5: Restless</dt><dd>Never (0 points)</dd>" in entered
    css = (Path(__file__).resolve().parents[2] / "service" / "static" / "form.css").read_text()
    assert ".print-only { display: block !important; }" in css.rsplit("@media print {", 1)[1]


def test_the_result_links_to_a_patients_course_and_shows_utc_for_local_time(client: TestClient) -> None:
    page = post_form(client, {"patient.age_years": "40", "vitals.temperature": "38.2"}).text
    record = record_of(client, page)
    assert f'href="/patients/start?assessment={record["id"]}"' in page
    stamp = record["result"]["evaluated_at"]
    found = re.search(r'<time datetime="([^"]+)" data-local>([^<]+)</time>', page)
    assert found is not None and found.group(1) == stamp[:19] + "Z"
    assert found.group(2) == stamp[:16].replace("T", " ") + " UTC", "without JavaScript the time says UTC"


def test_clear_asks_first_and_the_result_lands_on_the_summary(client: TestClient) -> None:
    page = client.get("/").text
    assert '<a class="secondary button" href="#clear-confirm" data-clear>Clear</a>' in page
    confirm = page.split('id="clear-confirm"', 1)[1].split("</div>", 1)[0]
    assert '<a class="button" href="/">Yes, clear</a>' in confirm
    assert "#clear-confirm" not in page.split('class="submit-row"')[0]


def test_optional_sections_stay_closed_unless_they_hold_input(client: TestClient) -> None:
    # a browser posts "" for every "not reported" radio of the closed sections
    blank_radios = {name: "" for name, spec in FIELDS.items() if spec.segmented and spec.blank_option}
    page = post_form(client, {**blank_radios, "patient.age_years": "40", "vitals.temperature": "38.2"}).text
    assert '<details class="section" id="section-thrombosis">' in page
    assert '<details class="section" id="section-blinatumomab">' in page
    page = post_form(client, {**blank_radios, "patient.age_years": "9", "vitals.temperature": "38.2", "thrombosis.cvc_present": "yes"}).text
    assert '<details class="section" id="section-thrombosis" open>' in page
    assert '<details class="section" id="section-blinatumomab">' in page
