"""The audit store: every assessment answered, with its request, result, rule sets and time.

SQLite by default (a file; WAL journal, synchronous=FULL, so a record committed before the answer
survives a killed process), PostgreSQL when the URL says so. SQLAlchemy 2 Core writes both; there is
no hand-written SQL dialect switch.

A record is committed before the answer is sent. If it cannot be, the caller gets StoreUnavailable
and must not give the grade. Under load, `AuditWriter` commits the records of concurrent requests
together (group commit): one transaction and one sync to disk for many records, each request still
waiting for the commit that holds its own record.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, MetaData, String, Table, create_engine, event, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from aegrade.models import AssessmentResult

__all__ = [
    "AuditRecord",
    "AuditStore",
    "AuditWriter",
    "RawJSON",
    "StoreUnavailable",
    "assessments",
    "metadata",
    "sqlite_pragmas",
    "strict_json",
]

logger = logging.getLogger("aegrade.store")

metadata = MetaData()

assessments = Table(
    "assessments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("request", JSON, nullable=False),
    Column("result", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("rulesets", JSON, nullable=False),
    Column("duration_ms", Float, nullable=False),
)


class StoreUnavailable(Exception):
    """The audit store cannot be written or read."""


class RawJSON(str):
    """JSON text already serialized (by pydantic): stored as it is, not serialized again."""


@dataclass(frozen=True)
class AuditRecord:
    """One audit row. `request` and `result` may be given as objects or as RawJSON text."""

    id: str
    created_at: datetime
    outcome: str  # "graded" or the code of the engine error that stopped the grading
    request: dict[str, Any] | RawJSON
    result: dict[str, Any] | RawJSON | None
    error: dict[str, Any] | None
    rulesets: list[dict[str, Any]]
    duration_ms: float

    @classmethod
    def graded(
        cls, result: AssessmentResult, *, request: dict[str, Any] | RawJSON, result_json: str, duration_ms: float
    ) -> AuditRecord:
        """The record of a grade given: `result_json` is the answer's text, as sent."""
        return cls(
            id=result.id,
            created_at=result.evaluated_at,
            outcome="graded",
            request=request,
            result=RawJSON(result_json),
            error=None,
            rulesets=[r.model_dump(mode="json") for r in result.rulesets],
            duration_ms=duration_ms,
        )

    @classmethod
    def failed(cls, *, request: dict[str, Any] | RawJSON, code: str, message: str, duration_ms: float) -> AuditRecord:
        """The record of a grading that failed in the engine (`code`, an EngineError's): no grade."""
        return cls(
            id=uuid.uuid4().hex,
            created_at=datetime.now(timezone.utc),
            outcome=code,
            request=request,
            result=None,
            error={"code": code, "message": message},
            rulesets=[],
            duration_ms=duration_ms,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "outcome": self.outcome,
            "request": self.request,
            "result": self.result,
            "error": self.error,
            "rulesets": self.rulesets,
            "duration_ms": self.duration_ms,
        }


def strict_json(value: Any) -> str:
    if isinstance(value, RawJSON):
        return str(value)
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


class AuditStore:
    """Writes and reads audit records through SQLAlchemy."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"json_serializer": strict_json, "pool_pre_ping": True}
        if self.backend == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        self._last_ok = 0.0
        self._last_ping: tuple[float, bool] = (0.0, False)
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", sqlite_pragmas)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def create_schema(self) -> None:
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot prepare the audit store at {self.safe_url}: {type(exc).__name__}") from exc

    def record(self, record: AuditRecord) -> None:
        """Commit one record; raises StoreUnavailable when it is not stored."""
        self.record_many([record])

    def record_many(self, records: list[AuditRecord]) -> None:
        """Commit records in one transaction: all are stored, or none and StoreUnavailable."""
        try:
            with self.engine.begin() as connection:
                connection.execute(assessments.insert(), [r.as_dict() for r in records])
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            ids = ", ".join(r.id for r in records[:3]) + (" ..." if len(records) > 3 else "")
            raise StoreUnavailable(f"audit record(s) {ids} not stored: {type(exc).__name__}") from exc
        self._last_ok = time.monotonic()

    def get(self, record_id: str) -> AuditRecord | None:
        try:
            with self.engine.connect() as connection:
                row = connection.execute(select(assessments).where(assessments.c.id == record_id)).mappings().first()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"audit store unreadable: {type(exc).__name__}") from exc
        if row is None:
            return None
        created = row["created_at"]
        if created.tzinfo is None:  # SQLite keeps no zone; every time is written in UTC
            created = created.replace(tzinfo=timezone.utc)
        return AuditRecord(
            id=row["id"],
            created_at=created,
            outcome=row["outcome"],
            request=row["request"],
            result=row["result"],
            error=row["error"],
            rulesets=row["rulesets"],
            duration_ms=row["duration_ms"],
        )

    def ids(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.execute(select(assessments.c.id)).scalars())

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            ok = True
        except SQLAlchemyError:
            ok = False
        self._last_ping = (time.monotonic(), ok)
        return ok

    def recently_ok(self, *, within_s: float) -> bool | None:
        """True when a ping or a commit succeeded within `within_s` seconds (and no ping failed
        since); None when that is not known and a ping is due."""
        now = time.monotonic()
        pinged_at, ping_ok = self._last_ping
        if now - pinged_at < within_s:
            return ping_ok
        if ping_ok and now - self._last_ok < within_s:
            return True
        return None

    def close(self) -> None:
        self.engine.dispose()


class AuditWriter:
    """Commits audit records from one thread, many to a transaction when requests come together.

    `submit` returns a future that completes when the record is committed (or fails with
    StoreUnavailable); the caller answers only after that.
    """

    def __init__(self, store: AuditStore, *, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[AuditRecord, Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="aegrade-audit-writer", daemon=True)
        self._thread.start()

    def submit(self, record: AuditRecord) -> Future[None]:
        future: Future[None] = Future()
        if not self._thread.is_alive():
            future.set_exception(StoreUnavailable("the audit writer is stopped"))
        else:
            self._queue.put((record, future))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(more)
            try:
                self.store.record_many([record for record, _ in batch])
            except StoreUnavailable as exc:
                for _, future in batch:
                    future.set_exception(exc)
            except BaseException as exc:  # never leave a request waiting
                for _, future in batch:
                    future.set_exception(StoreUnavailable(f"audit writer failed: {type(exc).__name__}"))
            else:
                for _, future in batch:
                    future.set_result(None)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
