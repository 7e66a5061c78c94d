"""CDS Hooks round trip (discovery, call, feedback) against the CDS Hooks 2.0 schema written from the
specification (tests/fixtures/cds_hooks/), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "fixtures" / "cds_hooks" / "cds-hooks-2.0.schema.json").read_text())


def _validate(instance: Any, part: str) -> None:
    schema = {**SCHEMA[part], "$defs": SCHEMA["$defs"]}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)


def _call(vignette: str, *, hook: str = "patient-view", minutes_ago: int = 10) -> dict[str, Any]:
    """The vignette's fixture Bundle as a CDS Hooks prefetch, its times moved to just now."""
    text = (ROOT / "fixtures" / "fhir" / f"{vignette}.json").read_text()
    when = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    text = text.replace("2026-06-01T10:00:00Z", when.isoformat().replace("+00:00", "Z"))
    text = text.replace("2026-06-01T09:", (when - timedelta(hours=1)).strftime("%Y-%m-%dT%H:"))
    text = text.replace("2026-06-01T08:", (when - timedelta(hours=2)).strftime("%Y-%m-%dT%H:"))
    resources = [e["resource"] for e in json.loads(text)["entry"]]
    patient = resources[0]
    born = date_years_ago(when, int(json.loads(text)["entry"][0]["resource"]["birthDate"][:4]))
    patient["birthDate"] = born
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    vitals = [r for r in observations if r["code"]["coding"][0]["system"] == LOINC]
    def search(rs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in rs]}

    call: dict[str, Any] = {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
        "prefetch": {
            "patient": patient,
            "vitals": search(vitals),
            "assessments": search([r for r in observations if r not in vitals]),
            "medications": search([r for r in resources if r["resourceType"] in ("MedicationAdministration", "Medication")]),
        },
    }
    if hook == "order-sign":
        call["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": []}
    return call


def date_years_ago(when: datetime, fixture_year: int) -> str:
    """The birth date that keeps the fixture's age (fixtures are dated 2026-06-01) at `when`."""
    years = 2026 - fixture_year
    return when.date().replace(year=when.year - years).isoformat()


def test_discovery_conforms_and_lists_both_hooks(client: TestClient) -> None:
    body = client.get("/cds-services").json()
    _validate(body, "discovery")
    assert {s["hook"] for s in body["services"]} == {"patient-view", "order-sign"}
    for service in body["services"]:
        assert set(service["prefetch"]) == {"patient", "vitals", "assessments", "medications"}
        assert all("{{context.patientId}}" in template for template in service["prefetch"].values())
        prefetch = service["prefetch"]
        # the BP panel is asked for by its own code (a `code` search does not match components)
        assert f"{LOINC}|85354-9" in prefetch["vitals"].split("code=")[1].split("&")[0].split(",")
        # administrations come with their Medications; no search of our CodeSystem, which no EHR holds
        assert "&_include=MedicationAdministration:medication" in prefetch["medications"]
        assert not any(AEGRADE_SYSTEM in template for template in prefetch.values())
        assert "extension" not in service


def test_round_trip_call_cards_and_feedback(client: TestClient, shared_database_url: str) -> None:
    response = client.post("/cds-services/aegrade-toxicity", json=_call("V06"))
    assert response.status_code == 200, response.text
    body = response.json()
    _validate(body, "response")
    cards = {c["summary"].split(" ")[0]: c for c in body["cards"]}
    crs, icans = cards["CRS"], cards["ICANS"]
    assert crs["indicator"] == "critical" and "grade 3" in crs["summary"]
    assert icans["indicator"] == "warning" and "grade 2" in icans["summary"]
    assert crs["source"]["label"].startswith("aegrade astct-crs@")
    assert "high-flow nasal cannula" in crs["detail"] and "orders nothing" in crs["detail"]
    for card in body["cards"]:
        assert len(card["summary"]) < 140 and "suggestions" not in card
        # no AEGRADE_PUBLIC_BASE_URL: no link to the assessment (never one built from the Host
        # header), and the card says so with the assessment's id
        assert [link["url"] for link in card["links"]] == ["https://doi.org/10.1016/j.bbmt.2018.12.758"]
        assert "AEGRADE_PUBLIC_BASE_URL" in card["detail"] and "testserver" not in json.dumps(card)
        assessment_id = card["detail"].rsplit("Its id is ", 1)[1].rstrip(".")
        assert client.get(f"/v1/assessments/{assessment_id}").json()["request"]["cds_hook"] == "patient-view"

    feedback = {
        "feedback": [
            {"card": crs["uuid"], "outcome": "accepted", "outcomeTimestamp": datetime.now(timezone.utc).isoformat()},
            {"card": icans["uuid"], "outcome": "overridden", "outcomeTimestamp": datetime.now(timezone.utc).isoformat(),
             "overrideReason": {"reason": {"system": "http://example.org/reasons", "code": "already-treated"}, "userComment": "on steroids"}},
        ]
    }
    _validate(feedback, "feedback")
    stored = client.post("/cds-services/aegrade-toxicity/feedback", json=feedback)
    assert stored.status_code == 200 and stored.json() == {"stored": 2}
    engine = sqlalchemy.create_engine(shared_database_url)
    with engine.connect() as connection:  # the shared store holds other tests' feedback: this test's cards only
        rows = connection.execute(
            sqlalchemy.text("SELECT card, outcome FROM cds_feedback WHERE card IN (:a, :b) ORDER BY id"),
            {"a": crs["uuid"], "b": icans["uuid"]},
        ).all()
    engine.dispose()
    assert [(r.card, r.outcome) for r in rows] == [(crs["uuid"], "accepted"), (icans["uuid"], "overridden")]


