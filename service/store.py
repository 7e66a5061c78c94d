"""The audit store: every assessment answered, with its request, result, rule sets and time.

SQLite by default (a file; WAL journal, synchronous=FULL, so a record committed before the answer
survives a killed process), PostgreSQL when the URL says so. SQLAlchemy 2 Core writes both; there is
no hand-written SQL dialect switch.

A record is committed before the answer is sent. If it cannot be, the caller gets StoreUnavailable
and must not give the grade. Audit rows are written by one function, `insert_records`: in the
grading processes (service/grader.py), where the records of a batch of requests are committed
together and an episode write commits its records in its own transaction; and in the web process
only for the failure record of a grading process that crashed (`mark_undelivered`).

When the service knows that a committed record's answer was not delivered (the grading process gave
its reply too late, crashed after committing, or the request was cancelled), the record is marked
in `undelivered`: a row of its own, so that the mark holds whether it is written before or after the
record itself. `GET /v1/assessments/{id}` shows it as `delivered: false`.

Every wait on the store is bounded: `lock_timeout_s` is SQLite's busy timeout and PostgreSQL's
lock_timeout and statement_timeout, so a stalled store is an error (StoreUnavailable) in bounded
time, not a request held for ever.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, MetaData, String, Table, create_engine, event, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from aegrade.models import AssessmentResult
from service.errors import StoreUnavailable

__all__ = [
    "AuditRecord",
    "AuditStore",
    "CommitUnknown",
    "RawJSON",
    "StoreUnavailable",
    "assessments",
    "insert_records",
    "metadata",
    "store_unavailable",
    "strict_json",
    "transaction",
    "undelivered",
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

undelivered = Table(
    "undelivered",
    metadata,
    Column("assessment_id", String(32), primary_key=True),
    Column("marked_at", DateTime(timezone=True), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("redelivered_at", DateTime(timezone=True), nullable=True),  # given after all, on a repeated request
)



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
    undelivered_reason: str | None = None  # read back only: why the answer was not delivered
    redelivered_at: datetime | None = None  # read back only: when a repeated request was given it after all

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

    def as_read(self) -> dict[str, Any]:
        """The record as `GET /v1/assessments/{id}` shows it."""
        return {
            **self.as_dict(),
            "delivered": self.undelivered_reason is None or self.redelivered_at is not None,
            "undelivered_reason": self.undelivered_reason,
            "redelivered_at": self.redelivered_at.isoformat() if self.redelivered_at else None,
        }


def strict_json(value: Any) -> str:
    if isinstance(value, RawJSON):
        return str(value)
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


class AuditStore:
    """Writes and reads audit records through SQLAlchemy: one engine per process.

    `immediate`: SQLite write transactions take the database's write lock when they begin (BEGIN
    IMMEDIATE), so that what an episode write reads cannot change before it commits. The grading
    processes, which do every write that grades, use it; the web process, which mostly reads, does
    not (its reads must not wait for the writers' lock).
    """

    def __init__(self, url: str, *, lock_timeout_s: float = 30.0, immediate: bool = False) -> None:
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        self.lock_timeout_s = lock_timeout_s
        kwargs: dict[str, Any] = {"json_serializer": strict_json, "pool_pre_ping": True, "hide_parameters": True}
        milliseconds = max(1, round(lock_timeout_s * 1000))
        if self.backend == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": lock_timeout_s}
            kwargs["pool_timeout"] = lock_timeout_s
        elif self.backend == "postgresql":
            given = parsed.query.get("options", "")  # the URL's own options (a search_path, say) stay
            given = " ".join(given) if isinstance(given, tuple) else given
            kwargs["connect_args"] = {
                "connect_timeout": max(1, round(lock_timeout_s)),
                "options": f"{given} -c lock_timeout={milliseconds} -c statement_timeout={milliseconds}".strip(),
                # A server that stops answering (a network partition, a stopped process) is a
                # failed wait too, not one held until TCP gives up (minutes).
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
                "tcp_user_timeout": milliseconds,
            }
            kwargs["pool_timeout"] = lock_timeout_s
        self.engine: Engine = create_engine(url, **kwargs)
        self._last_ok = 0.0
        self._last_failed = 0.0
        self._last_ping: tuple[float, bool] = (0.0, False)
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas(milliseconds, immediate=immediate))
            if immediate:
                event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def create_schema(self, *, migrate: bool = True) -> None:
        """Bring the schema to this code's revision (service/migrations), or with `migrate` false
        only check it; SchemaMismatch (service.migrations) when the service must not start on it."""
        from service import migrations  # it imports this module

        try:
            migrations.prepare(self, migrate=migrate)
        except migrations.SchemaMismatch as exc:
            logger.error("the service cannot start on this audit store: %s", exc)
            raise
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"cannot prepare the audit store at {self.safe_url}: {type(exc).__name__}") from exc

    def record(self, record: AuditRecord) -> None:
        """Commit one record; raises StoreUnavailable when it is not stored."""
        self.record_many([record])

    def record_many(self, records: list[AuditRecord]) -> None:
        """Commit records in one transaction: all are stored, or StoreUnavailable (none stored; or,
        with `commit_unknown`, perhaps all: the COMMIT itself failed)."""
        try:
            with transaction(self.engine) as connection:
                insert_records(connection, records)
        except (SQLAlchemyError, ValueError, TypeError, CommitUnknown) as exc:
            self.failed()
            ids = ", ".join(r.id for r in records[:3]) + (" ..." if len(records) > 3 else "")
            raise store_unavailable(f"audit record(s) {ids} not stored", exc) from exc
        self.succeeded()

    def mark_undelivered(self, assessment_ids: Iterable[str], reason: str, *, failure: AuditRecord | None = None) -> None:
        """Mark committed (or yet to be committed) records as not delivered, then put `failure` on
        record: the mark first, in a transaction of its own, so that a failure record the store
        refuses cannot take the mark with it. Raises StoreUnavailable."""
        now = datetime.now(timezone.utc)
        rows = [{"assessment_id": i, "marked_at": now, "reason": reason[:200]} for i in dict.fromkeys(assessment_ids)]
        try:
            with self.engine.begin() as connection:
                for row in rows:
                    try:
                        with connection.begin_nested():
                            connection.execute(undelivered.insert(), row)
                    except IntegrityError:
                        pass  # marked before
            if failure is not None:
                with self.engine.begin() as connection:
                    insert_records(connection, [failure])
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            self.failed()
            raise StoreUnavailable(f"undelivered answers not marked, or the failure not recorded: {type(exc).__name__}") from exc
        self.succeeded()

    def mark_redelivered(self, assessment_ids: Iterable[str]) -> None:
        """The answers of these records, marked undelivered, were given after all (a repeated request
        with the same Idempotency-Key was answered with them): the mark stays, with the time. Raises
        StoreUnavailable."""
        ids = list(dict.fromkeys(assessment_ids))
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    undelivered.update()
                    .where(undelivered.c.assessment_id.in_(ids), undelivered.c.redelivered_at.is_(None))
                    .values(redelivered_at=datetime.now(timezone.utc))
                )
        except SQLAlchemyError as exc:
            self.failed()
            raise StoreUnavailable(f"redelivered answers not marked: {type(exc).__name__}") from exc
        self.succeeded()

    def succeeded(self) -> None:
        """A write committed (here, or in a grading process that said so)."""
        self._last_ok = time.monotonic()

    def failed(self) -> None:
        """A write failed (here, or in a grading process that said so)."""
        self._last_failed = time.monotonic()

    def get(self, record_id: str) -> AuditRecord | None:
        query = (
            select(assessments, undelivered.c.reason.label("undelivered_reason"), undelivered.c.redelivered_at)
            .outerjoin(undelivered, undelivered.c.assessment_id == assessments.c.id)
            .where(assessments.c.id == record_id)
        )
        try:
            with self.engine.connect() as connection:
                row = connection.execute(query).mappings().first()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"audit store unreadable: {type(exc).__name__}") from exc
        if row is None:
            return None
        return AuditRecord(
            id=row["id"],
            created_at=_utc(row["created_at"]),
            outcome=row["outcome"],
            request=row["request"],
            result=row["result"],
            error=row["error"],
            rulesets=row["rulesets"],
            duration_ms=row["duration_ms"],
            undelivered_reason=row["undelivered_reason"],
            redelivered_at=_utc(row["redelivered_at"]) if row["redelivered_at"] is not None else None,
        )

    def ids(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.execute(select(assessments.c.id)).scalars())

    def undelivered_ids(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.execute(select(undelivered.c.assessment_id)).scalars())

    def ping(self, *, wait_s: float = 1.0) -> bool:
        """Whether the store can take a write now: a transaction that takes the lock an audit
        insert needs, waiting at most `wait_s` seconds for it, and is rolled back."""
        milliseconds = max(1, round(wait_s * 1000))
        try:
            with self.engine.connect() as connection:
                if self.backend == "postgresql":
                    with connection.begin() as transaction:
                        connection.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
                        connection.execute(text(f"SET LOCAL statement_timeout = {milliseconds}"))
                        connection.execute(text("LOCK TABLE assessments IN ROW EXCLUSIVE MODE"))
                        transaction.rollback()
                elif self.backend == "sqlite":
                    connection.exec_driver_sql(f"PRAGMA busy_timeout={milliseconds}")
                    try:
                        connection.exec_driver_sql("BEGIN IMMEDIATE")
                        connection.exec_driver_sql("ROLLBACK")
                    finally:
                        connection.exec_driver_sql(f"PRAGMA busy_timeout={max(1, round(self.lock_timeout_s * 1000))}")
                else:
                    connection.execute(text("SELECT 1"))
            ok = True
        except SQLAlchemyError:
            ok = False
        self._last_ping = (time.monotonic(), ok)
        return ok

    def recently_ok(self, *, within_s: float) -> bool | None:
        """True when a ping or a commit succeeded within `within_s` seconds and nothing failed
        since; False when the latest news is a failure within that time; None when that is not
        known and a ping is due."""
        now = time.monotonic()
        pinged_at, ping_ok = self._last_ping
        latest_ok = max(self._last_ok, pinged_at if ping_ok else 0.0)
        latest_failed = max(self._last_failed, pinged_at if not ping_ok else 0.0)
        if latest_failed > latest_ok and now - latest_failed < within_s:
            return False
        if now - latest_ok < within_s:
            return True
        return None

    def close(self) -> None:
        self.engine.dispose()


class CommitUnknown(Exception):
    """The COMMIT itself failed (the connection dropped, the server stopped): the transaction may or
    may not have been kept. Raised by `transaction`, with the driver's error as its cause."""


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()`, telling apart an error before the COMMIT (rolled back: nothing written) from
    an error of the COMMIT itself (CommitUnknown: perhaps written). A caller that answered with a
    grade only once committed must treat the second as "recorded, answer not given"."""
    with engine.connect() as connection:
        begun = connection.begin()
        try:
            yield connection
        except BaseException:
            if begun.is_active:
                begun.rollback()
            raise
        try:
            begun.commit()
        except SQLAlchemyError as exc:
            raise CommitUnknown(f"the COMMIT failed: {type(exc).__name__}") from exc


def store_unavailable(what: str, exc: BaseException) -> StoreUnavailable:
    """StoreUnavailable for a failed write: `commit_unknown` set when the COMMIT itself failed."""
    error = StoreUnavailable(f"{what}: {type(exc.__cause__ or exc).__name__}" if isinstance(exc, CommitUnknown) else f"{what}: {type(exc).__name__}")
    error.commit_unknown = isinstance(exc, CommitUnknown)
    return error


def insert_records(connection: Connection, records: list[AuditRecord]) -> None:
    """Write audit records in the caller's transaction: the one place audit rows are written."""
    if records:
        connection.execute(assessments.insert(), [r.as_dict() for r in records])


def _sqlite_pragmas(busy_timeout_ms: int, *, immediate: bool) -> Any:
    """The connect hook of a SQLite store: WAL, full syncs, the busy timeout; with `immediate`,
    pysqlite's own transaction handling off, so that SQLAlchemy's BEGIN IMMEDIATE is the one
    (SQLAlchemy's documented recipe)."""

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Switching a new database to WAL needs a moment of exclusive access, and SQLite may refuse
        # it at once ("database is locked") while another connection (a racing start-up) holds a
        # lock: try again within the busy timeout.
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()
        if immediate:
            dbapi_connection.isolation_level = None

    return pragmas


def _utc(when: datetime) -> datetime:
    """A time read back, in UTC (SQLite keeps no zone; every time is written in UTC)."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
