"""The grading process (service/grader.py): the same answers as FastAPI's own body handling, and
what happens when it crashes, hangs, fails to start, or loses the web process."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.grader import Grader, GraderConfig
from service.settings import ServiceSettings
from tests.api import faults
from tests.api.server import Server
from tests.api.test_api import REQUEST, VIGNETTES, _rows

MARKED = {**REQUEST, "patient": {**REQUEST["patient"], "age_years": faults.MARKER_AGE}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")  # a zombie has exited


@pytest.fixture
def crashing(private_database_url: str) -> Iterator[TestClient]:
    """A store of its own: other tests (test_one_grading_path.py) crash on the same marker."""
    app = create_app(ServiceSettings(database_url=private_database_url), grader_engine_factory="tests.api.faults:crashing_engine")
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/vnd.example+json"])
def test_json_media_types_are_graded_as_fastapi_reads_them(client: TestClient, content_type: str) -> None:
    response = client.post("/v1/assessments", content=json.dumps(REQUEST), headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["crs"]["grade"] == VIGNETTES[0]["expected"]["crs_grade"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "first_loc"),
    [
        (b"", "application/json", 400, ["body"]),
        (b'{"patient": {"age_years": 40}', "application/json", 400, ["body", 29]),  # JSON cut short
        (b"[1, 2]", "application/json", 422, ["body"]),  # JSON, but not an object
        (b"[1, 2]", "application/vnd.example+json", 422, ["body"]),  # JSON (+json), but not an object
        (b'{"patient": {"age_years": true}}', "application/json", 422, ["body", "patient", "age_years"]),
        (b'{"patient": {"age_years": NaN}}', "application/json", 422, ["body", "patient", "age_years"]),
        (b'{"patient": {"age_years": 40}, "vitals": {"temperature_c": 38.5}, "neuro": {"capd_score": 3}}',
         "application/json", 422, ["body", "neuro", "capd_score"]),  # the engine's rule: wrong tool for the age
    ],
)
def test_refusals_name_the_field_as_before(
    client: TestClient, content: bytes, content_type: str, status: int, first_loc: list[Any]
) -> None:
    response = client.post("/v1/assessments", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == first_loc


def test_a_crashed_grading_process_gives_no_grade_is_on_record_and_is_replaced(crashing: TestClient, private_database_url: str) -> None:
    grader: Grader = crashing.app.state.grader  # type: ignore[attr-defined]
    (first_pid,) = grader.pids
    response = crashing.post("/v1/assessments", json=MARKED)
    assert response.status_code == 500
    assert response.json()["detail"]["code"] == "engine_error"
    assert "no grade" in response.json()["detail"]["message"]
    rows = _rows(private_database_url, "SELECT request, error FROM assessments WHERE outcome = 'engine_error'")
    crashed = [row for row in rows if str(faults.MARKER_AGE) in str(row[0])]  # the body as received is on record
    assert len(crashed) == 1 and "stopped" in str(crashed[0][1])
    after = faults.once_replaced(lambda: crashing.post("/v1/assessments", json=REQUEST))
    assert after.status_code == 200, after.text
    assert grader.restarts == 1
    assert grader.pids[0] not in (None, first_pid)
    assert first_pid is not None and not _alive(first_pid)


@pytest.mark.slow
def test_a_hung_grading_process_is_a_503_and_is_replaced(database_url: str) -> None:
    settings = ServiceSettings(database_url=database_url, grading_timeout_s=2)
    with TestClient(create_app(settings, grader_engine_factory="tests.api.faults:hanging_engine")) as client:
        grader: Grader = client.app.state.grader  # type: ignore[attr-defined]
        (first_pid,) = grader.pids
        started = time.monotonic()
        response = client.post("/v1/assessments", json=MARKED)
        assert response.status_code == 503
        assert response.json()["detail"]["code"] == "grading_unavailable"
        assert time.monotonic() - started < 10
        assert client.get("/healthz").status_code == 200  # the web process did not hang with it
        after = faults.once_replaced(lambda: client.post("/v1/assessments", json=REQUEST))
        assert after.status_code == 200, after.text
        # at least once: on a busy machine a 2 s limit can also catch the replacement still warming up
        assert grader.restarts >= 1 and grader.pids[0] != first_pid
    graded = {row[0] for row in _rows(database_url, "SELECT id FROM assessments WHERE outcome = 'graded'")}
    assert after.json()["id"] in graded


def test_two_grading_processes_share_the_work_and_every_answer_is_on_record(database_url: str) -> None:
    settings = ServiceSettings(database_url=database_url, grading_processes=2)
    with TestClient(create_app(settings)) as client:
        grader: Grader = client.app.state.grader  # type: ignore[attr-defined]
        assert len(set(grader.pids)) == 2
        ids: list[str] = []
        lock = threading.Lock()

        def post(n: int) -> None:
            for i in range(10):
                response = client.post("/v1/assessments", json=VIGNETTES[(n + i) % len(VIGNETTES)]["request"])
                assert response.status_code == 200, response.text
                with lock:
                    ids.append(response.json()["id"])

        threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(ids) == 80
    stored = {row[0] for row in _rows(database_url, "SELECT id FROM assessments WHERE outcome = 'graded'")}
    assert set(ids) <= stored  # (on PostgreSQL the store holds other tests' records too)


def _fails_to_build(config: GraderConfig) -> Any:
    raise RuntimeError("no engine here")


@pytest.mark.slow  # a service of its own
def test_the_service_refuses_to_start_when_its_grading_process_cannot(tmp_path: Path) -> None:
    app = create_app(ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}"), grader_engine_factory="tests.api.test_grader:_fails_to_build")
    with pytest.raises(RuntimeError, match="no engine here"):
        with TestClient(app):
            pass


@pytest.mark.slow
def test_the_grading_process_exits_when_the_web_process_is_killed(tmp_path: Path) -> None:
    server = Server({"AEGRADE_DATABASE_URL": f"sqlite:///{tmp_path / 'a.sqlite3'}"}).start()
    try:
        assert server.process is not None
        children = [
            int(pid) for pid in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        ]
        assert children, "no grading process"
        assert httpx.post(f"{server.url}/v1/assessments", json=REQUEST).status_code == 200
    finally:
        server.kill()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children), "a grading process outlived the service"


@pytest.mark.slow  # a service of its own, and a restart retried every 5 s
def test_healthz_is_503_while_no_grading_process_can_start_and_200_once_one_does(tmp_path: Path) -> None:
    """The grading process is killed while its rule files differ from the web process's, so its
    replacement refuses to start: every grade would be a 503, and /healthz says so. Once the files
    are back, a retry starts one and /healthz is 200 again."""
    import shutil
    import signal

    from tests.conftest import REPO

    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    icans = rules / "icans" / "astct-2019.yaml"
    original = icans.read_text(encoding="utf-8")
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", rules_dir=rules)
    with TestClient(create_app(settings)) as client:
        grader: Grader = client.app.state.grader  # type: ignore[attr-defined]
        assert client.get("/healthz").json() == {"status": "ok", "store": "ok", "grading": "ok"}
        icans.write_text(original + "\n# changed while running\n", encoding="utf-8")  # another sha256
        os.kill(grader.pids[0] or 0, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and grader.can_grade:
            time.sleep(0.1)
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json() == {"status": "unavailable", "store": "ok", "grading": "unavailable"}
        assert client.post("/v1/assessments", json=REQUEST).status_code == 503
        icans.write_text(original, encoding="utf-8")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.get("/healthz").status_code != 200:
            time.sleep(0.2)
        assert client.get("/healthz").json()["grading"] == "ok"
        assert client.post("/v1/assessments", json=REQUEST).status_code == 200
