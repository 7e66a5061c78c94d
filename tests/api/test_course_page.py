"""The patient's course pages over HTTP (service/course.py): writes through the episode API's grading
path, access and CSRF as for the bedside form, errors inline, and the chart's SVG."""

from __future__ import annotations

import re
import sqlite3
import uuid
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path
from urllib.parse import urlencode
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from service.app import create_app
from service.settings import ServiceSettings

SVG = "{http://www.w3.org/2000/svg}"
DAY = "2026-01-10"


def new_patient() -> str:
    return f"test-course-{uuid.uuid4().hex[:12]}"


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden field {name}"
    return found.group(1)


def post_observation(client: TestClient, patient: str, fields: dict[str, Any], *, at: str) -> Response:
    page = client.get(f"/patients/{patient}")
    data = {"csrf_token": hidden(page.text, "csrf_token"), "submission": hidden(page.text, "submission"), "observed_at": at, **fields}
    return client.post(f"/patients/{patient}/observations", data=data, follow_redirects=False)


def post_treatment(client: TestClient, patient: str, fields: dict[str, str]) -> Response:
    page = client.get(f"/patients/{patient}")
    data = {"csrf_token": hidden(page.text, "csrf_token"), "submission": hidden(page.text, "submission"), **fields}
    return client.post(f"/patients/{patient}/treatments", data=data, follow_redirects=False)


FEVER_HYPOTENSION = {
    "patient.age_years": "9", "vitals.temperature": "39.2", "vitals.temperature_unit": "c", "vitals.sbp_mmhg": "78",
    "crs.hypotension": "yes", "crs.vasopressors": "none", "crs.oxygen.device": "none",
}
AFEBRILE_ON_OXYGEN = {
    "patient.age_years": "9", "vitals.temperature": "37.1", "vitals.temperature_unit": "c", "vitals.sbp_mmhg": "96",
    "crs.vasopressors": "none", "crs.oxygen.device": "nasal_cannula", "crs.oxygen.flow_l_min": "2",
}


def chart(html: str) -> ET.Element:
    found = re.search(r"<svg.*?</svg>", html, re.S)
    assert found, "no chart"
    return ET.fromstring(found.group(0))


def chart_points(root: ET.Element, key: str) -> list[str | None]:
    return [c.get("data-value") for c in root.iter(f"{SVG}circle") if f"point-{key}" in c.get("class", "")]


def crs_band(root: ET.Element) -> list[tuple[str | None, str | None]]:
    group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "band band-crs")
    return [(r.get("data-observation"), r.get("data-grade")) for r in group.iter(f"{SVG}rect") if r.get("data-observation")]


