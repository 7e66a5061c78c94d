"""One grading path (issue 16): every route grades and records in the grading process, under one
time limit, and the audit trail never contradicts the answer when the service knows the outcome.

The proof that a route goes through the grading process: a fault built into the grading process's
engine alone (tests/api/faults.py) shows on that route, while the web process's engine is sound.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.api import faults
from tests.api.error_bodies import field_errors, problem
from tests.api.server import Server
from tests.api.test_api import REQUEST, _rows
from tests.api.test_cds_hooks import _call
from tests.api.test_store import write_lock_held
from tests.form_filling import form_fields, post_form
from service.store import AuditStore

MARKED = {**REQUEST, "patient": {**REQUEST["patient"], "age_years": faults.MARKER_AGE}}
OBSERVED = {**REQUEST, "observed_at": "2026-06-01T10:00:00Z"}
MARKED_OBSERVED = {**MARKED, "observed_at": "2026-06-01T10:00:00Z"}

Route = Callable[[Any, dict[str, Any]], Any]


def _json(client: Any, body: dict[str, Any]) -> Any:
    return client.post("/v1/assessments", json=body)


def _observation(client: Any, body: dict[str, Any]) -> Any:
    return client.post("/v1/patients/one-path-1/observations", json={**body, "observed_at": "2026-06-01T10:00:00Z"})


def _form(client: Any, body: dict[str, Any]) -> Any:
    return post_form(client, {name: values for name, values in form_fields(body).items()})


def _fhir_bundle() -> dict[str, Any]:
    call = _call("V01")
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": call["prefetch"]["patient"]}]}
    for part in ("vitals", "assessments"):
        bundle["entry"] += call["prefetch"][part]["entry"]
    return bundle


def _fhir(client: Any, _body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/fhir/assessments", json=_fhir_bundle(), headers=headers)


def _cds(client: Any, _body: dict[str, Any]) -> Any:
    return client.post("/cds-services/aegrade-toxicity", json=_call("V01"))


ROUTES: dict[str, Route] = {"json": _json, "observation": _observation, "form": _form, "fhir": _fhir, "cds": _cds}


@pytest.fixture(scope="module")
def disagreeing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('one-path') / 'audit.sqlite3'}"
    app = create_app(ServiceSettings(database_url=url), grader_engine_factory="tests.api.faults:disagreeing_engine")
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_route_grades_in_the_grading_process(disagreeing: TestClient, route: str) -> None:
    """The grading process's evaluators disagree on every CRS grading; the web process's agree."""
    response = ROUTES[route](disagreeing, REQUEST)
    assert response.status_code == 500, response.text
    if route != "form":  # our body, or on /v1/fhir/* the same problem as an OperationOutcome
        assert problem(response)["code"] == "evaluator_disagreement", response.text
    else:
        assert "grade" not in response.text.lower().replace("no grade", "").replace("grade_", "") or "evaluator" in response.text


@pytest.mark.parametrize("route", ["json", "observation", "form"])
def test_a_crash_on_any_route_gives_no_grade_puts_it_on_record_and_is_survived(database_url: str, route: str) -> None:
    app = create_app(ServiceSettings(database_url=database_url), grader_engine_factory="tests.api.faults:crashing_engine")
    with TestClient(app) as client:
        response = ROUTES[route](client, MARKED)
        assert response.status_code == 500, response.text
        after = faults.once_replaced(lambda: ROUTES[route](client, REQUEST))
        assert after.status_code == 200, after.text
    failures = _rows(database_url, "SELECT request FROM assessments WHERE outcome = 'engine_error'")
    assert any(str(faults.MARKER_AGE) in str(row[0]) for row in failures)


@pytest.mark.parametrize("fault", ["crash_after_commit", "late_reply"])
def test_a_record_committed_for_an_answer_not_given_is_marked_undelivered(database_url: str, fault: str) -> None:
    settings = ServiceSettings(database_url=database_url, grading_timeout_s=3)
    app = create_app(settings, grader_engine_factory=f"tests.api.faults:{fault}_engine")
    with TestClient(app) as client:
        before = {row[0] for row in _rows(database_url, "SELECT id FROM assessments")}
        response = client.post("/v1/assessments", json=MARKED)
        assert response.status_code == (500 if fault == "crash_after_commit" else 503), response.text
        after = faults.once_replaced(lambda: client.post("/v1/assessments", json=REQUEST))
        assert after.status_code == 200, after.text
        assert client.get(f"/v1/assessments/{after.json()['id']}").json()["delivered"] is True
        graded = [
            row[0]
            for row in _rows(database_url, "SELECT id, request FROM assessments WHERE outcome = 'graded'")
            if str(faults.MARKER_AGE) in str(row[1]) and row[0] not in before
        ]
        assert len(graded) == 1  # committed before the fault
        stored = client.get(f"/v1/assessments/{graded[0]}").json()
        assert stored["outcome"] == "graded" and stored["delivered"] is False, stored
        assert stored["undelivered_reason"]


def test_an_answer_lost_then_given_on_a_repeated_episode_write_is_marked_delivered_with_both_times(database_url: str) -> None:
    """The grading process dies after committing an observation: 500, and its record is marked
    undelivered. The client repeats the write with its Idempotency-Key: the stored answer is
    replayed, and the record now says it was delivered, keeping why it first was not."""
    app = create_app(ServiceSettings(database_url=database_url), grader_engine_factory="tests.api.faults:crash_after_episode_commit_engine")
    body = {**MARKED, "observed_at": "2026-06-01T10:00:00Z"}
    headers = {"Idempotency-Key": "redelivery-1"}
    with TestClient(app) as client:
        lost = client.post("/v1/patients/redelivery-1/observations", json=body, headers=headers)
        assert lost.status_code == 500, lost.text
        replayed = faults.once_replaced(lambda: client.post("/v1/patients/redelivery-1/observations", json=body, headers=headers))
        assert replayed.status_code == 200 and replayed.headers.get("Idempotent-Replayed") == "true", replayed.text
        stored = client.get(f"/v1/assessments/{replayed.json()['id']}").json()
        assert stored["delivered"] is True and stored["undelivered_reason"] and stored["redelivered_at"], stored


REFUSED_AT_COMMIT = f"""
CREATE FUNCTION refuse_marked_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF strpos(NEW.request::text, '{faults.MARKER_AGE}') > 0 THEN RAISE EXCEPTION 'refused at commit (test)'; END IF;
  RETURN NEW;