def test_order_sign_gives_the_same_cards(client: TestClient) -> None:
    for service in ("aegrade-toxicity", "aegrade-toxicity-order-sign"):
        body = client.post(f"/cds-services/{service}", json=_call("V12", hook="order-sign")).json()
        _validate(body, "response")
        assert [c["summary"] for c in body["cards"]] == ["CRS grade 3 by ASTCT 2019 criteria from the charted data"]


def _fever_masked(call: dict[str, Any], value: bool) -> dict[str, Any]:
    """The call with an aegrade fever-masked Observation charted (the record then says it)."""
    when = datetime.now(timezone.utc) - timedelta(minutes=10)
    observation = {
        "resourceType": "Observation", "id": "fever-masked", "status": "final",
        "code": {"coding": [{"system": AEGRADE_SYSTEM, "code": "fever-masked"}]},
        "subject": {"reference": f"Patient/{call['context']['patientId']}"},
        "effectiveDateTime": when.isoformat().replace("+00:00", "Z"), "valueBoolean": value,
    }
    call["prefetch"]["assessments"]["entry"].append({"resource": observation})
    return call


def test_settled_grade_zero_gives_no_card(client: TestClient) -> None:
    body = client.post("/cds-services/aegrade-toxicity", json=_fever_masked(_call("V01"), False)).json()
    assert body == {"cards": []}


def test_an_undetermined_grade_gives_a_card_with_its_bound(client: TestClient) -> None:
    """37.4 °C on a nasal cannula at 4 L/min, fever masking not charted: CRS is not assessable, and
    grade 2 is possible. The card says so (v1.1), and says what to chart."""
    body = client.post("/cds-services/aegrade-toxicity", json=_call("V21")).json()
    _validate(body, "response")
    [card] = [c for c in body["cards"] if c["summary"].startswith("CRS")]
    assert card["indicator"] == "info"
    assert card["summary"] == "CRS undetermined: not assessable (up to 2: crs.fever_masked not reported) until charted (ASTCT 2019)"
    assert len(card["summary"]) < 140
    assert "**CRS: not assessable (up to 2: crs.fever_masked not reported)**" in card["detail"]
    assert "- crs.fever_masked: up to grade 2" in card["detail"]
    # charted as not masked, it is settled at grade 0: no card
    settled = client.post("/cds-services/aegrade-toxicity", json=_fever_masked(_call("V21"), False)).json()
    assert [c for c in settled["cards"] if c["summary"].startswith("CRS")] == []


def test_an_incomplete_grade_card_shows_the_bound(client: TestClient) -> None:
    """V36: CRS grade 2 charted (fever, hypotension), vasopressors not charted: up to 4."""
    body = client.post("/cds-services/aegrade-toxicity", json=_call("V36")).json()
    [card] = [c for c in body["cards"] if c["summary"].startswith("CRS")]
    assert card["indicator"] == "warning"
    assert card["summary"] == "CRS grade 2 (up to 4: crs.vasopressors not reported) by ASTCT 2019 criteria from the charted data"
    assert "**CRS: grade 2 (up to 4: crs.vasopressors not reported)**" in card["detail"]


def test_a_long_bound_keeps_the_summary_under_140_characters() -> None:
    from aegrade.models import CrsResult, UndeterminedInput
    from service.cds_hooks import _domain_summary

    inputs = [UndeterminedInput(input=f"neuro.some_long_input_name_{i}", up_to=4) for i in range(8)]
    domain = CrsResult(scale="ASTCT 2019", ruleset="astct-crs@1.1.0", grade=1, grade_max=4, undetermined_by=inputs,
                       status="incomplete", drivers=[], domains={}, missing=[])
    summary = _domain_summary("CRS", domain, 1)
    assert len(summary) < 140 and "grade 1 (up to 4)" in summary
    undetermined = domain.model_copy(update={"grade": None, "status": "not_assessable"})
    summary = _domain_summary("CRS", undetermined, 1)
    assert len(summary) < 140 and "undetermined" in summary and "up to 4" in summary


