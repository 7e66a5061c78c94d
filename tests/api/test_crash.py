"""SIGKILL the server in the middle of a stream of requests: every assessment answered 200 is stored."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.api.server import Server
from tests.api.test_api import VIGNETTES


@pytest.mark.slow
def test_every_acknowledged_assessment_survives_sigkill(database_url: str) -> None:
    server = Server({"AEGRADE_DATABASE_URL": database_url}).start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []

    def stream(offset: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            i = offset
            while not stop.is_set():
                try:
                    response = client.post("/v1/assessments", json=VIGNETTES[i % len(VIGNETTES)]["request"])
                except httpx.TransportError:
                    return  # the server is gone: this request was never acknowledged
                i += 1
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(response.json()["id"])
                else:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # in the middle of the stream: four clients are sending
        stop.set()
        for thread in threads:
            thread.join(15)
    finally:
        stop.set()
        server.kill()
    assert failures == []
    assert len(acknowledged) >= 300, "the stream did not get going"

    restarted = Server({"AEGRADE_DATABASE_URL": database_url}).start()
    try:
        missing: list[Any] = []
        with httpx.Client(base_url=restarted.url, timeout=10) as client:
            for assessment_id in acknowledged:
                response = client.get(f"/v1/assessments/{assessment_id}")
                if response.status_code != 200 or response.json()["outcome"] != "graded":
                    missing.append((assessment_id, response.status_code))
        assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged assessments are not in the store"
    finally:
        restarted.stop()
