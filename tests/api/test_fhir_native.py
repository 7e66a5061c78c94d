"""FHIR-native answers (service/fhir_native.py, service/fhir_routes.py): the CapabilityStatement,
every error on /v1/fhir/* as an OperationOutcome, content negotiation, the grades as Observations,
and the CodeSystem's properties. Every resource produced is validated with fhir.resources (R4B
models; the elements used here are unchanged from R4), and every code checked against its value set.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from hypothesis import given
from hypothesis import strategies as st
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationdefinition import OperationDefinition
from fhir.resources.R4B.operationoutcome import OperationOutcome

from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, UCUM
from service.app import create_app
from service.errors import NotAcceptable
from service.fhir_native import (
    fhir_string,
    ASSESSMENT_ID_SYSTEM,
    ERROR_CODE_EXTENSION,
    ERROR_SYSTEM,
    FHIR_JSON,
    FhirErrors,
    capability_statement,
    fhir_path,
    is_fhir_path,
    negotiate,
    operation_outcome,
)
from service.fhir_routes import BUNDLE_EXAMPLES
from service.middleware import Hygiene
from service.settings import ServiceSettings

# FHIR R4 IssueType (http://hl7.org/fhir/ValueSet/issue-type), all 31 codes, and IssueSeverity.
ISSUE_TYPES = {
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired", "forbidden",
    "suppressed", "processing", "not-supported", "duplicate", "multiple-matches", "not-found", "deleted", "too-long",
    "code-invalid", "extension", "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational",
}
SEVERITIES = {"fatal", "error", "warning", "information"}
WHEN = "2026-06-01T10:00:00Z"
KEY = "fhir-native-test-key-0123456789ab"


def _outcome(response: Any, status: int, code: str) -> dict[str, Any]:
    """The answer, checked: the status, FHIR's media type, a valid OperationOutcome whose issue types
    are IssueType codes, each issue carrying our code, and our answer's `code` in the extension."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == FHIR_JSON
    body = response.json()
    OperationOutcome.model_validate(body)
    assert body["resourceType"] == "OperationOutcome" and body["issue"]
    assert body["extension"] == [{"url": ERROR_CODE_EXTENSION, "valueCode": code}]
    assert body["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    for issue in body["issue"]:
        assert issue["code"] in ISSUE_TYPES and issue["severity"] in SEVERITIES, issue
        [coding] = issue["details"]["coding"]
        assert coding["system"] == ERROR_SYSTEM and coding["code"] and issue["details"]["text"]
    return body  # type: ignore[no-any-return]


def _issue_codes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["code"], i["details"]["coding"][0]["code"]) for i in body["issue"]]


def _obs(oid: str, system: str, code: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/p-native"},
        "code": {"coding": [{"system": system, "code": code}]}, "effectiveDateTime": WHEN, **value,
    }


def _celsius(value: float) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "system": UCUM, "code": "Cel", "unit": "Cel"}}


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    patient = {"resourceType": "Patient", "id": "p-native", "birthDate": "1990-01-01"}
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in (patient, *resources)]}


FHIR = {"accept": FHIR_JSON}


@pytest.fixture(scope="module")
def locked(shared_database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(ServiceSettings(database_url=shared_database_url, api_keys=[KEY]))) as client:
        yield client


# ---- CapabilityStatement -----------------------------------------------------------------------


def test_metadata_is_an_r4_capability_statement_of_this_instance(client: TestClient) -> None:
    response = client.get("/v1/fhir/metadata")
    assert response.status_code == 200 and response.headers["content-type"] == FHIR_JSON
    body = response.json()
    CapabilityStatement.model_validate(body)
    assert (body["fhirVersion"], body["kind"], body["status"]) == ("4.0.1", "instance", "active")
    assert set(body["format"]) == {FHIR_JSON, "json"} and body["date"] and body["implementation"]["description"]
    [rest] = body["rest"]
    assert rest["mode"] == "server"
    assert [(r["type"], [i["code"] for i in r["interaction"]]) for r in rest["resource"]] == [
        ("CodeSystem", ["read"]), ("OperationDefinition", ["read"])
    ]
    [operation] = rest["operation"]
    assert operation["name"] == "assessments" and "/v1/fhir/assessments" in operation["documentation"]
    # the operation's definition is served, and is that operation
    definition = client.get("/v1/fhir/OperationDefinition/assessments")
    assert definition.status_code == 200 and definition.headers["content-type"] == FHIR_JSON
    OperationDefinition.model_validate(definition.json())
    assert definition.json()["url"] == operation["definition"] and definition.json()["code"] == operation["name"]
    assert [(p["name"], p["use"], p["type"]) for p in definition.json()["parameter"]] == [("bundle", "in", "Bundle"), ("return", "out", "Bundle")]
    assert "No authentication" in rest["security"]["description"]
    assert "url" not in body["implementation"]  # no AEGRADE_PUBLIC_BASE_URL: never taken from the Host header