def test_a_course_is_followed_on_one_page_as_the_episode_api_records_it(client: TestClient) -> None:
    """Three observations and a tocilizumab dose: the third observation is afebrile, graded with fever
    masked, and shown as masked (timeline, table, chart) with the treatment that masked it."""
    patient = new_patient()
    empty = client.get(f"/patients/{patient}")
    assert empty.status_code == 200 and 'id="empty-course"' in empty.text
    assert client.get(f"/v1/patients/{patient}/episode").status_code == 404  # looking writes nothing

    first = post_observation(client, patient, FEVER_HYPOTENSION, at=f"{DAY}T10:00")
    assert first.status_code == 303, first.text
    location = first.headers["location"]
    assert location.startswith(f"/patients/{patient}?added=")
    shown = client.get(location)
    assert "Observation of 2026-01-10 10:00 UTC recorded: CRS grade 2" in shown.text
    second = post_observation(client, patient, {**FEVER_HYPOTENSION, "vitals.temperature": "38.6", "vitals.sbp_mmhg": "92"}, at=f"{DAY}T12:00")
    assert second.status_code == 303
    dose = post_treatment(client, patient, {"agent": "tocilizumab", "administered_at": f"{DAY}T14:00", "dose_mg": "240"})
    assert dose.status_code == 303 and "?treatment=" in dose.headers["location"]
    third = post_observation(client, patient, AFEBRILE_ON_OXYGEN, at=f"{DAY}T20:00")
    assert third.status_code == 303

    episode = client.get(f"/v1/patients/{patient}/episode").json()
    assert [e["crs"]["grade"] for e in episode["timeline"]] == [2, 2, 2]
    masked_id = episode["timeline"][2]["observation_id"]
    assert episode["timeline"][2]["fever_masking"]["agent"] == "tocilizumab"
    assert [t["agent"] for t in episode["treatments"]] == ["tocilizumab"]

    page = client.get(f"/patients/{patient}")
    assert page.status_code == 200
    html = page.text
    # the timeline: observations and the dose in time order, the masked one marked with its treatment
    timeline = re.search(r'<ol class="timeline" id="timeline">(.*?)</ol>', html, re.S)
    assert timeline
    items = re.findall(r'<li class="([^"]+)"', timeline.group(1))
    assert items == ["observation", "observation", "treatment", "observation masked"]
    masked_item = re.search(rf'data-observation="{masked_id}">(.*?)</li>', timeline.group(1), re.S)
    assert masked_item
    text = unescape(re.sub(r"<[^>]+>", "", masked_item.group(1)))
    assert "Fever masked" in text and "Fever masked by Tocilizumab, given 2026-01-10 14:00 UTC" in text
    assert "CRS grade 2" in text
    # the data table, the chart's text alternative
    row = re.search(rf'<tr data-observation="{masked_id}">(.*?)</tr>', html, re.S)
    assert row and "masked by Tocilizumab" in row.group(1) and "Nasal cannula" in row.group(1)
    assert "37.1 °C" in row.group(1)
    # the chart: the values and grades of the course, one treatment mark
    root = chart(html)
    assert root.get("role") == "img"
    assert chart_points(root, "temperature") == ["39.2", "38.6", "37.1"]
    assert chart_points(root, "sbp") == ["78", "92", "96"]
    assert chart_points(root, "oxygen") == ["0", "0", "2"]
    assert crs_band(root) == [(e["observation_id"], "2") for e in episode["timeline"]]
    treatments = [line.get("data-agent") for line in root.iter(f"{SVG}line") if line.get("class") == "treatment"]
    assert treatments == ["tocilizumab"]
    masked = [c.get("data-observation") for c in root.iter(f"{SVG}circle") if "masked" in c.get("class", "")]
    assert masked == [masked_id]
    # each observation is on record, as through the API
    record = client.get(f"/v1/assessments/{episode['timeline'][0]['assessment_id']}").json()
    assert record["request"]["patient_id"] == patient and record["outcome"] in ("graded", "regraded")
    # the new observation's form starts with the patient's age
    assert 'name="patient.age_years" value="9"' in html


def test_the_page_follows_the_language_and_needs_no_script(client: TestClient) -> None:
    patient = new_patient()
    page = client.get(f"/patients/{patient}")
    assert '<html lang="en">' in page.text and "<script" not in page.text
    assert '<html lang="zh-CN">' in client.get(f"/patients/{patient}?lang=zh-CN").text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_a_post_without_the_pages_csrf_token_records_nothing(client: TestClient) -> None:
    patient = new_patient()
    page = client.get(f"/patients/{patient}")
    other_token = hidden(TestClient(client.app).get(f"/patients/{patient}").text, "csrf_token")
    for token in (None, "", "0" * 64, other_token):
        fields = {"observed_at": f"{DAY}T10:00", **FEVER_HYPOTENSION}
        if token is not None:
            fields["csrf_token"] = token
        refused = client.post(f"/patients/{patient}/observations", data=fields, follow_redirects=False)
        assert refused.status_code == 403 and "could not be verified" in refused.text
        assert 'name="vitals.temperature" value="39.2"' in refused.text  # kept, to be sent again
        treatment = {"agent": "tocilizumab", "administered_at": f"{DAY}T11:00"}
        if token is not None:
            treatment["csrf_token"] = token
        assert client.post(f"/patients/{patient}/treatments", data=treatment, follow_redirects=False).status_code == 403
    start = client.post("/patients/start", data={"assessment": "0" * 32, "patient_id": patient}, follow_redirects=False)
    assert start.status_code == 404  # no such assessment (checked before anything else)
    assert client.get(f"/v1/patients/{patient}/episode").status_code == 404
    # sent again from the page: recorded
    assert post_observation(client, patient, FEVER_HYPOTENSION, at=f"{DAY}T10:00").status_code == 303
    assert hidden(page.text, "csrf_token")


