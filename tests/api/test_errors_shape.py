"""One error shape: every answer that is not 2xx is {"code", "message", "detail"} (README: Errors),
but on /v1/fhir/*, where it is the same error as a FHIR OperationOutcome (service/fhir_native.py).

`detail` stays what v1 answered: {"code", "message"} for a problem, the list of {loc, msg, type}
for the per-field errors (400 json_invalid, 422). The OperationOutcome carries the same: the code in
its error-code extension, the message as its narrative, one issue per field (tests/api/error_bodies.py
reads both). Also here: malformed ids are 404, a JSON syntax error names its line and column, a
request with nothing to grade is refused and not stored (a CDS call with nothing usable answers one
info card saying so), and every request example of the OpenAPI document is valid and grades.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.api.error_bodies import error_code, error_message, field_errors, is_outcome, problem, where

REQUEST = {"patient": {"age_years": 40}, "vitals": {"temperature_c": 38.5}}
ONLY_PATIENT = {"patient": {"age_years": 7}}
SECTIONS = ("vitals", "crs", "neuro", "thrombosis", "blinatumomab")


def _shaped(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The body, checked against the one shape (an OperationOutcome on /v1/fhir/*, our body
    elsewhere, nothing else); `code` when given."""
    assert response.status_code == status, response.text
    body = response.json()
    assert is_outcome(body) == response.request.url.path.startswith("/v1/fhir/"), body
    if status in (400, 422):
        field_errors(response)
    else:
        problem(response)
    if code is not None:
        assert error_code(response) == code, body
    return body  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def locked(shared_database_url: str) -> Any:
    with TestClient(create_app(ServiceSettings(database_url=shared_database_url, api_keys=["k" * 32]))) as client:
        yield client


def test_every_kind_of_error_has_the_one_shape(client: TestClient, locked: TestClient) -> None:
    json_headers = {"content-type": "application/json"}
    _shaped(client.post("/v1/assessments", content=b"{", headers=json_headers), 400, "json_invalid")
    _shaped(client.post("/v1/assessments", content=b"x=1", headers={"content-type": "text/plain"}), 400, "json_invalid")
    _shaped(client.post("/v1/assessments", content=b"\xef\xbb\xbf{}", headers=json_headers), 400, "json_invalid")
    _shaped(client.post("/v1/assessments", json={"patient": {"age_years": "old"}}), 422, "invalid_request")
    contradiction = {"patient": {"age_years": 40}, "vitals": {"temperature_c": 38, "temperature_f": 100}}
    _shaped(client.post("/v1/assessments", json=contradiction), 422, "invalid_assessment")
    duplicate = b'{"patient": {"age_years": 40, "age_years": 41}, "vitals": {}}'
    _shaped(client.post("/v1/assessments", content=duplicate, headers=json_headers), 422, "duplicate_key")
    _shaped(client.post("/v1/fhir/assessments", json={"resourceType": "Bundle", "type": "collection", "entry": []}), 422)
    _shaped(client.post("/v1/fhir/assessments", content=b"{", headers=json_headers), 400, "json_invalid")
    _shaped(client.get("/v1/fhir/no/such/route"), 404, "not_found")
    _shaped(client.post("/v1/fhir/assessments", content=b"{}", headers={**json_headers, "content-encoding": "gzip"}), 415)
    _shaped(client.get("/v1/assessments/" + "0" * 32), 404, "not_found")
    _shaped(client.get("/no/such/route"), 404, "not_found")
    _shaped(client.delete("/v1/rulesets"), 405, "method_not_allowed")
    _shaped(client.post("/v1/assessments", content=b"{}", headers={**json_headers, "content-encoding": "gzip"}), 415)
    _shaped(client.post("/v1/assessments", content=b"{}", headers={"content-type": "application/json; charset=latin-1"}), 415)
    _shaped(client.post("/v1/assessments", content=b"x" * 70_000, headers=json_headers), 413, "body_too_large")
    _shaped(client.post("/cds-services/aegrade-toxicity", json={
        "hook": "patient-view", "hookInstance": "x", "context": {"userId": "u", "patientId": "p"}, "prefetch": {},
    }), 412, "prefetch_missing")
    _shaped(locked.get("/v1/rulesets"), 401, "unauthorized")