def test_the_capability_statement_names_the_public_url_when_set() -> None:
    body = capability_statement(api_keys=True, public_base_url="https://tox.example.org/aegrade/")
    CapabilityStatement.model_validate(body)
    assert body["implementation"]["url"] == "https://tox.example.org/aegrade/v1/fhir"
    assert "Bearer" in body["rest"][0]["security"]["description"]


@pytest.mark.slow
def test_metadata_is_open_when_keys_are_on_and_the_rest_is_not(locked: TestClient) -> None:
    response = locked.get("/v1/fhir/metadata")
    assert response.status_code == 200 and "Bearer" in response.json()["rest"][0]["security"]["description"]
    assert locked.get("/v1/fhir/OperationDefinition/assessments").status_code == 200
    refused = locked.get("/v1/fhir/CodeSystem/assessment")
    body = _outcome(refused, 401, "unauthorized")
    assert _issue_codes(body) == [("login", "unauthorized")] and refused.headers["www-authenticate"] == "Bearer"
    _outcome(locked.post("/v1/fhir/assessments", json=_bundle(), headers=FHIR), 401, "unauthorized")
    # outside /v1/fhir the one shape stays
    assert set(locked.get("/v1/rulesets").json()) == {"code", "message", "detail"}


# ---- OperationOutcome for every error on /v1/fhir/* ---------------------------------------------


def test_every_kind_of_error_on_the_fhir_routes_is_an_operation_outcome(client: TestClient) -> None:
    json_headers = {"content-type": "application/json"}
    body = _outcome(client.post("/v1/fhir/assessments", content=b"{", headers=json_headers), 400, "json_invalid")
    assert _issue_codes(body) == [("structure", "json_invalid")] and "expression" not in body["issue"][0]  # a character offset
    assert "line 1, column 2" in body["issue"][0]["details"]["text"]
    _outcome(client.post("/v1/fhir/assessments", content=b"x=1", headers={"content-type": "text/plain"}), 400, "json_invalid")
    duplicate = b'{"resourceType": "Bundle", "type": "collection", "type": "collection"}'
    body = _outcome(client.post("/v1/fhir/assessments", content=duplicate, headers=json_headers), 422, "duplicate_key")
    assert body["issue"][0]["code"] == "structure" and body["issue"][0]["expression"] == ["Bundle.type"]
    body = _outcome(client.get("/v1/fhir/Patient/p1"), 404, "not_found")
    assert _issue_codes(body) == [("not-found", "not_found")]
    response = client.get("/v1/fhir/assessments")
    body = _outcome(response, 405, "method_not_allowed")
    assert _issue_codes(body) == [("not-supported", "method_not_allowed")] and "POST" in response.headers["allow"]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    limit = getattr(settings, "max_fhir_body_bytes", settings.max_body_bytes)  # the FHIR routes' own limit, when set
    body = _outcome(client.post("/v1/fhir/assessments", content=b"x" * (limit + 1), headers=json_headers), 413, "body_too_large")
    assert _issue_codes(body) == [("too-costly", "body_too_large")]
    gzip = {**json_headers, "content-encoding": "gzip"}
    _outcome(client.post("/v1/fhir/assessments", content=b"{}", headers=gzip), 415, "unsupported_content_encoding")
    latin = {"content-type": "application/fhir+json; charset=latin-1"}
    body = _outcome(client.post("/v1/fhir/assessments", content=b"{}", headers=latin), 415, "unsupported_charset")
    assert _issue_codes(body) == [("not-supported", "unsupported_charset")]