def test_observations_older_than_the_window_give_one_card_saying_nothing_was_charted(client: TestClient) -> None:
    """Nothing usable in the window: not graded and not on record, but never silence. One info card
    says CRS and ICANS cannot be assessed and why; it is stored, so feedback on it is taken."""
    body = client.post("/cds-services/aegrade-toxicity", json=_call("V06", minutes_ago=5 * 60)).json()
    _validate(body, "response")
    [card] = body["cards"]
    assert card["indicator"] == "info"
    assert card["summary"] == "CRS and ICANS: not assessable, no usable observation in the last 4 h"
    assert "not grade 0" in card["detail"]
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": datetime.now(timezone.utc).isoformat()}]}
    assert client.post("/cds-services/aegrade-toxicity/feedback", json=feedback).json() == {"stored": 1}
    # 4 h is AEGRADE_FHIR_WINDOW_HOURS: charted just inside it, the same record is graded
    inside = client.post("/cds-services/aegrade-toxicity", json=_call("V06", minutes_ago=4 * 60 - 5)).json()
    assert "not assessable" not in inside["cards"][0]["summary"]


@pytest.mark.parametrize("key", ["patient", "vitals", "assessments", "medications"])
def test_a_prefetch_not_sent_without_fhir_server_is_412(client: TestClient, key: str) -> None:
    call = _call("V06")
    del call["prefetch"][key]
    response = client.post("/cds-services/aegrade-toxicity", json=call)
    assert response.status_code == 412
    assert key in response.json()["detail"]["message"] and "fhirServer" in response.json()["detail"]["message"]


def test_a_null_patient_is_one_card_saying_nothing_was_graded_without_the_age(client: TestClient) -> None:
    call = _call("V06")
    call["prefetch"]["patient"] = None
    response = client.post("/cds-services/aegrade-toxicity", json=call)
    assert response.status_code == 200, response.text
    _validate(response.json(), "response")
    [card] = response.json()["cards"]
    assert card["indicator"] == "info" and "no Patient data" in card["summary"] and len(card["summary"]) < 140
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": datetime.now(timezone.utc).isoformat()}]}
    assert client.post("/cds-services/aegrade-toxicity/feedback", json=feedback).json() == {"stored": 1}


@pytest.mark.parametrize("key", ["vitals", "assessments", "medications"])
def test_a_null_prefetch_is_no_data_not_412(client: TestClient, key: str) -> None:
    """CDS Hooks 2.0: null means the client has no such data. It is read as nothing charted (unknown,
    never normal): V06 without its vitals cannot show the CRS grade 3 it has with them."""
    call = _call("V06")
    call["prefetch"][key] = None
    response = client.post("/cds-services/aegrade-toxicity", json=call)
    assert response.status_code == 200, response.text
    _validate(response.json(), "response")
    summaries = [c["summary"] for c in response.json()["cards"]]
    full = [c["summary"] for c in client.post("/cds-services/aegrade-toxicity", json=_call("V06")).json()["cards"]]
    if key == "vitals":
        assert "CRS grade 3 by ASTCT 2019 criteria from the charted data" in full
        assert "CRS grade 3 by ASTCT 2019 criteria from the charted data" not in summaries
        assert any(s.startswith("CRS") for s in summaries)  # said, not silent


def test_a_prefetched_patient_that_is_not_the_context_patient_is_422(client: TestClient) -> None:
    call = _call("V06")
    call["context"]["patientId"] = "someone-else"
    response = client.post("/cds-services/aegrade-toxicity", json=call)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "prefetch", "patient"]


def test_feedback_for_a_card_never_issued_is_422_and_nothing_is_stored(client: TestClient) -> None:
    feedback = {"feedback": [{"card": "00000000-0000-4000-8000-000000000000", "outcome": "accepted",
                              "outcomeTimestamp": datetime.now(timezone.utc).isoformat()}]}
    response = client.post("/cds-services/aegrade-toxicity/feedback", json=feedback)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "feedback", 0, "card"]


def test_an_unknown_service_or_hook_is_refused(client: TestClient) -> None:
    assert client.post("/cds-services/something-else", json=_call("V06")).status_code == 404  # no such service
    call = _call("V06")
    call["hook"] = "encounter-start"
    assert client.post("/cds-services/aegrade-toxicity", json=call).status_code == 422
