"""The audit store: every assessment answered, with its request, result, rule sets and time.

SQLite by default (a file; WAL journal, synchronous=FULL, so a record committed before the answer
survives a killed process), PostgreSQL when the URL says so. SQLAlchemy 2 Core writes both; there is
no hand-written SQL dialect switch.

A record is committed before the answer is sent. If it cannot be, the caller gets StoreUnavailable
and must not give the grade.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, MetaData, String, Table, create_engine, event, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["AuditRecord", "AuditStore", "StoreUnavailable"]

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


@dataclass(frozen=True)
class AuditRecord:
    id: str
    created_at: datetime
    outcome: str  # "graded" or the code of the engine error that stopped the grading
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    rulesets: list[dict[str, Any]]
    duration_ms: float

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


def _strict_json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


class AuditStore:
    """Writes and reads audit records through SQLAlchemy."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"json_serializer": _strict_json, "pool_pre_ping": True}
        if self.backend == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

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
        try:
            with self.engine.begin() as connection:
                connection.execute(assessments.insert().values(**record.as_dict()))
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            raise StoreUnavailable(f"audit record {record.id} was not stored: {type(exc).__name__}") from exc

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
            return True
        except SQLAlchemyError:
            return False

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
