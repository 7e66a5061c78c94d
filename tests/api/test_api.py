"""The HTTP contract (../shared/spec/api-v1.md) and every documented status, on SQLite and on
PostgreSQL (skipped, saying so, only when PostgreSQL is not reachable)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient

import aegrade
from service.app import create_app
from service.settings import ServiceSettings

KEY = "a-test-key-with-enough-characters"
VIGNETTES = [
    json.loads(line)
    for line in (Path(__file__).resolve().parents[1] / "golden" / "vignettes" / "crs_icans.jsonl").read_text().splitlines()
    if line.strip()
]
REQUEST: dict[str, Any] = VIGNETTES[0]["request"]


@pytest.fixture
def locked_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", api_keys=[KEY])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# ---- 200 and the audit trail ---------------------------------------------------------------------


def test_assessment_is_graded_and_stored(client: TestClient) -> None:
    response = client.post("/v1/assessments", json=REQUEST)
    assert response.status_code == 200
    body = response.json()
    aegrade.AssessmentResult.model_validate(body)
    stored = client.get(f"/v1/assessments/{body['id']}")
    assert stored.status_code == 200
    record = stored.json()
    assert record["id"] == body["id"]
    assert record["outcome"] == "graded"
    assert record["result"] == body
    assert record["request"] == REQUEST
    assert record["rulesets"] == body["rulesets"]
    assert {r["id"] for r in record["rulesets"]} == {"astct-crs", "astct-icans", "ctcae-v403-crs"}
    assert all(len(r["sha256"]) == 64 for r in record["rulesets"])
    assert record["created_at"].startswith(body["evaluated_at"][:19])


@pytest.mark.parametrize("case", VIGNETTES, ids=[c["id"] for c in VIGNETTES])
def test_vignettes_through_the_api(client: TestClient, case: dict[str, Any]) -> None:
    body = client.post("/v1/assessments", json=case["request"]).json()
    assert (body["crs"]["grade"], body["icans"]["grade"]) == (case["expected"]["crs_grade"], case["expected"]["icans_grade"])


def test_rulesets_and_health(client: TestClient) -> None:
    rulesets = client.get("/v1/rulesets").json()
    by_id = {r["id"]: r for r in rulesets}
    assert by_id["astct-crs"]["rule_count"] == len(aegrade.default_engine()._runners["crs"].ruleset.rules)
    assert by_id["astct-icans"]["settings"]["capd_age_cutoff_years"] == 12.0
    assert client.get("/healthz").json() == {"status": "ok", "store": "ok", "grading": "ok"}


# ---- 400, 413, 422 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"not json", "application/json"), (b"", "application/json"), (b'{"patient": ', "application/json"),
     (b"\xff\xfe\x00", "application/json"), (json.dumps(REQUEST).encode(), "text/plain")],
)
def test_body_that_is_not_json_is_400(client: TestClient, content: bytes, content_type: str) -> None:
    response = client.post("/v1/assessments", content=content, headers={"content-type": content_type})
    assert response.status_code == 400
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    big = {"patient": {"age_years": 40}, "padding": "x" * 70_000}
    response = client.post("/v1/assessments", json=big)
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "body_too_large"


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"patient": {"age_years": 40}, "padding": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    response = client.post("/v1/assessments", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("raw", "loc", "kind"),
    [
        ('{"patient": {"age_years": NaN}}', ["body", "patient", "age_years"], "finite_number"),
        ('{"patient": {"age_years": Infinity}}', ["body", "patient", "age_years"], "finite_number"),
        ('{"patient": {"age_years": true}}', ["body", "patient", "age_years"], "float_type"),
        ('{"patient": {"age_years": 40}, "vitals": {"temperature_c": "38"}}', ["body", "vitals", "temperature_c"], "float_type"),
        ('{"patient": {"age_years": 40}, "vitals": {"temperature_c": 46}}', ["body", "vitals", "temperature_c"], "less_than_equal"),
        ('{"patient": {"age_years": 40}, "extra": 1}', ["body", "extra"], "extra_forbidden"),
        ('{"patient": {"age_years": 40}, "crs": {"hypotension": false, "vasopressors": ["dopamine"]}}', ["body", "crs", "hypotension"], "contradiction"),
        ('{"patient": {"age_years": 9}, "neuro": {"ice_score": 6}}', ["body", "neuro", "ice_score"], "wrong_tool"),
        ('{"patient": {"age_years": 40}, "crs": {"oxygen": {"device": "nasal_cannula"}}}', ["body", "crs", "oxygen", "flow_l_min"], "missing"),
        ("[]", ["body"], "model_attributes_type"),
    ],
)
def test_invalid_input_is_422_naming_the_field(client: TestClient, raw: str, loc: list[Any], kind: str) -> None:
    response = client.post("/v1/assessments", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    details = response.json()["detail"]
    assert {"loc": loc, "type": kind} in [{"loc": d["loc"], "type": d["type"]} for d in details], details


def test_rejected_input_is_not_stored(client: TestClient, shared_database_url: str) -> None:
    marker = f"forty-{uuid.uuid4().hex}"  # the shared store holds other tests' records: look for this one's
    response = client.post("/v1/assessments", json={"patient": {"age_years": marker}})
    assert response.status_code == 422
    assert _count(shared_database_url, marker) == 0


# ---- 401 -----------------------------------------------------------------------------------------


@pytest.mark.slow  # a service of its own
def test_api_key_is_required_when_configured(locked_client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-of-some-length"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        response = locked_client.post("/v1/assessments", json=REQUEST, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["detail"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert locked_client.get("/v1/rulesets").status_code == 401
    ok = locked_client.post("/v1/assessments", json=REQUEST, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert locked_client.get("/healthz").status_code == 200  # the health check stays reachable


def test_short_api_keys_are_refused_at_configuration() -> None:
    with pytest.raises(ValueError, match="16 characters"):
        ServiceSettings(api_keys=["short"])


# ---- 404 -----------------------------------------------------------------------------------------


def test_unknown_assessment_is_404_and_bad_id_is_404(client: TestClient) -> None:
    missing = client.get("/v1/assessments/" + "0" * 32)
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "not_found"
    malformed = client.get("/v1/assessments/not-an-id")  # names no assessment, as an unknown id does
    assert malformed.status_code == 404 and malformed.json()["code"] == "not_found"


# ---- 500 and 503: no grade without a record, no grade from disagreeing evaluators ------------------


def test_store_failure_is_503_and_no_grade(private_database_url: str) -> None:
    """A service of its own, on a store of its own: the test drops a table."""
    with TestClient(create_app(ServiceSettings(database_url=private_database_url))) as client:
        engine = sqlalchemy.create_engine(private_database_url)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("DROP TABLE assessments"))
        engine.dispose()
        response = client.post("/v1/assessments", json=REQUEST)
        assert response.status_code == 503
        assert response.json() == {
            "code": "store_unavailable",
            "message": "the audit store cannot be written: no grade was given",
            "detail": {"code": "store_unavailable", "message": "the audit store cannot be written: no grade was given"},
        }
        health = client.get("/healthz")  # the store answers, but the last write failed: not healthy
        assert health.status_code == 503 and health.json() == {"status": "unavailable", "store": "unavailable", "grading": "ok"}


def test_evaluator_disagreement_is_500_with_its_code_and_on_record(private_database_url: str) -> None:
    """A store of its own: on the shared PostgreSQL schema, other tests' disagreements would be found."""
    database_url = private_database_url
    app = create_app(ServiceSettings(database_url=database_url), grader_engine_factory="tests.api.faults:disagreeing_engine")
    with TestClient(app) as client:
        response = client.post("/v1/assessments", json=REQUEST)
    assert response.status_code == 500
    assert response.json()["detail"]["code"] == "evaluator_disagreement"
    assert "grade" not in response.text.lower().replace("no grade", "")
    rows = _rows(database_url, "SELECT outcome FROM assessments WHERE outcome = 'evaluator_disagreement'")
    assert rows