def test_the_405_names_the_method_and_what_is_allowed(client: TestClient) -> None:
    body = _shaped(client.put("/v1/assessments"), 405, "method_not_allowed")
    assert "PUT" in body["message"] and "POST" in body["message"]


def test_a_validation_message_summarises_the_fields(client: TestClient) -> None:
    bad = {"patient": {"age_years": 400}, "vitals": {"temperature_c": "hot"}}
    body = _shaped(client.post("/v1/assessments", json=bad), 422, "invalid_request")
    assert body["message"].startswith("2 errors: ")
    assert "patient.age_years" in body["message"] and "vitals.temperature_c" in body["message"]
    assert {tuple(e["loc"]) for e in body["detail"]} == {("body", "patient", "age_years"), ("body", "vitals", "temperature_c")}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/assessments/not-an-id",
        "/v1/assessments/" + "A" * 32,
        "/v1/patients/semi;colon/episode",
        "/v1/patients/" + "a" * 65 + "/episode",
        "/v1/patients/-leading-dash/episode",
    ],
)
def test_a_malformed_id_is_404_not_422(client: TestClient, path: str) -> None:
    body = _shaped(client.get(path), 404, "not_found")
    assert "semi;colon" not in body["message"]  # the path parameter is named, never its value (a patient id)


def test_a_malformed_id_keeps_its_pattern_in_the_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    [parameter] = document["paths"]["/v1/assessments/{assessment_id}"]["get"]["parameters"]
    assert parameter["schema"]["pattern"] == "^[0-9a-f]{32}$"
    assert "422" not in document["paths"]["/v1/assessments/{assessment_id}"]["get"]["responses"]


@pytest.mark.parametrize(
    ("route", "extra"),
    [
        ("/v1/assessments", {}),
        ("/v1/patients/p-syntax/observations", {}),
        ("/v1/patients/p-syntax/treatments", {}),
        ("/v1/fhir/assessments", {}),
        ("/cds-services/aegrade-toxicity", {}),
    ],
)
def test_a_json_syntax_error_names_the_line_the_column_and_what_was_expected(
    client: TestClient, route: str, extra: dict[str, str]
) -> None:
    text = b'{\n  "patient": {"age_years": 40},\n  "vitals": {"temperature_c": 38.5,}\n}'
    response = client.post(route, content=text, headers={"content-type": "application/json", **extra})
    body = _shaped(response, 400, "json_invalid")
    expected = "JSON syntax error at line 3, column 36 (character 69): Expecting property name enclosed in double quotes"
    # a character offset is no path in the body: an OperationOutcome's issue has no expression then
    offset = None if is_outcome(body) else ["body", 69]
    assert field_errors(body) == [("json_invalid", offset, expected)]
    assert error_message(body) == expected