END $$;
CREATE CONSTRAINT TRIGGER refuse_marked_at_commit AFTER INSERT ON assessments
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_marked_at_commit();
"""


def test_a_commit_that_fails_itself_marks_its_records_undelivered_on_both_paths() -> None:
    """PostgreSQL checks a deferred constraint at COMMIT: the COMMIT itself fails, which from the
    service's side is a commit whose outcome is unknown (a dropped connection looks the same). The
    client gets 503 store_unavailable, and the records it may have left are marked undelivered, so
    that a record never says its grade was given when it was not."""
    from tests.conftest import _fresh_postgres_schema, postgres_unavailable_reason

    if reason := postgres_unavailable_reason():
        pytest.skip(reason)
    with _fresh_postgres_schema() as url:
        with TestClient(create_app(ServiceSettings(database_url=url))) as client:
            engine = AuditStore(url).engine
            with engine.begin() as connection:
                connection.exec_driver_sql(REFUSED_AT_COMMIT)
            engine.dispose()
            for route in ("json", "observation"):
                response = ROUTES[route](client, MARKED)
                assert response.status_code == 503 and problem(response)["code"] == "store_unavailable", (route, response.text)
            assert client.post("/v1/assessments", json=REQUEST).status_code == 200  # the store itself works
        marks = _rows(url, "SELECT assessment_id, reason FROM undelivered")
        assert len(marks) == 2 and all("COMMIT" in reason for _, reason in marks), marks
        assert not _rows(url, f"SELECT id FROM assessments WHERE strpos(request::text, '{faults.MARKER_AGE}') > 0")


@pytest.mark.parametrize("route", ["form", "fhir_as_fhir"])
def test_an_answer_that_cannot_be_made_after_the_commit_marks_the_record_undelivered(
    private_database_url: str, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form's result page, or the FHIR Observations, are made before the grade counts as
    answered: when making them fails (a fault put in here), the committed record says so."""
    import service.fhir_routes
    import service.pages

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the answer could not be made (test)")

    if route == "form":
        real_page = service.pages._page
        monkeypatch.setattr(service.pages, "_page", lambda *a, **k: broken() if k.get("result") is not None else real_page(*a, **k))
    else:
        monkeypatch.setattr(service.fhir_routes, "observation_bundle", broken)
    with TestClient(create_app(ServiceSettings(database_url=private_database_url)), raise_server_exceptions=False) as client:
        if route == "form":
            response = _form(client, REQUEST)
        else:
            response = _fhir(client, REQUEST, headers={"accept": "application/fhir+json"})
        assert response.status_code == 500, response.text
    graded = {row[0] for row in _rows(private_database_url, "SELECT id FROM assessments WHERE outcome = 'graded'")}
    marked = {row[0] for row in _rows(private_database_url, "SELECT assessment_id FROM undelivered")}
    assert len(graded) == 1 and graded == marked


