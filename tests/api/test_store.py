"""The audit store, on SQLite and PostgreSQL: commits, undelivered marks, and a stalled store."""

from __future__ import annotations

import threading
import uuid
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
import sqlalchemy

from service.store import AuditRecord, AuditStore, RawJSON, StoreUnavailable


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


def test_concurrent_commits_are_all_stored(database_url: str) -> None:
    store = AuditStore(database_url)
    store.create_schema()
    records = [record() for _ in range(400)]

    def commit(chunk: list[AuditRecord]) -> None:
        for start in range(0, len(chunk), 16):
            store.record_many(chunk[start : start + 16])

    threads = [threading.Thread(target=commit, args=(records[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {r.id for r in records} <= store.ids()
    stored = store.get(records[0].id)
    assert stored is not None and stored.request == {"patient": {"age_years": 40}}  # raw JSON stored as JSON
    assert stored.created_at.tzinfo is not None
    assert stored.as_read()["delivered"] is True
    store.close()


def test_a_failed_commit_stores_nothing_and_says_so(private_database_url: str) -> None:
    """A store of its own: the test drops a table (the schema is migrated once, not re-created)."""
    store = AuditStore(private_database_url)
    store.create_schema()
    engine = sqlalchemy.create_engine(private_database_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP TABLE assessments"))
    engine.dispose()
    with pytest.raises(StoreUnavailable):
        store.record_many([record() for _ in range(5)])
    assert store.recently_ok(within_s=60) is False  # /healthz says unavailable
    store.close()


def test_an_answer_marked_undelivered_before_or_after_its_commit_reads_so(database_url: str) -> None:
    store = AuditStore(database_url)
    store.create_schema()
    early, late, failure = record(), record(), record(outcome="engine_error", result=None)
    store.mark_undelivered([early.id], "the grading process gave no reply within 30 s")
    store.record(early)  # the grading process committed after the web process gave up
    store.record(late)
    store.mark_undelivered([late.id, late.id], "cancelled", failure=failure)
    store.mark_undelivered([late.id], "marked twice")  # the first mark stands
    read_early, read_late = store.get(early.id), store.get(late.id)
    assert read_early is not None and read_early.as_read()["delivered"] is False
    assert read_early.undelivered_reason == "the grading process gave no reply within 30 s"
    assert read_late is not None and read_late.undelivered_reason == "cancelled"
    assert failure.id in store.ids()
    assert {early.id, late.id} <= store.undelivered_ids()
    store.close()


@contextmanager
def write_lock_held(store: AuditStore, database_url: str) -> Iterator[None]:
    """Another session holds the lock every audit insert needs: the store is stalled."""
    other = sqlalchemy.create_engine(database_url)
    with other.connect() as connection:
        if store.backend == "sqlite":
            connection.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            connection.begin()
            connection.execute(sqlalchemy.text("LOCK TABLE assessments IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.rollback()
    other.dispose()


def test_a_stalled_store_fails_in_bounded_time_and_recovers(database_url: str) -> None:
    store = AuditStore(database_url, lock_timeout_s=1.0)
    store.create_schema()
    with write_lock_held(store, database_url):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.record(record())
        assert time.monotonic() - started < 10
        assert store.ping(wait_s=0.5) is False
        assert store.recently_ok(within_s=60) is False
    assert store.ping(wait_s=0.5) is True
    kept = record()
    store.record(kept)
    assert kept.id in store.ids()
    assert store.recently_ok(within_s=60) is True
    store.close()


def test_non_finite_numbers_are_never_written(tmp_path: object) -> None:
    store = AuditStore(f"sqlite:///{tmp_path}/a.sqlite3")
    store.create_schema()
    with pytest.raises(StoreUnavailable):
        store.record(record(result={"x": float("nan")}))
    store.close()


def test_a_failure_record_the_store_refuses_does_not_take_the_undelivered_mark_with_it(database_url: str) -> None:
    store = AuditStore(database_url)
    store.create_schema()
    graded, refused = record(), record(outcome="engine_error", request={"x": float("nan")}, result=None)
    store.record(graded)
    with pytest.raises(StoreUnavailable):
        store.mark_undelivered([graded.id], "the grading process stopped", failure=refused)
    read = store.get(graded.id)
    assert read is not None and read.undelivered_reason == "the grading process stopped"
    assert refused.id not in store.ids()
    store.close()