def _count(url: str, marker: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sqlalchemy.text("SELECT count(*) FROM assessments WHERE CAST(request AS TEXT) LIKE :m"), {"m": f"%{marker}%"}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_request_with_only_patient_is_422_naming_the_sections_and_is_not_stored(client: TestClient, shared_database_url: str) -> None:
    marker = 7 + uuid.uuid4().int % 1000 / 1e6  # an age no other test sends, to find a record if one were stored
    body = _shaped(client.post("/v1/assessments", json={"patient": {"age_years": marker}}), 422, "nothing_to_grade")
    [entry] = body["detail"]
    assert entry["loc"] == ["body"] and entry["type"] == "nothing_to_grade"
    assert all(section in entry["msg"] for section in SECTIONS)
    assert _count(shared_database_url, str(marker)) == 0
    # an empty section is a section: "sent, nothing reported" is graded (as not assessable)
    assert client.post("/v1/assessments", json={"patient": {"age_years": 7}, "vitals": {}}).status_code == 200


def test_an_observation_with_only_patient_is_refused_and_stores_no_episode(client: TestClient) -> None:
    patient = f"p-empty-{uuid.uuid4().hex[:12]}"
    response = client.post(f"/v1/patients/{patient}/observations", json={**ONLY_PATIENT, "observed_at": "2026-06-01T08:00:00Z"})
    assert _shaped(response, 422, "nothing_to_grade")["detail"][0]["loc"] == ["body"]
    assert client.get(f"/v1/patients/{patient}/episode").status_code == 404


def test_a_bundle_that_maps_to_nothing_is_422_nothing_to_grade(client: TestClient) -> None:
    stale = {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "3150-0"}]},  # FiO2: recorded, never graded
        "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2026-06-01T10:00:00Z",
        "valueQuantity": {"value": 40, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
    }
    bundle = {
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "id": "p", "birthDate": "1990-03-15"}}, {"resource": stale}],
    }
    body = _shaped(client.post("/v1/fhir/assessments", json=bundle), 422, "nothing_to_grade")
    [(kind, named, msg)] = field_errors(body)
    assert kind == "nothing_to_grade" and named == where(body, ["body"]) == "Bundle"
    assert all(section in msg for section in SECTIONS) and "vitals" in error_message(body)


def test_a_cds_call_with_nothing_usable_answers_one_info_card_saying_so_and_stores_nothing(
    client: TestClient, shared_database_url: str
) -> None:
    hook_instance = f"empty-{uuid.uuid4().hex}"
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    call = {
        "hook": "patient-view",
        "hookInstance": hook_instance,
        "context": {"userId": "Practitioner/example", "patientId": "p-empty"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "p-empty", "birthDate": "1990-03-15"},
                     "vitals": empty, "assessments": empty, "medications": empty},
    }
    response = client.post("/cds-services/aegrade-toxicity", json=call)
    cards = response.json()["cards"]
    assert response.status_code == 200 and [c["summary"] for c in cards] == ["CRS and ICANS: not assessable, no usable observation in the last 4 h"]
    assert cards[0]["indicator"] == "info"
    assert _count(shared_database_url, hook_instance) == 0  # not graded: no assessment stored


def _examples(document: dict[str, Any], path: str) -> list[dict[str, Any]]:
    content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return [example["value"] for example in content["examples"].values()]


def test_every_operation_has_a_description_and_every_body_an_example(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary") and operation.get("description"), f"{method.upper()} {path}"
            if "requestBody" in operation:
                content = operation["requestBody"]["content"]["application/json"]
                assert content.get("examples"), f"{method.upper()} {path} has no request example"


@pytest.mark.parametrize(
    ("path", "sent_to"),
    [
        ("/v1/assessments", "/v1/assessments"),
        ("/v1/fhir/assessments", "/v1/fhir/assessments"),
        ("/cds-services/{service_id}", "/cds-services/aegrade-toxicity"),
        ("/v1/patients/{patient_id}/observations", "/v1/patients/{patient}/observations"),
        ("/v1/patients/{patient_id}/treatments", "/v1/patients/{patient}/treatments"),
    ],
)
def test_every_request_example_is_valid_and_grades(client: TestClient, path: str, sent_to: str) -> None:
    document = client.get("/openapi.json").json()
    patient = f"p-example-{uuid.uuid4().hex[:12]}"
    for example in _examples(document, path):
        response = client.post(sent_to.format(patient=patient), json=example)
        assert response.status_code == 200, response.text
        body = response.json()
        if path in ("/v1/assessments", "/v1/fhir/assessments", "/v1/patients/{patient_id}/observations"):
            assert body["crs"]["grade"] is not None and body["crs"]["grade"] >= 1, body["crs"]
        if path == "/cds-services/{service_id}":
            assert any(card["summary"].startswith("CRS grade") for card in body["cards"]), body
