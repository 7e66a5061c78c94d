"""The audit store's schema migrations (Alembic), shipped inside the package; no alembic.ini.

Revisions, written by hand, in versions/:

  0001  the tables of the release before migrations: assessments, the episode tables, the CDS Hooks
        tables (what its `metadata.create_all` made)
  0002  undelivered
  0003  undelivered.redelivered_at

At start (`AuditStore.create_schema`, AEGRADE_MIGRATE true, the default) the service upgrades the
store to the head revision; with AEGRADE_MIGRATE false it refuses to start when the store is behind,
naming both revisions and the command: `python -m service.migrations upgrade`. A store at a revision
this code does not know (a newer release upgraded it) is refused either way: no downgrade at start.

A store made by the release before migrations has its tables but no `alembic_version`: it is
stamped 0001, then upgraded. An empty database is upgraded from nothing.

The upgrade is one transaction that first takes a lock, so that servers or processes starting
together do not race: on PostgreSQL a transaction-level advisory lock (one per database and schema),
on SQLite the database's write lock (BEGIN IMMEDIATE). Whoever comes second waits (at most the
store's lock timeout), then finds the schema at head. Both keep DDL in the transaction: a failed
upgrade leaves the store as it was.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from service.store import AuditStore

__all__ = [
    "BASELINE",
    "BASELINE_TABLES",
    "SchemaMismatch",
    "SchemaState",
    "check",
    "head",
    "prepare",
    "state",
    "upgrade",
]

logger = logging.getLogger("aegrade.migrations")

MIGRATIONS_DIR = Path(__file__).resolve().parent
BASELINE = "0001"  # the schema of the release before migrations
BASELINE_TABLES = frozenset(
    {"assessments", "patients", "observations", "treatments", "idempotency_keys", "cds_cards", "cds_feedback"}
)
UPGRADE_COMMAND = "python -m service.migrations upgrade"


class SchemaMismatch(Exception):
    """The store's schema is not the one this code needs, and is not to be upgraded here."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # alembic_version's revision; None when there is none
    head: str  # the revision this code needs
    tables: frozenset[str]
    known: bool  # whether this code has the current revision

    @property
    def legacy(self) -> bool:
        """Tables of the release before migrations, and no revision."""
        return self.current is None and bool(self.tables & BASELINE_TABLES)

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def ahead(self) -> bool:
        return self.current is not None and not self.known

    @property
    def behind(self) -> bool:
        return not self.at_head and not self.ahead

    def describe(self) -> str:
        if self.current is not None:
            return self.current
        if self.legacy:
            return f"none (the tables of the release before migrations, taken as {BASELINE})"
        return "none (no tables)"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made here: the scripts inside the package; `connection`, when
    given, is the one env.py runs the migrations on (in its transaction)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this code needs."""
    revision = _script().get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return revision


def state(connection: Connection) -> SchemaState:
    """Where the store reached by `connection` stands."""
    current = MigrationContext.configure(connection).get_current_revision()
    known = {script.revision for script in _script().walk_revisions()}
    return SchemaState(
        current=current,
        head=head(),
        tables=frozenset(inspect(connection).get_table_names()),
        known=current is None or current in known,
    )


def prepare(store: AuditStore, *, migrate: bool) -> SchemaState:
    """What the service does at start: upgrade (`migrate`) or check; SchemaMismatch when it cannot
    start on this store."""
    return upgrade(store) if migrate else check(store, at_start=True)


def check(store: AuditStore, *, at_start: bool = False) -> SchemaState:
    """The store's state; SchemaMismatch unless it is at head."""
    with store.engine.connect() as connection:
        found = state(connection)
    _refuse_ahead(store, found)
    if found.behind:
        raise SchemaMismatch(
            f"the audit store at {store.safe_url} is at schema revision {found.describe()}; this version of "
            f"aegrade needs revision {found.head}{', and AEGRADE_MIGRATE is false' if at_start else ''}. Upgrade "
            f"the store with `AEGRADE_DATABASE_URL=<its URL> {UPGRADE_COMMAND}`, or start the service with "
            "AEGRADE_MIGRATE=true (the default), which upgrades it at start."
        )
    return found


def upgrade(store: AuditStore) -> SchemaState:
    """Bring the store to head, under the lock, in one transaction; the state it was in before.
    SchemaMismatch when the store is ahead of this code."""
    with _locked(store) as connection:
        before = state(connection)
        _refuse_ahead(store, before)
        if before.at_head:
            return before
        config = alembic_config(connection)
        if before.legacy and BASELINE_TABLES <= before.tables:
            logger.info("audit store %s: made before migrations; stamped %s", store.safe_url, BASELINE)
            command.stamp(config, BASELINE)
        # (A store before migrations that lacks some of 0001's tables is upgraded from nothing:
        # 0001 creates the tables that are not there.)
        command.upgrade(config, "head")
        logger.info("audit store %s: schema upgraded from %s to %s", store.safe_url, before.describe(), before.head)
    return before


def _refuse_ahead(store: AuditStore, found: SchemaState) -> None:
    if found.ahead:
        raise SchemaMismatch(
            f"the audit store at {store.safe_url} is at schema revision {found.current}, which this version of "
            f"aegrade does not know (it needs revision {found.head}): a newer release has upgraded the store. "
            "Run that release, or a store restored from before the upgrade; aegrade does not downgrade a store."
        )


MIGRATION_LOCK_WAIT_S = 300
"""PostgreSQL: how long a starting instance waits for another's migration (the advisory lock) and
for the tables' locks, before it refuses to start."""


@contextmanager
def _locked(store: AuditStore) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock; committed on leaving."""
    url = store.engine.url
    if store.backend == "sqlite" and url.database not in (None, "", ":memory:") and url.query.get("mode") != "memory":
        # pysqlite would commit before DDL: a store of its own whose transactions are SQLite's
        # (BEGIN IMMEDIATE, which takes the write lock at once; the busy timeout bounds the wait).
        migrator = AuditStore(url.render_as_string(hide_password=False), lock_timeout_s=store.lock_timeout_s, immediate=True)
        try:
            with migrator.engine.begin() as connection:
                yield connection
        finally:
            migrator.close()
        return
    with store.engine.begin() as connection:
        if store.backend == "postgresql":
            # The store's connections bound every statement by the grading timeout; a migration's DDL
            # may rewrite a large table, and another instance's migration may hold the lock meanwhile:
            # no statement limit here, and up to MIGRATION_LOCK_WAIT_S for the locks.
            connection.execute(text("SET LOCAL statement_timeout = 0"))
            connection.execute(text(f"SET LOCAL lock_timeout = {MIGRATION_LOCK_WAIT_S * 1000}"))
            database, schema = connection.execute(text("SELECT current_database(), current_schema()")).one()
            digest = hashlib.blake2b(f"aegrade.migrations {database} {schema}".encode(), digest_size=8).digest()
            key = int.from_bytes(digest, "big", signed=True)
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield connection
