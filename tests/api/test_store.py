"""The audit store and its group-commit writer, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future
from datetime import datetime, timezone

import pytest
import sqlalchemy

from service.store import AuditRecord, AuditStore, AuditWriter, RawJSON, StoreUnavailable


def record(**overrides: object) -> AuditRecord:
    fields: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "created_at": datetime.now(timezone.utc),
        "outcome": "graded",
        "request": RawJSON('{"patient":{"age_years":40}}'),
        "result": {"crs": None},
        "error": None,
        "rulesets": [{"id": "astct-crs"}],
        "duration_ms": 0.5,
    }
    fields.update(overrides)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def test_concurrent_submissions_are_all_committed_in_batches(database_url: str) -> None:
    store = AuditStore(database_url)
    store.create_schema()
    writer = AuditWriter(store)
    futures: list[Future[None]] = []
    lock = threading.Lock()
    records = [record() for _ in range(400)]

    def submit(chunk: list[AuditRecord]) -> None:
        for r in chunk:
            future = writer.submit(r)
            with lock:
                futures.append(future)

    threads = [threading.Thread(target=submit, args=(records[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for future in futures:
        future.result(timeout=30)
    assert {r.id for r in records} <= store.ids()
    stored = store.get(records[0].id)
    assert stored is not None and stored.request == {"patient": {"age_years": 40}}  # raw JSON stored as JSON
    assert stored.created_at.tzinfo is not None
    writer.close()
    store.close()


def test_a_failed_commit_fails_every_waiting_request(database_url: str) -> None:
    store = AuditStore(database_url)
    store.create_schema()
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP TABLE assessments"))
    engine.dispose()
    writer = AuditWriter(store)
    futures = [writer.submit(record()) for _ in range(5)]
    for future in futures:
        with pytest.raises(StoreUnavailable):
            future.result(timeout=30)
    writer.close()
    store.close()


def test_close_commits_what_is_queued_and_then_refuses(tmp_path: object) -> None:
    store = AuditStore(f"sqlite:///{tmp_path}/a.sqlite3")
    store.create_schema()
    writer = AuditWriter(store)
    records = [record() for _ in range(50)]
    futures = [writer.submit(r) for r in records]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert {r.id for r in records} <= store.ids()
    with pytest.raises(StoreUnavailable):
        writer.submit(record()).result(timeout=5)
    store.close()


def test_non_finite_numbers_are_never_written(tmp_path: object) -> None:
    store = AuditStore(f"sqlite:///{tmp_path}/a.sqlite3")
    store.create_schema()
    with pytest.raises(StoreUnavailable):
        store.record(record(result={"x": float("nan")}))
    store.close()