def test_a_field_error_names_its_element_by_fhirpath(client: TestClient) -> None:
    child = _bundle(_obs("ice", AEGRADE_SYSTEM, "ice-total", {"valueInteger": 7}))
    child["entry"][0]["resource"]["birthDate"] = "2017-03-01"  # 9 years old: CAPD applies, not ICE
    body = _outcome(client.post("/v1/fhir/assessments", json=child), 422, "fhir_input_invalid")
    assert [(i["code"], i["details"]["coding"][0]["code"], i["expression"]) for i in body["issue"]] == [
        ("business-rule", "wrong_tool", ["Bundle.entry[1].resource"])
    ]
    assert "Observation/ice" in body["issue"][0]["details"]["text"]
    not_a_resource = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": "Patient/1"}]}
    body = _outcome(client.post("/v1/fhir/assessments", json=not_a_resource), 422, "invalid_request")
    assert [(i["code"], i["expression"]) for i in body["issue"]] == [("value", ["Bundle.entry[0].resource"])]
    wrong_type = {**_bundle(), "type": "document"}  # the schema's enum: a code outside it
    body = _outcome(client.post("/v1/fhir/assessments", json=wrong_type), 422, "invalid_request")
    assert [(i["code"], i["expression"]) for i in body["issue"]] == [("code-invalid", ["Bundle.type"])]
    nothing = _bundle()
    body = _outcome(client.post("/v1/fhir/assessments", json=nothing), 422, "fhir_input_invalid")
    assert [i["code"] for i in body["issue"]] == ["required"] and body["issue"][0]["expression"] == ["Bundle"]


def test_the_errors_of_other_routes_keep_the_one_shape(client: TestClient) -> None:
    for response in (
        client.post("/v1/assessments", content=b"{", headers={"content-type": "application/json"}),
        client.get("/v1/fhirx"),
        client.get("/v1/assessments/" + "0" * 32),
    ):
        assert set(response.json()) == {"code", "message", "detail"}, response.text


def test_the_operation_outcome_keeps_the_media_type_asked_for(client: TestClient) -> None:
    response = client.get("/v1/fhir/nothing-here", headers={"accept": "application/json"})
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("query", "accept"),
    [("?_format=xml", None), ("?_format=text/turtle", None), ("", "application/fhir+xml"), ("", "application/xml, text/turtle")],
)
def test_a_format_that_is_not_served_is_406(client: TestClient, query: str, accept: str | None) -> None:
    headers = {"accept": accept} if accept else {}
    for response in (client.get(f"/v1/fhir/metadata{query}", headers=headers), client.post(f"/v1/fhir/assessments{query}", json=_bundle(), headers=headers)):
        body = _outcome(response, 406, NotAcceptable.code)
        assert _issue_codes(body) == [("not-supported", "not_acceptable")]
        assert response.headers["x-content-type-options"] == "nosniff"  # answered through the service's hygiene layer


