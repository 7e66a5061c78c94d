"""The audit store's schema migrations (service/migrations), on SQLite and PostgreSQL: an empty
database is upgraded to what the code declares; a store made by the release before migrations is
upgraded at service start and keeps its records; a store behind (with AEGRADE_MIGRATE=false) or
ahead of the code stops the service, saying why and what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData

import aegrade
import service.cds_hooks  # noqa: F401 - declares its tables on the shared metadata
import service.episodes  # noqa: F401
from service import migrations
from service.store import AuditRecord, AuditStore, RawJSON, StoreUnavailable, metadata
from tests.api.server import REPO, Server

# Tables the code declares that the release before migrations (revision 0001) did not have.
ADDED_SINCE_BASELINE = {"undelivered"}
VIGNETTES = REPO / "tests" / "golden" / "vignettes" / "crs_icans.jsonl"
REQUEST: dict[str, Any] = json.loads(VIGNETTES.read_text().splitlines()[0])["request"]


@pytest.fixture
def url(private_database_url: str) -> str:
    """An empty store of the test's own (PostgreSQL: a schema of its own)."""
    return private_database_url


def previous_release_metadata() -> MetaData:
    """The tables of the release before migrations, as its `metadata.create_all` made them."""
    old = MetaData()
    for table in metadata.sorted_tables:
        if table.name not in ADDED_SINCE_BASELINE:
            table.to_metadata(old)
    return old


def differences(url: str, declared: MetaData) -> list[object]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), declared))
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def store_of_previous_release(url: str) -> AuditRecord:
    """A store as the release before migrations left it: its tables (revision 0001's DDL), no
    alembic_version, one graded assessment on record. Returns that record."""
    store = AuditStore(url)
    with store.engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), migrations.BASELINE)
        connection.execute(sqlalchemy.text("DROP TABLE alembic_version"))
    result = aegrade.default_engine().assess(REQUEST)
    record = AuditRecord.graded(
        result, request=RawJSON(json.dumps(REQUEST)), result_json=result.model_dump_json(), duration_ms=1.5
    )
    store.record(record)
    store.close()
    return record


def set_revision(url: str, revision: str) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def refusal(env: dict[str, str]) -> str:
    """The service does not start with `env`: what it printed."""
    server = Server(env)
    with pytest.raises(RuntimeError, match="server exited") as refused:
        server.start(timeout=60)
    server.stop()
    return str(refused.value)


# ---- (a) an empty database -------------------------------------------------------------------------


def test_an_empty_database_is_upgraded_to_what_the_code_declares(url: str) -> None:
    store = AuditStore(url)
    store.create_schema()
    store.close()
    assert revision_of(url) == migrations.head()
    assert differences(url, metadata) == []
    expected = set(metadata.tables) | {"alembic_version"}
    assert set(sqlalchemy.inspect(sqlalchemy.create_engine(url)).get_table_names()) == expected


def test_revision_0001_is_the_schema_of_the_previous_release(url: str) -> None:
    store = AuditStore(url)
    with store.engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), migrations.BASELINE)
    store.close()
    assert differences(url, previous_release_metadata()) == []


