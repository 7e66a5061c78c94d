"""No patient data in what the service writes: a real uvicorn with its access log on (uvicorn's
defaults), everything it prints captured to a file, requests carrying planted identifiers (a FHIR
Patient's name, birth date and identifier; a patient id in URLs and query strings; a CDS Hooks call;
the form), some of them failing at the store, whose database error quotes the row. Then the file is
searched for every planted value."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from fastapi import Request
from fastapi.testclient import TestClient

from service.app import create_app
from service.middleware import ScrubExceptions
from service.settings import ServiceSettings
from tests.api.server import Server
from tests.api.test_cds_hooks import _call
from tests.conftest import POSTGRES_URL, postgres_unavailable_reason
from tests.form_filling import post_form

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"

PATIENT_ID = "pt-PLANTED-7431"
OTHER_PATIENT_ID = "pt-PLANTED-9902"
FAMILY, GIVEN = "Zqxplantedson", "Wilhelmina"
BIRTH_DATE = "1937-04-05"
MRN = "MRN-PLANTED-55821"
AGE, WEIGHT, TEMPERATURE = "37.123", "81.456", "38.777"
PLANTED = (PATIENT_ID, OTHER_PATIENT_ID, FAMILY, GIVEN, BIRTH_DATE, MRN, "PLANTED", AGE, WEIGHT, TEMPERATURE)
TABLES = ("assessments", "patients", "observations", "treatments")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store of this test's own (its tables are broken on purpose): SQLite, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        return
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    schema = f"aegrade_logs_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def refuse_writes(url: str) -> None:
    """Every later insert fails in the database, with an error that quotes the row (the patient id)."""
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        for table in TABLES:
            if url.startswith("sqlite"):  # (RAISE takes a literal only: the row is not quoted here)
                connection.execute(sqlalchemy.text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END"
                ))
            else:  # PostgreSQL: "new row violates check constraint", DETAIL: "Failing row contains (...)"
                connection.execute(sqlalchemy.text(f"ALTER TABLE {table} ADD CONSTRAINT refuse_{table} CHECK (false) NOT VALID"))
    engine.dispose()


def planted_bundle() -> dict[str, Any]:
    bundle = json.loads((FIXTURES / "V04.json").read_text())
    patient = bundle["entry"][0]["resource"]
    assert patient["resourceType"] == "Patient"
    patient.update(
        {"birthDate": BIRTH_DATE, "name": [{"family": FAMILY, "given": [GIVEN]}],
         "identifier": [{"system": "urn:oid:1.2.3.4", "value": MRN}]}
    )
    return bundle


def observation() -> dict[str, Any]:
    return {"observed_at": "2026-01-01T10:00:00Z", "patient": {"age_years": float(AGE), "weight_kg": float(WEIGHT)},
            "vitals": {"temperature_c": float(TEMPERATURE)}}


def send_planted_requests(http: httpx.Client) -> list[int]:
    statuses = []
    bundle = planted_bundle()
    statuses.append(http.post("/v1/fhir/assessments", json=bundle).status_code)
    statuses.append(http.post(f"/v1/patients/{PATIENT_ID}/observations?name={FAMILY}", json=observation()).status_code)
    statuses.append(http.post(f"/v1/patients/{PATIENT_ID}/treatments", json={
        "agent": "tocilizumab", "administered_at": "2026-01-01T11:00:00Z"}).status_code)
    statuses.append(http.get(f"/v1/patients/{PATIENT_ID}/episode?mrn={MRN}").status_code)
    statuses.append(http.head(f"/v1/patients/{PATIENT_ID}/episode").status_code)
    statuses.append(http.get(f"/v1/patients/{OTHER_PATIENT_ID}/episode").status_code)  # 404
    statuses.append(http.get(f"/v1/patients/{FAMILY}%20{BIRTH_DATE}/episode").status_code)  # 422: not an id
    statuses.append(http.get(f"/{FAMILY}/{MRN}").status_code)  # no such route
    statuses.append(http.post("/v1/assessments", json={"patient": {"age_years": float(AGE), "weight_kg": float(WEIGHT)},
                                                         "vitals": {"temperature_c": float(TEMPERATURE)}}).status_code)
    statuses.append(http.post("/v1/assessments", json={"patient": {"age_years": 40, FAMILY: MRN}}).status_code)  # 422
    duplicate = '{"patient": {"age_years": 40, "%s": 1, "%s": 2}}' % (FAMILY, FAMILY)
    statuses.append(http.post("/v1/assessments", content=duplicate, headers={"content-type": "application/json"}).status_code)
    statuses.append(http.post("/v1/assessments", content=b"\xef\xbb\xbf" + json.dumps({"name": FAMILY}).encode(),
                              headers={"content-type": "application/json"}).status_code)
    bad_fhir = planted_bundle()
    bad_fhir["entry"][0]["resource"]["birthDate"] = f"{BIRTH_DATE}T{FAMILY}"
    statuses.append(http.post("/v1/fhir/assessments", json=bad_fhir).status_code)  # 422 quoting the value to the caller
    call = _call("V04")
    call["prefetch"]["patient"].update({"name": [{"family": FAMILY, "given": [GIVEN]}], "identifier": [{"value": MRN}]})
    cds = http.post("/cds-services/aegrade-toxicity", json=call)
    assert cds.status_code == 200, cds.text
    statuses.append(cds.status_code)
    wrong_patient = _call("V04")
    wrong_patient["context"]["patientId"] = PATIENT_ID  # 422: the prefetched patient is another
    statuses.append(http.post("/cds-services/aegrade-toxicity", json=wrong_patient).status_code)
    statuses.append(post_form(http, {"patient.age_years": AGE, "patient.weight_kg": WEIGHT, "vitals.temperature": TEMPERATURE}).status_code)
    return statuses


@pytest.mark.slow  # a real server on each database
def test_nothing_the_service_prints_carries_patient_data(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    server = Server({"AEGRADE_DATABASE_URL": store_url, "AEGRADE_LOG_LEVEL": "DEBUG"}, log_file=log, access_log=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            ids = [s["id"] for s in http.get("/cds-services").json()["services"]]
            assert "aegrade-toxicity" in ids, ids
            before = send_planted_requests(http)
            assert before.count(200) >= 7, before
            refuse_writes(store_url)
            failing = [
                http.post(f"/v1/patients/{PATIENT_ID}/observations", json=observation()).status_code,
                http.post(f"/v1/patients/{OTHER_PATIENT_ID}/observations", json=observation()).status_code,
                http.post("/v1/fhir/assessments", json=planted_bundle()).status_code,
                http.post("/v1/assessments", json={"patient": {"age_years": float(AGE)}, "vitals": {"temperature_c": float(TEMPERATURE)}}).status_code,
                post_form(http, {"patient.age_years": AGE, "vitals.temperature": TEMPERATURE}).status_code,
            ]
            assert all(status in (500, 503) for status in failing), failing
            assert 503 in failing
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    leaked = [value for value in PLANTED if value.lower() in text.lower()]
    assert leaked == [], f"{leaked} in the service's output:\n" + "\n".join(
        line for line in text.splitlines() if any(v.lower() in line.lower() for v in leaked)
    )[:3000]
    # our access log, by route template; none of uvicorn's (which prints the raw path)
    assert "aegrade.access: POST /v1/patients/{patient_id}/observations 200" in text
    assert "aegrade.access: GET /v1/patients/{patient_id}/episode 404" in text
    assert "aegrade.access: HEAD /v1/patients/{patient_id}/episode 200" in text
    assert "aegrade.access: POST /v1/patients/{patient_id}/observations 503" in text
    assert not re.search(r'"(GET|POST|HEAD) /[^"]* HTTP/1\.[01]" \d{3}', text), "uvicorn's access log is on"
    assert "uvicorn.access" not in text
    assert "audit store unavailable" in text or "store" in text.lower()


def test_an_unexpected_error_is_500_logged_without_its_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An exception no handler takes (its message quoting a request, as a pydantic or KeyError one
    would) is answered 500 with the usual headers, and logged with its type and frames only."""
    app = create_app(ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}"))

    async def boom(request: Request) -> None:
        raise LookupError(f"no such patient {FAMILY} born {BIRTH_DATE}")

    app.add_api_route("/v1/patients/{patient_id}/boom", boom, methods=["GET"])
    with TestClient(app) as client, caplog.at_level("INFO"):
        response = client.get(f"/v1/patients/{PATIENT_ID}/boom")
    assert response.status_code == 500
    problem = {"code": "internal_error", "message": "unexpected error; no grade was given"}
    assert response.json() == {**problem, "detail": problem}
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("aegrade"))  # not httpx's own
    assert "LookupError" in logged and "GET /v1/patients/{patient_id}/boom 500" in logged
    assert not [v for v in PLANTED if v in logged], logged
    # uvicorn's own "Exception in ASGI application" record is scrubbed the same way
    try:
        raise LookupError(f"no such patient {FAMILY}")
    except LookupError:
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application\n", (), sys.exc_info())
    ScrubExceptions().filter(record)
    text = logging.Formatter().format(record)
    assert "LookupError" in text and FAMILY not in text and "test_logs_hygiene.py" in text