def _raising_app(message: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError(message)

    return app


def test_an_unexpected_error_is_an_operation_outcome_without_its_message() -> None:
    """The real layers (FhirErrors around Hygiene), around an application that raises."""
    client = TestClient(FhirErrors(Hygiene(_raising_app("patient Jane Doe"))), raise_server_exceptions=False)  # no lifespan
    response = client.get("/v1/fhir/metadata")
    body = _outcome(response, 500, "internal_error")
    assert _issue_codes(body) == [("exception", "internal_error")] and body["issue"][0]["severity"] == "fatal"
    assert "Jane" not in response.text
    outside = client.get("/v1/rulesets")
    assert outside.status_code == 500 and outside.json()["code"] == "internal_error"


def test_a_head_request_gets_no_body() -> None:
    client = TestClient(FhirErrors(Hygiene(_raising_app("x"))), raise_server_exceptions=False)  # no lifespan
    response = client.head("/v1/fhir/metadata")
    assert response.status_code == 500 and response.content == b""


def test_service_errors_map_to_issue_types() -> None:
    cases = {
        (503, "store_unavailable"): ("no-store", "fatal"),
        (503, "grading_unavailable"): ("timeout", "fatal"),
        (500, "evaluator_disagreement"): ("exception", "fatal"),
        (500, "engine_lost_result"): ("exception", "fatal"),
        (408, "body_timeout"): ("timeout", "error"),
        (409, "idempotency_key_reused"): ("conflict", "error"),
        (418, "something_new"): ("processing", "error"),
    }
    for (status, code), (issue_type, severity) in cases.items():
        body = operation_outcome(status, {"code": code, "message": "m", "detail": {"code": code, "message": "m"}})
        OperationOutcome.model_validate(body)
        [issue] = body["issue"]
        assert (issue["code"], issue["severity"], issue["details"]["coding"][0]["code"]) == (issue_type, severity, code)
    not_ours = operation_outcome(502, "<html>bad gateway</html>")
    OperationOutcome.model_validate(not_ours)
    assert not_ours["extension"][0]["valueCode"] == "http_502" and not_ours["issue"][0]["code"] == "exception"


def test_every_service_error_has_an_issue_type_of_its_own() -> None:
    """A new error of service/errors.py must be given its IssueType, not fall to the default."""
    from service.errors import SERVICE_ERROR_CODES

    answered = {code: cls for code, cls in SERVICE_ERROR_CODES.items() if code not in ("service_error", "grading_failed")}
    for code, cls in answered.items():
        [issue] = operation_outcome(cls.status, {"code": code, "message": "m", "detail": {"code": code, "message": "m"}})["issue"]
        default = "exception" if cls.status >= 500 else "processing"
        assert issue["code"] != default or code in ("internal_error",), (code, issue["code"])


def test_a_message_is_escaped_in_the_narrative() -> None:
    body = operation_outcome(422, {"code": "c", "message": "<script>&", "detail": [{"loc": ["body"], "msg": "<b>", "type": "x"}]})
    OperationOutcome.model_validate(body)
    assert "<script>" not in body["text"]["div"] and "&lt;script&gt;&amp;" in body["text"]["div"]
    assert body["issue"][0]["details"]["text"] == "<b>"  # plain text elsewhere


_locs = st.lists(st.one_of(st.text(max_size=12), st.integers(min_value=0, max_value=600)), max_size=6).map(lambda parts: ["body", *parts])
_codes = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)
_entries = st.fixed_dictionaries({"loc": _locs, "msg": st.text(max_size=40), "type": st.one_of(st.just(""), _codes)})


@given(
    status=st.integers(min_value=400, max_value=599),
    code=_codes,
    message=st.text(max_size=80),
    detail=st.one_of(st.none(), st.lists(_entries, min_size=1, max_size=4)),
)
def test_any_error_body_becomes_a_valid_operation_outcome_keeping_everything(
    status: int, code: str, message: str, detail: list[dict[str, Any]] | None
) -> None:
    """Whatever the error (text with markup, keys no FHIRPath identifier can spell), the rewrite is
    valid FHIR and loses neither the code, nor a message, nor a field."""
    body = operation_outcome(status, {"code": code, "message": message, "detail": detail if detail is not None else {"code": code, "message": message}})
    OperationOutcome.model_validate(body)
    assert body["extension"][0]["valueCode"] == code
    assert all(issue["code"] in ISSUE_TYPES for issue in body["issue"])
    if detail is None:
        assert [i["details"].get("text", "") for i in body["issue"]] == [fhir_string(message)]  # FHIR strings: no form feeds
    else:
        assert [i["details"].get("text", "") for i in body["issue"]] == [fhir_string(e["msg"]) for e in detail]
        assert [i["details"]["coding"][0]["code"] for i in body["issue"]] == [e["type"] or "invalid" for e in detail]
        for entry, issue in zip(detail, body["issue"]):
            if issue.get("expression"):
                assert issue["expression"][0].startswith("Bundle") and isinstance(entry["loc"][0], str)


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [("/v1/fhir", "", True), ("/v1/fhir/metadata", "", True), ("/v1/fhirx", "", False), ("/v1/assessments", "", False),
     ("/tox/v1/fhir/metadata", "/tox", True), ("/tox/v1/assessments", "/tox", False)],
)
def test_which_paths_are_fhir(path: str, root_path: str, expected: bool) -> None:
    assert is_fhir_path(path, root_path) is expected


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (["body", "entry", 3, "resource", "valueQuantity", "value"], "Bundle.entry[3].resource.valueQuantity.value"),
        (["body"], "Bundle"),
        (["body", 69], None),  # a JSON syntax error's character offset
        (["query", "_format"], None),
        (["body", "entry", 0, "resource", "odd key"], "Bundle.entry[0].resource.`odd key`"),
        (["body", "a`b\\c"], "Bundle.`a\\`b\\\\c`"),
        ([], None),
    ],
)
def test_fhir_path_of_a_loc(loc: list[Any], expected: str | None) -> None:
    assert fhir_path(loc) == expected