# ---- startup, logs, OpenAPI ----------------------------------------------------------------------


@pytest.mark.slow  # a service of its own
def test_service_refuses_to_start_with_a_failing_rule_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    source = Path(aegrade.rulefile.default_rules_dir())
    shutil.copytree(source, rules)
    assert "op: gte, value: 38.0}" in (source / "crs" / "astct-2019.yaml").read_text()  # the fever threshold
    (rules / "crs" / "astct-2019.yaml").write_text(
        (source / "crs" / "astct-2019.yaml").read_text().replace("op: gte, value: 38.0}", "op: gte, value: 38.5}", 1)
    )
    app = create_app(ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", rules_dir=rules))
    with pytest.raises(aegrade.RuleSelfTestFailed):
        with TestClient(app):
            pass


def test_logs_carry_ids_and_timings_never_patient_data(database_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    """The grading process logs to the service's standard error, which it inherits: the service is
    started inside the test, so that it inherits the one this test captures."""
    request = {"patient": {"age_years": 37.123, "weight_kg": 81.456}, "vitals": {"temperature_c": 38.777}}
    with TestClient(create_app(ServiceSettings(database_url=database_url))) as client:
        body = client.post("/v1/assessments", json=request).json()
    text = capfd.readouterr().err
    assert body["id"] in text and " ms" in text
    for value in ("37.123", "81.456", "38.777"):
        assert value not in text


def test_every_documented_status_is_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/assessments"]["post"]["responses"]) == {"200", "400", "401", "413", "422", "500", "503"}
    # a malformed id is a 404, not a 422: the read takes no body and no query
    assert set(paths["/v1/assessments/{assessment_id}"]["get"]["responses"]) == {"200", "401", "404", "503"}
    assert {"200", "401"} <= set(paths["/v1/rulesets"]["get"]["responses"])
    schema = json.dumps(client.get("/openapi.json").json()["components"]["schemas"])
    for enum_value in ("high_flow_nasal_cannula", "awakens_to_tactile", "repetitive_without_return_to_baseline", "cushings_triad"):
        assert enum_value in schema
    assert '"maximum": 45' in schema and '"minimum": 25' in schema


def _rows(database_url: str, sql: str) -> list[Any]:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sqlalchemy.text(sql)))
    finally:
        engine.dispose()


def _count(database_url: str, marker: str) -> int:
    """The records whose request contains `marker`."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            sql = sqlalchemy.text("SELECT count(*) FROM assessments WHERE CAST(request AS TEXT) LIKE :m")
            return int(connection.execute(sql, {"m": f"%{marker}%"}).scalar_one())
    finally:
        engine.dispose()
