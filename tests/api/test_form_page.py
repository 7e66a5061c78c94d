"""The bedside form over HTTP (no browser): parsing, plain-language errors, blank = not reported,
the audit record, and the same grades as the API for every shared vignette."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.form import input_names, parse_form
from service.i18n import ENGLISH
from service.pages import Words
from service.settings import ServiceSettings
from tests.form_filling import csrf_token, form_fields, post_form

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "vignettes"
NAMES = input_names()
VIGNETTES = [
    json.loads(line)
    for name in ("crs_icans.jsonl", "thrombosis.jsonl")
    for line in (GOLDEN / name).read_text().splitlines()
    if line.strip()
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('form') / 'audit.sqlite3'}"
    with TestClient(create_app(ServiceSettings(database_url=url))) as test_client:
        yield test_client


def shown(html: str) -> dict[str, Any]:
    """What the result panel shows: grade, status per card; flag and action ids; the record id."""
    cards = dict(
        (title, (grade, status))
        for title, grade, _, status in re.findall(
            r'aria-label="(CRS|ICANS)" data-grade="([^"]*)" data-grade-max="([^"]*)" data-status="([^"]*)"', html
        )
    )
    grade_max = dict(
        re.findall(r'aria-label="(CRS|ICANS)" data-grade="[^"]*" data-grade-max="([^"]*)"', html)
    )
    return {
        "cards": cards,
        "grade_max": grade_max,
        "grade_text": dict(
            re.findall(r'aria-label="(CRS|ICANS)"[^>]*>\s*<h3>.*?</h3>\s*<p class="grade-text">([^<]*)</p>', html, re.S)
        ),
        "undetermined_actions": re.findall(r'data-action="([A-Z0-9-]+)"', html),
        "undetermined_flags": re.findall(r'data-flag="([A-Z0-9-]+)"', html),
        "flags": re.findall(r'data-flag-id="([A-Z0-9-]+)"', html),
        "actions": re.findall(r'<li data-action-id="([A-Z0-9-]+)">', html),
        "id": (re.findall(r'id="assessment-id">([0-9a-f]{32})<', html) or [None])[0],
        "errors": re.findall(r'<p class="error" id="([^"]+)-error">', html),
    }


def test_the_empty_form_is_served_with_labels_for_every_input(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    inputs = set(re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', page.text))
    labelled = set(re.findall(r'<label for="([^"]+)"', page.text))
    assert inputs and inputs <= labelled, inputs - labelled
    assert "https://" not in re.sub(r'href="https://[^"]*"', "", page.text.split("<body>")[0]), "no CDN"


def test_static_files_are_served_by_the_service(client: TestClient) -> None:
    page = client.get("/").text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        assert client.get(asset).status_code == 200


@pytest.mark.parametrize("vignette", VIGNETTES, ids=lambda v: f"{'flags' if 'expected_flags' in v else 'grades'}-{v['id']}")
def test_form_grades_every_vignette_as_the_api_does(client: TestClient, vignette: dict[str, Any]) -> None:
    api = client.post("/v1/assessments", json=vignette["request"]).json()
    page = post_form(client, form_fields(vignette["request"]))
    assert page.status_code == 200, shown(page.text)["errors"]
    seen = shown(page.text)
    for title, part in (("CRS", api["crs"]), ("ICANS", api["icans"])):
        if part is None:
            assert title not in seen["cards"]
        else:
            grade = "" if part["grade"] is None else str(part["grade"])
            assert seen["cards"][title] == (grade, part["status"])
            assert seen["grade_max"][title] == ("" if part["grade_max"] is None else str(part["grade_max"]))
            if part["grade_max"] is not None and (part["grade"] is None or part["grade_max"] > part["grade"]):
                assert f"(up to {part['grade_max']}: " in seen["grade_text"][title]
                for path in {u["input"] for u in part["undetermined_by"] if u["up_to"] > (part["grade"] or -1)}:
                    assert html.escape(NAMES.get(path, path)) in seen["grade_text"][title], path
            else:
                assert "up to" not in seen["grade_text"][title]
    assert seen["flags"] == [f["id"] for f in api["flags"]]
    assert seen["actions"] == [a["id"] for a in api["actions"]]
    assert seen["undetermined_actions"] == [a["id"] for a in api["undetermined_actions"]]
    assert seen["undetermined_flags"] == [f["id"] for f in api["undetermined_flags"]]
    expected = vignette.get("expected", {})
    if "crs_grade" in expected:
        assert seen["cards"]["CRS"][0] == str(expected["crs_grade"])
        assert seen["cards"]["ICANS"][0] == str(expected["icans_grade"])


def test_a_form_grade_is_on_record(client: TestClient) -> None:
    page = post_form(client, {"patient.age_years": "40", "vitals.temperature": "38.2"})
    record_id = shown(page.text)["id"]
    record = client.get(f"/v1/assessments/{record_id}").json()
    assert record["outcome"] == "graded"
    assert record["request"] == {"patient": {"age_years": 40.0}, "vitals": {"temperature_c": 38.2}}
    assert record["result"]["crs"]["grade"] == 1


def test_blank_fields_are_not_reported_never_normal() -> None:
    parsed = parse_form({"patient.age_years": ["40"], "vitals.sbp_mmhg": [""], "crs.hypotension": [""], "crs.vasopressors": []})
    assert parsed.data == {"patient": {"age_years": 40.0}} and not parsed.errors


def test_none_ticked_means_an_empty_list() -> None:
    parsed = parse_form({"patient.age_years": ["40"], "crs.vasopressors": ["none"], "neuro.icp_signs": ["none"]})
    assert parsed.data["crs"]["vasopressors"] == [] and parsed.data["neuro"]["icp_signs"] == []


def test_missing_domains_are_shown_as_not_reported(client: TestClient) -> None:
    page = post_form(client, {"patient.age_years": "40", "vitals.temperature": "38.5"}).text
    assert "<strong>Not reported:</strong> hypotension, oxygen" in page
    assert 'Not reported</p>\n    <p>Nothing for this grade was entered' in page  # the ICANS card


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"patient.age_years": "forty"}, "patient.age_years", "Enter a number"),
        ({"patient.age_years": ""}, "patient.age_years", "Required."),
        ({"patient.age_years": "40", "vitals.temperature": "50"}, "vitals.temperature", "Must be at most 45 °C."),
        ({"patient.age_years": "40", "vitals.temperature": "50", "vitals.temperature_unit": "f"}, "vitals.temperature", "Must be at least 77 °F."),
        ({"patient.age_years": "40", "vitals.temperature": "nan"}, "vitals.temperature", "Enter a number"),
        ({"patient.age_years": "40", "vitals.temperature": "38.5.1"}, "vitals.temperature", "Enter a number"),
        ({"patient.age_years": "9", "thrombosis.alt_U_L": "1,200"}, "thrombosis.alt_U_L", "no separators"),
        ({"patient.age_years": "40", "crs.oxygen.device": "nasal_cannula"}, "crs.oxygen.flow_l_min", "flow"),
        ({"patient.age_years": "40", "crs.vasopressors": ["none", "vasopressin"]}, "crs.vasopressors", "cannot be ticked together"),
        ({"patient.age_years": "40", "neuro.ice.orientation": "4"}, "neuro.ice.naming", "all five ICE tasks"),
        ({"patient.age_years": "7", **{f"neuro.ice.{k}": "1" for k in ("orientation", "naming", "commands", "writing", "attention")}}, "neuro.ice", "CAPD applies"),
        ({"patient.age_years": "40", "neuro.seizure": "sometimes"}, "neuro.seizure", "Choose one of the options"),
        ({"patient.age_years": "40", "patient.height": "180"}, "", "no field"),
        ({"patient.age_years": "40", "blinatumomab.dose.value": "28"}, "blinatumomab.dose.unit", "both the dose and its unit"),
    ],
)
def test_errors_are_next_to_their_field_in_plain_words_and_input_is_kept(
    client: TestClient, fields: dict[str, Any], field: str, message: str
) -> None:
    page = post_form(client, fields)
    assert page.status_code == 422
    if field:
        block = re.search(rf'<p class="error" id="{re.escape(field)}-error">(.*?)</p>', page.text)
        assert block is not None, shown(page.text)["errors"]
        assert message in block.group(1)
    else:
        assert message in page.text
    assert 'id="error-summary"' in page.text and shown(page.text)["id"] is None, "no grade with an error"
    for name, value in fields.items():
        if isinstance(value, str) and value and name in ("patient.age_years", "vitals.temperature"):
            assert f'name="{name}" value="{value}"' in page.text


def test_a_body_that_is_not_a_form_is_400_not_500(client: TestClient) -> None:
    page = client.post("/", content=b"\xff\xfe", headers={"content-type": "multipart/form-data; boundary=x"})
    assert page.status_code == 400 and "could not be read" in page.text


@pytest.mark.slow  # a service of its own
def test_with_api_keys_the_form_needs_a_session_opened_once_with_a_key(tmp_path: Path) -> None:
    key = "k" * 20
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", api_keys=[key])
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert client.get("/").headers["location"] == "/login" and client.get("/").status_code == 303
        refused = client.post("/", data={"patient.age_years": "40", "vitals.temperature": "38"})
        assert refused.status_code == 303 and refused.headers["location"] == "/login"
        login = client.get("/login")
        assert login.status_code == 200 and 'type="password"' in login.text
        wrong = client.post("/login", data={"key": "w" * 20, "csrf_token": csrf_token(login.text)})
        assert wrong.status_code == 401 and "not valid" in wrong.text and "aegrade_session" not in client.cookies
        no_token = client.post("/login", data={"key": key})
        assert no_token.status_code == 403 and "aegrade_session" not in client.cookies
        signed_in = client.post("/login", data={"key": key, "csrf_token": csrf_token(client.get("/login").text)})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"].lower()
        assert "aegrade_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/").status_code == 200
        assert post_form(client, {"patient.age_years": "40", "vitals.temperature": "38"}).status_code == 200
        # the session opens the form only: the API still wants its bearer key
        assert client.get("/v1/rulesets").status_code == 401
        # a forged or tampered session is no session
        value = client.cookies["aegrade_session"]
        forger = TestClient(client.app, follow_redirects=False)
        forger.cookies.set("aegrade_session", value[:-1] + ("0" if value[-1] != "0" else "1"))
        assert forger.get("/").status_code == 303
        out = client.post("/logout", data={"csrf_token": csrf_token(client.get("/").text)})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert client.get("/").status_code == 303


def test_a_post_without_the_pages_csrf_token_is_refused_and_not_recorded(client: TestClient) -> None:
    """Without keys too: a cross-site form cannot write audit records. The values come back to be sent again."""
    fields = {"patient.age_years": "40", "vitals.temperature": "38.2"}
    client.get("/")  # the cookie the token is bound to
    for token in (None, "0" * 64, "not-a-token"):
        page = client.post("/", data=fields if token is None else {**fields, "csrf_token": token})
        assert page.status_code == 403 and shown(page.text)["id"] is None
        assert 'name="patient.age_years" value="40"' in page.text and "could not be verified" in page.text
        assert post_form(client, fields).status_code == 200  # sent again from the page: graded
    # a token from another browser (another cookie) does not fit this one's cookie
    other = TestClient(client.app)
    other_token = csrf_token(other.get("/").text)
    assert client.post("/", data={**fields, "csrf_token": other_token}).status_code == 403
    cookie = client.get("/").headers.get("set-cookie")
    assert cookie is None, "the CSRF cookie is set once, not on every page"


# ---- v1.1: grades with their bound, what could apply, attribution ---------------------------------


def test_an_incomplete_grade_is_shown_with_its_bound_never_bare(client: TestClient) -> None:
    page = post_form(client, {"patient.age_years": "40", "vitals.temperature": "39"}).text
    seen = shown(page)
    assert seen["cards"]["CRS"] == ("1", "incomplete") and seen["grade_max"]["CRS"] == "4"
    text = seen["grade_text"]["CRS"]
    assert text.startswith("Grade 1 (up to 4: ") and text.endswith(" not reported)")
    for path in ("crs.hypotension", "crs.oxygen"):
        assert path not in text, "the nurse view names inputs in words"
        assert html.escape(NAMES[path]) in text
    assert "<title>CRS grade 1 (up to 4) / ICANS - " in page


def test_a_settled_grade_shows_no_bound(client: TestClient) -> None:
    fields = {"patient.age_years": "40", "vitals.temperature": "39", "crs.hypotension": "no",
              "crs.vasopressors": "none", "crs.oxygen.device": "none"}
    seen = shown(post_form(client, fields).text)
    assert seen["cards"]["CRS"] == ("1", "graded") and seen["grade_max"]["CRS"] == "1"
    assert seen["grade_text"]["CRS"] == "Grade 1"


def test_not_assessable_with_a_bound_says_what_is_missing(client: TestClient) -> None:
    fields = {"patient.age_years": "40", "vitals.temperature": "37.2", "crs.vasopressors": "norepinephrine",
              "crs.oxygen.device": "none"}
    seen = shown(post_form(client, fields).text)
    assert seen["cards"]["CRS"] == ("", "not_assessable")
    assert seen["grade_text"]["CRS"] == (
        "Not assessable (up to 3: Fever masked by treatment given for CRS (tocilizumab, a corticosteroid or an "
        "antipyretic) not reported)"
    )
    # answering the question the bound names settles it
    seen = shown(post_form(client, {**fields, "crs.fever_masked": "no"}).text)
    assert seen["cards"]["CRS"] == ("0", "no_crs") and "up to" not in seen["grade_text"]["CRS"]


def test_fever_masked_is_yes_no_or_not_reported() -> None:
    assert "fever_masked" not in parse_form({"patient.age_years": ["40"], "crs.fever_masked": [""]}).data.get("crs", {})
    assert parse_form({"patient.age_years": ["40"], "crs.fever_masked": ["no"]}).data["crs"] == {"fever_masked": False}
    assert parse_form({"patient.age_years": ["40"], "crs.fever_masked": ["yes"]}).data["crs"] == {"fever_masked": True}


def test_undetermined_actions_and_notes_are_shown(client: TestClient) -> None:
    # 30 kg doses in mcg/m2/day: a dose charted in mcg/day with no height leaves the step open, with a note
    fields = {"patient.age_years": "30", "patient.weight_kg": "30", **{f"neuro.ice.{k}": v for k, v in
              (("orientation", "2"), ("naming", "1"), ("commands", "1"), ("writing", "0"), ("attention", "1"))},
              "blinatumomab.on": "yes", "blinatumomab.dose.value": "9", "blinatumomab.dose.unit": "mcg/day"}
    api = client.post("/v1/assessments", json={"patient": {"age_years": 30, "weight_kg": 30}, "neuro": {"ice_score": 5},
                                                "blinatumomab": {"dose": {"value": 9, "unit": "mcg/day"}}}).json()
    assert api["undetermined_actions"] and api["notes"]
    page = post_form(client, fields).text
    assert shown(page)["undetermined_actions"] == [a["id"] for a in api["undetermined_actions"]]
    first = api["undetermined_actions"][0]
    item = re.search(rf'data-action="{first["id"]}">(.*?)</li>', page, re.S)
    assert item is not None and "Could apply: " in item.group(1)
    assert "missing " + html.escape(", ".join(dict.fromkeys(NAMES.get(m, m) for m in first["missing"]))) in item.group(1)
    for note in api["notes"]:  # in plain words: no request paths
        assert f"<li>{html.escape(Words(ENGLISH).plain(note), quote=True)}</li>" in page
    assert shown(page)["actions"] == [], "an action that could apply is not listed as one that does"


def test_the_attribution_checkboxes_are_offered_and_sent(client: TestClient) -> None:
    page = client.get("/").text
    for name, words in (
        ("crs.fever_other_cause", "Fever explained by another cause (e.g. documented bacteraemia)"),
        ("neuro.encephalopathy_other_cause", "explained by another cause"),
        ("neuro.seizure_other_cause", "Seizure explained by another cause"),
        ("neuro.motor_other_cause", "Weakness explained by another cause"),
        ("neuro.icp_other_cause", "explained by another cause"),
    ):
        assert re.search(rf'<input type="checkbox" id="{re.escape(name)}" name="{re.escape(name)}"', page), name
        label = re.search(rf'<label for="{re.escape(name)}">([^<]*)</label>', page)
        assert label is not None and words in label.group(1)
    fields = {"patient.age_years": "40", "vitals.temperature": "39", "crs.fever_other_cause": "yes",
              "crs.fever_masked": "no", "crs.hypotension": "no", "crs.vasopressors": "none", "crs.oxygen.device": "none"}
    assert parse_form({k: [v] for k, v in fields.items()}).data["crs"]["fever_other_cause"] is True
    seen = shown(post_form(client, fields).text)
    assert seen["cards"]["CRS"] == ("0", "no_crs"), "a fever from another cause does not count"
    seizure = {"patient.age_years": "40", "neuro.seizure": "resolved_rapidly", "neuro.seizure_other_cause": "yes"}
    api = client.post("/v1/assessments", json={"patient": {"age_years": 40},
                                                "neuro": {"seizure": "resolved_rapidly", "seizure_other_cause": True}}).json()
    seen = shown(post_form(client, seizure).text)
    assert seen["cards"]["ICANS"] == ("" if api["icans"]["grade"] is None else str(api["icans"]["grade"]), api["icans"]["status"])
    assert seen["cards"]["ICANS"][0] != "3", "the attributed seizure does not grade ICANS 3"


@pytest.mark.parametrize(
    ("asked", "goes_to"),
    [
        ("/assessments/" + "a" * 32, "/assessments/" + "a" * 32),
        ("/patients/demo-1?lang=zh_CN", "/patients/demo-1?lang=zh_CN"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/a/../../x", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
def test_signing_in_returns_to_the_page_asked_for_on_this_site_only(asked: str, goes_to: str) -> None:
    from service.pages import safe_next

    assert safe_next(asked) == goes_to


@pytest.mark.slow  # a service of its own
def test_a_card_link_followed_before_signing_in_comes_back_after_it(tmp_path: Path) -> None:
    key = "k" * 20
    record = "/assessments/" + "b" * 32
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", api_keys=[key])
    with TestClient(create_app(settings), follow_redirects=False) as client:
        to_login = client.get(record)
        assert to_login.status_code == 303 and to_login.headers["location"] == "/login?next=%2Fassessments%2F" + "b" * 32
        page = client.get(to_login.headers["location"])
        assert f'name="next" value="{record}"' in page.text
        signed_in = client.post("/login", data={"key": key, "csrf_token": csrf_token(page.text), "next": record})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == record
        assert client.get("/login?next=%2F%2Fevil.example").headers["location"] == "/"  # signed in: straight on, never off-site
    with TestClient(create_app(settings), follow_redirects=False) as stranger:
        page = stranger.get("/login?next=%2F%2Fevil.example")
        assert 'name="next" value="/"' in page.text
        elsewhere = stranger.post("/login", data={"key": key, "csrf_token": csrf_token(page.text), "next": "//evil.example"})
        assert elsewhere.status_code == 303 and elsewhere.headers["location"] == "/"