def test_store_failure_on_the_fhir_route_is_an_operation_outcome(private_database_url: str) -> None:
    with TestClient(create_app(ServiceSettings(database_url=private_database_url))) as client:
        engine = sqlalchemy.create_engine(private_database_url)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("DROP TABLE assessments"))
        engine.dispose()
        response = client.post("/v1/fhir/assessments", json=BUNDLE_EXAMPLES["adult_crs_and_icans"]["value"], headers=FHIR)
        body = _outcome(response, 503, "store_unavailable")
        assert _issue_codes(body) == [("no-store", "store_unavailable")] and "grade-" not in response.text


# ---- negotiation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "format_param", "fhir", "media_type"),
    [
        (None, None, False, FHIR_JSON),
        ("*/*", None, False, FHIR_JSON),
        ("application/json", None, False, "application/json"),
        (FHIR_JSON, None, True, FHIR_JSON),
        ("application/json, application/fhir+json", None, True, FHIR_JSON),
        # q of fhir+json just below, at and above that of application/json
        ("application/fhir+json;q=0.49, application/json;q=0.5", None, False, "application/json"),
        ("application/fhir+json;q=0.5, application/json;q=0.5", None, True, FHIR_JSON),
        ("application/fhir+json;q=0.51, application/json;q=0.5", None, True, FHIR_JSON),
        ("application/fhir+json;q=0", None, False, FHIR_JSON),
        ("application/json", "json", True, FHIR_JSON),  # _format overrides Accept
        (None, "application/fhir+json", True, FHIR_JSON),
        (None, "application/json", True, FHIR_JSON),
        (None, "application/fhir+json; fhirVersion=4.0", True, FHIR_JSON),
        ("text/html", None, False, FHIR_JSON),  # a browser: JSON, not a 406
    ],
)
def test_negotiation(accept: str | None, format_param: str | None, fhir: bool, media_type: str) -> None:
    negotiation = negotiate(accept, format_param)
    assert negotiation is not None and (negotiation.fhir, negotiation.media_type) == (fhir, media_type)


@pytest.mark.parametrize(("accept", "format_param"), [(None, "xml"), (None, "ttl"), ("application/fhir+xml", None), (FHIR_JSON, "html")])
def test_negotiation_refuses_what_is_not_served(accept: str | None, format_param: str | None) -> None:
    assert negotiate(accept, format_param) is None


# ---- the grades as Observations ----------------------------------------------------------------