def test_startups_that_race_upgrade_once(url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        store = AuditStore(url)
        try:
            store.create_schema()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert revision_of(url) == migrations.head()
    assert differences(url, metadata) == []


# ---- (b) a store of the previous release -----------------------------------------------------------


def test_a_store_of_the_previous_release_is_upgraded_at_start_and_keeps_its_records(url: str) -> None:
    old = store_of_previous_release(url)
    assert revision_of(url) is None
    server = Server({"AEGRADE_DATABASE_URL": url}).start(timeout=60)
    try:
        read = httpx.get(f"{server.url}/v1/assessments/{old.id}", timeout=10)
        assert read.status_code == 200, read.text
        body = read.json()
        assert body["id"] == old.id and body["delivered"] is True and body["outcome"] == "graded"
        assert body["request"] == REQUEST
        posted = httpx.post(f"{server.url}/v1/assessments", json=REQUEST, timeout=30)  # writes still work
        assert posted.status_code == 200, posted.text
    finally:
        server.stop()
    assert revision_of(url) == migrations.head()
    assert differences(url, metadata) == []
    store = AuditStore(url)
    assert old.id in store.ids() and store.undelivered_ids() == set()
    store.close()


def test_the_command_line_upgrades_a_store_of_the_previous_release(url: str) -> None:
    store_of_previous_release(url)
    env = {**os.environ, "AEGRADE_DATABASE_URL": url}

    def run(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.migrations", action], cwd=REPO, env=env, capture_output=True, text=True
        )

    current = run("current")
    assert current.returncode == 0 and "current: none (the tables of the release before migrations" in current.stdout
    assert run("check").returncode == 1
    upgraded = run("upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"to {migrations.head()}" in upgraded.stdout
    assert run("check").returncode == 0
    assert f"current: {migrations.head()}" in run("current").stdout
    assert revision_of(url) == migrations.head()


# ---- (c) behind, AEGRADE_MIGRATE=false; (d) ahead ---------------------------------------------------


def test_a_store_behind_with_migrate_false_stops_the_service(url: str) -> None:
    store = AuditStore(url)
    with store.engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), migrations.BASELINE)
    store.close()
    printed = refusal({"AEGRADE_DATABASE_URL": url, "AEGRADE_MIGRATE": "false"})
    assert f"is at schema revision {migrations.BASELINE}" in printed
    assert f"needs revision {migrations.head()}" in printed
    assert "python -m service.migrations upgrade" in printed
    assert revision_of(url) == migrations.BASELINE  # left as it was


def test_an_empty_database_with_migrate_false_stops_the_service(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    printed = refusal({"AEGRADE_DATABASE_URL": url, "AEGRADE_MIGRATE": "false"})
    assert "is at schema revision none (no tables)" in printed and "python -m service.migrations upgrade" in printed


def test_a_store_ahead_of_the_code_stops_the_service(url: str) -> None:
    store = AuditStore(url)
    store.create_schema()
    store.close()
    set_revision(url, "9999_from_the_future")
    printed = refusal({"AEGRADE_DATABASE_URL": url})
    assert "is at schema revision 9999_from_the_future, which this version of aegrade does not know" in printed
    assert f"it needs revision {migrations.head()}" in printed
    assert revision_of(url) == "9999_from_the_future"  # not touched


def test_the_migrate_setting_checks_without_writing(url: str) -> None:
    store = AuditStore(url)
    with pytest.raises(migrations.SchemaMismatch, match="AEGRADE_MIGRATE is false"):
        store.create_schema(migrate=False)
    store.create_schema()
    store.create_schema(migrate=False)  # at head: starts
    store.close()


def test_a_failed_upgrade_leaves_the_store_as_it_was(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:  # an index of that name: 0001 fails at its last statement
        connection.execute(sqlalchemy.text("CREATE TABLE other (card VARCHAR(36))"))
        connection.execute(sqlalchemy.text("CREATE INDEX ix_cds_feedback_card ON other (card)"))
    store = AuditStore(url)
    with pytest.raises(StoreUnavailable, match="cannot prepare the audit store"):
        store.create_schema()
    store.close()
    assert set(sqlalchemy.inspect(engine).get_table_names()) == {"other"}  # no table of 0001, no alembic_version
    engine.dispose()


def test_on_postgresql_a_migration_has_no_statement_limit_and_waits_for_the_lock_in_bounds(postgres_schema_url: str) -> None:
    """The store bounds every statement by half the grading timeout (a stalled store is an error);
    a migration's DDL may take longer, and a second instance waits for the first's migration."""
    store = AuditStore(postgres_schema_url, lock_timeout_s=0.5)
    try:
        with store.engine.connect() as plain:
            assert plain.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "500ms"
        with migrations._locked(store) as connection:
            assert connection.execute(sqlalchemy.text("SHOW statement_timeout")).scalar() == "0"
            shown = connection.execute(sqlalchemy.text("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'")).scalar()
            assert int(shown) == migrations.MIGRATION_LOCK_WAIT_S * 1000  # milliseconds
    finally:
        store.close()