def test_a_form_sent_twice_is_recorded_once(client: TestClient) -> None:
    patient = new_patient()
    page = client.get(f"/patients/{patient}")
    data = {"csrf_token": hidden(page.text, "csrf_token"), "submission": hidden(page.text, "submission"),
            "observed_at": f"{DAY}T10:00", **FEVER_HYPOTENSION}
    first = client.post(f"/patients/{patient}/observations", data=data, follow_redirects=False)
    again = client.post(f"/patients/{patient}/observations", data=data, follow_redirects=False)
    assert first.status_code == again.status_code == 303 and first.headers["location"] == again.headers["location"]
    assert len(client.get(f"/v1/patients/{patient}/episode").json()["timeline"]) == 1
    # the same form changed and sent again: not recorded over the first, and said so
    changed = client.post(f"/patients/{patient}/observations", data={**data, "vitals.temperature": "40.1"}, follow_redirects=False)
    assert changed.status_code == 409 and "already sent" in changed.text
    assert len(client.get(f"/v1/patients/{patient}/episode").json()["timeline"]) == 1


@pytest.mark.parametrize(
    ("fields", "at", "field", "message"),
    [
        ({**FEVER_HYPOTENSION, "patient.age_years": "forty"}, f"{DAY}T10:00", "patient.age_years", "Enter a number"),
        (FEVER_HYPOTENSION, "", "observed_at", "Enter the time"),
        (FEVER_HYPOTENSION, "10/01/2026 10:00", "observed_at", "YYYY-MM-DD HH:MM"),
        (FEVER_HYPOTENSION, "2999-01-01T10:00", "observed_at", "in the future"),
        ({**FEVER_HYPOTENSION, "crs.oxygen.device": "nasal_cannula"}, f"{DAY}T10:00", "crs.oxygen.flow_l_min", ""),
        (
            {**FEVER_HYPOTENSION, "neuro.ice.orientation": "4", "neuro.ice.naming": "3", "neuro.ice.commands": "1",
             "neuro.ice.writing": "1", "neuro.ice.attention": "1"},
            f"{DAY}T10:00", "neuro.ice", "CAPD",
        ),
    ],
    ids=["not-a-number", "no-time", "time-not-iso", "future", "flow-missing", "wrong-tool"],
)
def test_observation_errors_are_shown_inline_and_nothing_is_recorded(
    client: TestClient, fields: dict[str, str], at: str, field: str, message: str
) -> None:
    patient = new_patient()
    page = post_observation(client, patient, fields, at=at)
    assert page.status_code == 422, page.text[:500]
    assert f'<p class="error" id="obs-{field}-error">' in page.text
    error = re.search(rf'<p class="error" id="obs-{re.escape(field)}-error">(.*?)</p>', page.text, re.S)
    assert error and message in unescape(error.group(1))
    assert f'href="#obs-{field}"' in page.text  # the summary links to the field
    assert 'aria-invalid="true"' in page.text or f'aria-describedby="obs-{field}-error"' in page.text
    assert f'value="{fields["patient.age_years"]}"' in page.text  # what was typed is kept
    assert client.get(f"/v1/patients/{patient}/episode").status_code == 404


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"agent": "", "administered_at": f"{DAY}T10:00"}, "agent", "Choose the treatment"),
        ({"agent": "aspirin", "administered_at": f"{DAY}T10:00"}, "agent", "Choose the treatment"),
        ({"agent": "tocilizumab", "administered_at": ""}, "administered_at", "Enter the time"),
        ({"agent": "tocilizumab", "administered_at": f"{DAY}T10:00", "dose_mg": "8mg"}, "dose_mg", "as a number"),
        ({"agent": "tocilizumab", "administered_at": f"{DAY}T10:00", "dose_mg": "1,200"}, "dose_mg", "as a number"),  # 1.2 or 1200?
        ({"agent": "tocilizumab", "administered_at": f"{DAY}T10:00", "dose_mg": "0"}, "dose_mg", "more than 0"),
        ({"agent": "tocilizumab", "administered_at": f"{DAY}T10:00", "dose_unit": "mg/kg"}, "dose_mg", "Enter the dose"),
        ({"agent": "tocilizumab", "administered_at": f"{DAY}T10:00", "dose_mg": "8", "dose_unit": "pints"}, "dose_unit", "units"),
    ],
    ids=["no-agent", "unknown-agent", "no-time", "dose-with-unit", "dose-1,200", "dose-zero", "unit-without-dose", "unknown-unit"],
)
def test_treatment_errors_are_shown_inline_and_nothing_is_recorded(
    client: TestClient, fields: dict[str, str], field: str, message: str
) -> None:
    patient = new_patient()
    page = post_treatment(client, patient, fields)
    assert page.status_code == 422, page.text[:500]
    error = re.search(rf'<p class="error" id="treatment-{field}-error">(.*?)</p>', page.text, re.S)
    assert error and message in unescape(error.group(1))
    assert client.get(f"/v1/patients/{patient}/episode").status_code == 404