def _fhir_answer(client: TestClient, bundle: dict[str, Any], **params: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The FHIR answer (validated as a Bundle, each resource as its type) and the record's JSON result."""
    response = client.post("/v1/fhir/assessments", json=bundle, headers=FHIR, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == FHIR_JSON
    answer = response.json()
    Bundle.model_validate(answer)
    assert answer["type"] == "collection"
    for entry in answer["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:") and uuid.UUID(entry["fullUrl"][9:])
        kind = entry["resource"]["resourceType"]
        assert kind in ("Observation", "OperationOutcome"), kind
        if kind == "Observation":
            Observation.model_validate(entry["resource"])
        else:
            OperationOutcome.model_validate(entry["resource"])
    record_id = answer["identifier"]["value"]
    record = client.get(f"/v1/assessments/{record_id}")
    assert record.status_code == 200
    return answer, record.json()["result"]


def _observation(answer: dict[str, Any], code: str) -> dict[str, Any]:
    [found] = [e["resource"] for e in answer["entry"] if e["resource"]["resourceType"] == "Observation"
               and e["resource"]["code"]["coding"][0]["code"] == code]
    return found  # type: ignore[no-any-return]


def _component(observation: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [c for c in observation.get("component", []) if c["code"]["coding"][0]["code"] == code]


def test_the_grades_come_back_as_observations_an_ehr_can_file(client: TestClient) -> None:
    answer, result = _fhir_answer(client, BUNDLE_EXAMPLES["adult_crs_and_icans"]["value"])
    crs, icans = _observation(answer, "crs-grade-astct-2019"), _observation(answer, "icans-grade-astct-2019")
    for observation, part, subject in ((crs, result["crs"], "crs"), (icans, result["icans"], "icans")):
        assert observation["subject"] == {"reference": "Patient/example-patient"}
        assert observation["category"][0]["coding"][0]["code"] == "survey"
        assert observation["effectiveDateTime"] == "2026-06-01T10:00:00Z"
        assert observation["issued"].startswith(result["evaluated_at"][:19])
        assert {"system": ASSESSMENT_ID_SYSTEM, "value": result["id"], "use": "secondary"} in observation["identifier"]
        assert any(i["value"] == f"{result['id']}-{subject}" for i in observation["identifier"])
        assert observation["valueCodeableConcept"]["coding"][0] == {"system": AEGRADE_SYSTEM, "code": f"grade-{part['grade']}", "display": f"Grade {part['grade']}"}
        assert observation["interpretation"][0]["coding"][0]["code"] == part["status"]
        [grade_max] = _component(observation, "grade-max")
        assert grade_max["valueCodeableConcept"]["coding"][0]["code"] == f"grade-{part['grade_max']}"
        undetermined = [c["valueString"] for c in _component(observation, "undetermined-input")]
        assert [u.split(" ")[0] for u in undetermined] == [u["input"] for u in part["undetermined_by"]]
        assert observation["status"] == ("final" if part["grade"] == part["grade_max"] else "preliminary")
        assert result["id"] in observation["note"][0]["text"]
        assert all(d["criterion"] in observation["note"][0]["text"] for d in part["drivers"] if d["drives"])
    # derivedFrom: the Observations of each subject's inputs (example-1..6 vitals and CRS, 7..8 ICANS)
    assert {r["reference"] for r in crs["derivedFrom"]} == {f"Observation/example-{n}" for n in range(1, 7)}
    assert {r["reference"] for r in icans["derivedFrom"]} == {"Observation/example-7", "Observation/example-8"}
    # CTCAE's CRS grade is not an Observation here: the Bundle says where it is
    [outcome] = [e["resource"] for e in answer["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
    assert any("grades by other scales (1)" in i["details"]["text"] and result["id"] in i["details"]["text"] for i in outcome["issue"])


def test_a_settled_grade_is_final_and_an_open_one_preliminary(client: TestClient) -> None:
    no_fever = _bundle(_obs("t", LOINC, "8310-5", _celsius(37.0)), _obs("m", AEGRADE_SYSTEM, "fever-masked", {"valueBoolean": False}))
    answer, result = _fhir_answer(client, no_fever)
    crs = _observation(answer, "crs-grade-astct-2019")
    assert (result["crs"]["grade"], result["crs"]["grade_max"], result["crs"]["status"]) == (0, 0, "no_crs")
    assert crs["status"] == "final" and crs["valueCodeableConcept"]["coding"][0]["code"] == "grade-0"
    assert "icans-grade-astct-2019" not in json.dumps(answer)  # no ICANS input: no ICANS Observation
    # the same without the masking Observation: fever masking unknown, so CRS is not assessable
    unknown = _bundle(_obs("t", LOINC, "8310-5", _celsius(37.0)))
    answer, result = _fhir_answer(client, unknown)
    crs = _observation(answer, "crs-grade-astct-2019")
    assert result["crs"]["status"] == "not_assessable" and result["crs"]["grade"] is None
    assert crs["status"] == "preliminary" and "valueCodeableConcept" not in crs
    assert crs["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert _component(crs, "grade-max")[0]["valueCodeableConcept"]["coding"][0]["code"] == f"grade-{result['crs']['grade_max']}"


def test_derived_from_holds_only_what_the_grade_used(client: TestClient) -> None:
    fio2 = _obs("fio2", LOINC, "3150-0", {"valueQuantity": {"value": 40, "system": UCUM, "code": "%", "unit": "%"}})
    fever = _obs("t", LOINC, "8310-5", _celsius(38.6))
    del fever["id"]  # no id: the reference is its fullUrl
    bundle = _bundle(fever, fio2)
    bundle["entry"][1]["fullUrl"] = "https://ehr.example/fhir/Observation/778"
    answer, _ = _fhir_answer(client, bundle)
    crs = _observation(answer, "crs-grade-astct-2019")
    assert crs["derivedFrom"] == [{"reference": "https://ehr.example/fhir/Observation/778"}]  # FiO2 is recorded, not graded


def test_a_vasopressor_administration_is_named_in_the_note_not_in_derived_from(client: TestClient) -> None:
    """FHIR R4 derivedFrom takes no MedicationAdministration: the note names it, with its field."""
    norepinephrine = {
        "resourceType": "MedicationAdministration", "id": "norepi", "status": "in-progress",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7512"}]},
        "effectivePeriod": {"start": "2026-06-01T09:00:00Z"}, "subject": {"reference": "Patient/p-native"},
    }
    answer, result = _fhir_answer(client, _bundle(_obs("t", LOINC, "8310-5", _celsius(38.5)), norepinephrine))
    crs = _observation(answer, "crs-grade-astct-2019")
    assert crs["derivedFrom"] == [{"reference": "Observation/t"}]
    [used] = [m for m in result["mapping"]["mapped"] if m["source"] == "MedicationAdministration/norepi"]
    assert used["field"] == "crs.vasopressors"
    assert "MedicationAdministration/norepi (crs.vasopressors)" in crs["note"][0]["text"]


def test_format_param_asks_for_fhir_and_json_stays_the_default(client: TestClient) -> None:
    example = BUNDLE_EXAMPLES["adult_crs_and_icans"]["value"]
    answer = client.post("/v1/fhir/assessments", json=example, params={"_format": "json"})
    assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"
    plain = client.post("/v1/fhir/assessments", json=example, headers={"accept": "application/json"})
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json" and "mapping" in plain.json()
    fhir_in = client.post("/v1/fhir/assessments", content=json.dumps(example), headers={"content-type": FHIR_JSON, **FHIR})
    assert fhir_in.status_code == 200 and fhir_in.json()["resourceType"] == "Bundle"


# ---- the CodeSystem ----------------------------------------------------------------------------


def _codesystem(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/fhir/CodeSystem/assessment", headers=FHIR)
    assert response.status_code == 200 and response.headers["content-type"] == FHIR_JSON
    body = response.json()
    CodeSystem.model_validate(body)
    return body  # type: ignore[no-any-return]


def _properties(concept: dict[str, Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for p in concept["property"]:
        [value] = [v for k, v in p.items() if k.startswith("value")]
        found.setdefault(p["code"], []).append(value)
    return found


def test_the_codesystem_is_versioned_published_and_complete(client: TestClient) -> None:
    body = _codesystem(client)
    assert body["version"] and body["publisher"] and body["status"] == "active" and body["content"] == "complete"
    assert body["url"] == AEGRADE_SYSTEM
    codes = [c["code"] for c in body["concept"]]
    assert len(codes) == len(set(codes))
    defined = {p["code"]: p["type"] for p in body["property"]}
    for concept in body["concept"]:
        for p in concept["property"]:
            value_key = {"code": "valueCode", "string": "valueString", "integer": "valueInteger"}[defined[p["code"]]]
            assert set(p) == {"code", value_key}, (concept["code"], p)


def test_the_codesystem_separates_questions_from_answers_and_inputs_from_outputs(client: TestClient) -> None:
    by_code = {c["code"]: _properties(c) for c in _codesystem(client)["concept"]}
    assert by_code["ice-total"] == {"role": ["question"], "direction": ["input"], "value-type": ["integer"], "field": ["neuro.ice_score"]}
    assert by_code["nasal_cannula"]["role"] == ["answer"] and by_code["nasal_cannula"]["answer-to"] == ["oxygen-device"]
    assert by_code["crs-grade-astct-2019"]["role"] == ["question"] and by_code["crs-grade-astct-2019"]["direction"] == ["output"]
    assert by_code["grade-3"]["grade"] == [3] and "icans-grade-astct-2019" in by_code["grade-3"]["answer-to"]
    assert by_code["incomplete"]["role"] == ["interpretation"]
    for code, properties in by_code.items():
        assert len(properties["role"]) == 1 and len(properties["direction"]) == 1, code
        for question in properties.get("answer-to", []):
            assert by_code[question]["role"] == ["question"], (code, question)


def test_every_code_of_the_fhir_answer_is_in_the_codesystem(client: TestClient) -> None:
    codes = {c["code"] for c in _codesystem(client)["concept"]}
    answer, _ = _fhir_answer(client, BUNDLE_EXAMPLES["adult_crs_and_icans"]["value"])
    used = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("system") == AEGRADE_SYSTEM:
                used.add(value["code"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(answer)
    assert used and used <= codes, used - codes


@pytest.mark.parametrize(("text", "as_fhir"), [("a\x0cb", "a b"), ("\x0c", ""), (" \t", ""), ("line\nnext\ttab\r", "line\nnext\ttab\r"), ("x\u2028y", "x y")])
def test_error_text_becomes_a_fhir_string(text: str, as_fhir: str) -> None:
    assert fhir_string(text) == as_fhir