def _env(database_url: str, **more: str) -> dict[str, str]:
    return {"AEGRADE_DATABASE_URL": database_url, "AEGRADE_GRADING_TIMEOUT_S": "3", **more}


@pytest.mark.slow
def test_a_stalled_store_is_503_on_every_route_in_time_and_recovers_by_itself(database_url: str, tmp_path: Any) -> None:
    """Another session holds the audit table's write lock for longer than the grading timeout."""
    server = Server(_env(database_url), log_file=tmp_path / "server.log").start()
    store = AuditStore(database_url)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert _json(client, REQUEST).status_code == 200
            with write_lock_held(store, database_url):
                for name, route in ROUTES.items():
                    started = time.monotonic()
                    response = route(client, REQUEST)
                    took = time.monotonic() - started
                    assert response.status_code == 503, (name, response.status_code, response.text[:300])
                    assert took < 3 + 2, (name, took)
                assert client.get("/healthz").status_code == 503
            deadline = time.monotonic() + 20
            while client.get("/healthz").status_code != 200:
                assert time.monotonic() < deadline, "the service did not recover"
                time.sleep(0.2)
            for name, route in ROUTES.items():
                assert route(client, REQUEST).status_code == 200, name
    finally:
        store.close()
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log
    assert json.dumps(REQUEST["patient"]) not in log


def test_nul_characters_are_refused_before_the_store_naming_the_field(client: TestClient, shared_database_url: str) -> None:
    """PostgreSQL cannot store a NUL character; it is a 422 on every backend, before grading."""
    call = _call("V01")
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": call["prefetch"]["patient"]}]}
    bundle["entry"][0]["resource"]["name"] = [{"family": "Nul\u0000name"}]
    before = len(_rows(shared_database_url, "SELECT id FROM assessments"))
    response = client.post("/v1/fhir/assessments", json=bundle)  # an OperationOutcome: the field as FHIRPath
    assert response.status_code == 422, response.text
    [(kind, where, _msg)] = field_errors(response)
    assert (kind, where) == ("nul_character", "Bundle.entry[0].resource.name[0].family")
    response = client.post("/v1/patients/nul-1/observations", json={**OBSERVED, "notes\u0000": 1})
    assert response.status_code == 422 and field_errors(response)[0].where == ["body", "notes\u0000"]
    escaped = client.post("/v1/assessments", content=b'{"patient": {"age_years": 40}, "x": "a\\\\u0000"}',
                          headers={"content-type": "application/json"})
    assert escaped.status_code == 422 and field_errors(escaped)[0].type != "nul_character"  # a backslash before "u0000" is no NUL
    assert len(_rows(shared_database_url, "SELECT id FROM assessments")) == before


def test_an_unexpected_exception_is_that_request_s_engine_error_and_the_process_lives_on(
    private_database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    app = create_app(ServiceSettings(database_url=private_database_url), grader_engine_factory="tests.api.faults:raising_engine")
    with TestClient(app) as client:
        (pid,) = client.app.state.grader.pids  # type: ignore[attr-defined]
        response = client.post("/v1/assessments", json=MARKED)
        assert response.status_code == 500 and response.json()["code"] == "engine_error", response.text
        assert client.post("/v1/assessments", json=REQUEST).status_code == 200
        assert client.app.state.grader.pids == [pid]  # type: ignore[attr-defined]  # not restarted
    failures = _rows(private_database_url, "SELECT request FROM assessments WHERE outcome = 'engine_error'")
    assert len(failures) == 1 and str(faults.MARKER_AGE) in str(failures[0][0])
    printed = capfd.readouterr()
    assert "unexpected KeyError" in printed.err
    assert f'"age_years":{faults.MARKER_AGE}' not in printed.out + printed.err  # the exception's message quoted the request