def test_treatment_dose_just_above_zero_and_with_a_decimal_comma_is_recorded(client: TestClient) -> None:
    patient = new_patient()
    answer = post_treatment(client, patient, {"agent": "dexamethasone", "administered_at": f"{DAY}T10:00", "dose_mg": "0,5", "dose_unit": "mg/kg"})
    assert answer.status_code == 303
    recorded = client.get(f"/v1/patients/{patient}/episode").json()["treatments"]
    assert [(t["agent"], t["dose_mg"], t["dose_unit"]) for t in recorded] == [("dexamethasone", 0.5, "mg/kg")]


def test_a_patient_id_not_of_the_apis_form_is_not_found(client: TestClient) -> None:
    for bad in ("-starts-with-dash", "a" * 65, "has space", "név"):
        assert client.get(f"/patients/{bad}").status_code == 404
        assert client.post(f"/patients/{bad}/observations", data={}).status_code == 404
    assert client.get(f"/patients/{'a' * 64}").status_code == 200  # at the limit


def test_the_patients_page_opens_a_course_by_id(client: TestClient) -> None:
    assert client.get("/patients").status_code == 200
    opened = client.get("/patients", params={"patient_id": " ward3-bed12 "}, follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/patients/ward3-bed12"
    refused = client.get("/patients", params={"patient_id": "Jane Doe"})
    assert refused.status_code == 422 and "pseudonymous" in refused.text and 'value="Jane Doe"' in refused.text


def test_an_assessment_from_the_form_joins_a_course_at_its_time(client: TestClient) -> None:
    graded = client.post("/v1/assessments", json={
        "patient": {"age_years": 34}, "vitals": {"temperature_c": 38.6, "sbp_mmhg": 108},
        "crs": {"fever_masked": False, "vasopressors": [], "oxygen": {"device": "nasal_cannula", "flow_l_min": 2}},
    }).json()
    start = client.get("/patients/start", params={"assessment": graded["id"]})
    assert start.status_code == 200
    default_time = hidden(start.text, "observed_at")
    assert default_time == graded["evaluated_at"][:16]
    patient = new_patient()
    data = {"csrf_token": hidden(start.text, "csrf_token"), "submission": hidden(start.text, "submission"),
            "assessment": graded["id"], "patient_id": patient, "observed_at": f"{DAY}T09:30"}
    added = client.post("/patients/start", data=data, follow_redirects=False)
    assert added.status_code == 303 and added.headers["location"].startswith(f"/patients/{patient}?added=")
    timeline = client.get(f"/v1/patients/{patient}/episode").json()["timeline"]
    assert [(e["observed_at"], e["crs"]["grade"]) for e in timeline] == [("2026-01-10T09:30:00Z", 2)]
    record = client.get(f"/v1/assessments/{timeline[0]['assessment_id']}").json()
    assert record["request"]["observation"]["vitals"] == {"temperature_c": 38.6, "sbp_mmhg": 108}
    # errors inline: a name is not a pseudonymous id; no time
    wrong = client.post("/patients/start", data={**data, "patient_id": "Jane Doe", "observed_at": ""}, follow_redirects=False)
    assert wrong.status_code == 422
    assert 'id="patient_id-error"' in wrong.text and 'id="observed_at-error"' in wrong.text
    # an id that is no recorded assessment
    assert client.get("/patients/start", params={"assessment": "f" * 32}).status_code == 404
    assert client.get("/patients/start", params={"assessment": "../etc"}).status_code == 404


@pytest.mark.slow  # a service of its own
def test_with_api_keys_the_course_pages_need_the_forms_session(tmp_path: Path) -> None:
    key = "k" * 20
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", api_keys=[key])
    with TestClient(create_app(settings), follow_redirects=False) as client:
        patient = new_patient()
        for path in ("/patients", f"/patients/{patient}", "/patients/start?assessment=" + "0" * 32):
            answer = client.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/login?" + urlencode({"next": path}), path
        for path in (f"/patients/{patient}/observations", f"/patients/{patient}/treatments", "/patients/start"):
            answer = client.post(path, data={"observed_at": f"{DAY}T10:00", **FEVER_HYPOTENSION})
            assert answer.status_code == 303 and answer.headers["location"] == "/login", path
        bearer = {"Authorization": f"Bearer {key}"}
        assert client.get(f"/v1/patients/{patient}/episode", headers=bearer).status_code == 404  # nothing recorded
        login = client.get("/login")
        signed_in = client.post("/login", data={"key": key, "csrf_token": hidden(login.text, "csrf_token")})
        assert signed_in.status_code == 303
        assert client.get(f"/patients/{patient}").status_code == 200
        assert post_observation(client, patient, FEVER_HYPOTENSION, at=f"{DAY}T10:00").status_code == 303
        assert len(client.get(f"/v1/patients/{patient}/episode", headers=bearer).json()["timeline"]) == 1
        # the session's CSRF token, not another's
        page = client.get(f"/patients/{patient}")
        forged = client.post(
            f"/patients/{patient}/treatments",
            data={"csrf_token": "0" * 64, "agent": "tocilizumab", "administered_at": f"{DAY}T11:00"},
        )
        assert forged.status_code == 403 and hidden(page.text, "csrf_token")
        assert client.get(f"/v1/patients/{patient}/episode", headers=bearer).json()["treatments"] == []


@pytest.mark.slow  # a service of its own, whose store is then broken
def test_a_store_that_cannot_be_read_is_a_503_page_never_a_500(tmp_path: Path) -> None:
    database = tmp_path / "a.sqlite3"
    with TestClient(create_app(ServiceSettings(database_url=f"sqlite:///{database}")), follow_redirects=False) as client:
        patient = new_patient()
        assert post_observation(client, patient, FEVER_HYPOTENSION, at=f"{DAY}T10:00").status_code == 303
        graded = client.post("/v1/assessments", json={"patient": {"age_years": 40}, "vitals": {"temperature_c": 38.5}}).json()
        page = client.get(f"/patients/{patient}").text
        form = {"csrf_token": hidden(page, "csrf_token"), "submission": hidden(page, "submission"),
                "observed_at": f"{DAY}T11:00", **FEVER_HYPOTENSION}
        with sqlite3.connect(database) as broken:
            broken.execute("ALTER TABLE observations RENAME TO observations_gone")
            broken.execute("ALTER TABLE assessments RENAME TO assessments_gone")
        for answer in (
            client.get(f"/patients/{patient}"),
            client.get("/patients/start", params={"assessment": graded["id"]}),
            client.post(f"/patients/{patient}/observations", data=form),
        ):
            assert answer.status_code == 503, answer.text[:300]
            assert "could not be" in answer.text and answer.headers["content-type"].startswith("text/html")


@pytest.mark.slow  # a service of its own, whose grading process's evaluators disagree
def test_the_course_grades_in_the_grading_process_as_every_route(tmp_path: Path) -> None:
    """The web process's engine agrees with itself; the grading process's does not: a course write
    that graded anywhere but in the grading process would be recorded."""
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}")
    app = create_app(settings, grader_engine_factory="tests.api.faults:disagreeing_engine")
    with TestClient(app, follow_redirects=False) as client:
        patient = new_patient()
        answer = post_observation(client, patient, FEVER_HYPOTENSION, at=f"{DAY}T10:00")
        assert answer.status_code == 500 and "could not give a trustworthy grade" in answer.text
        assert 'name="vitals.temperature" value="39.2"' in answer.text
        assert client.get(f"/v1/patients/{patient}/episode").status_code == 404
