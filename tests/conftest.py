"""Shared test set-up: the hypothesis profiles (tests/profiles.py), the engine built once per
session, and the audit store's databases.

Profiles: "ci" (fixed seed, 400 examples a property; loaded automatically when CI is set), "dev"
(300 random examples, for local runs) and "fast" (fixed seed, 20 examples; loaded automatically for
the fast lane, `-m "not slow"`). HYPOTHESIS_PROFILE chooses one explicitly.

Since v1.1 an incomplete result tries the values of each open input (`undetermined_by`), so one
assessment costs a few milliseconds instead of a fraction of one: 2,000 examples a property took
the suite past 15 minutes on 2 cores. The boundaries themselves are pinned by the unit tests
(tests/unit/test_boundaries.py, test_thrombosis_boundaries.py), at and just above every threshold;
the properties look for what those miss.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import aegrade
from tests import profiles

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

profiles.load(profiles.choose(""))


def pytest_configure(config: pytest.Config) -> None:
    profiles.load(profiles.choose(config.getoption("markexpr", "") or ""))


@pytest.fixture(scope="session")
def engine() -> aegrade.Engine:
    return aegrade.default_engine()


# ---- the audit store's databases ------------------------------------------------------------------

POSTGRES_URL = os.environ.get("AEGRADE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_unavailable_reason() -> str | None:
    """None when PostgreSQL answers at POSTGRES_URL; otherwise why not (tests then skip, saying so)."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(POSTGRES_URL)
        psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database, connect_timeout=3
        ).close()
    except Exception as exc:  # any failure means: not here
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}"
    return None


@contextmanager
def _fresh_postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a new schema, dropped on leaving (skips without PostgreSQL)."""
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    import uuid

    import sqlalchemy

    schema = f"aegrade_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, shared by the whole session (every test
    on PostgreSQL sees the others' records), dropped at its end."""
    with _fresh_postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite: a new file for the test. PostgreSQL: the session's schema, shared with other tests."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture(params=["sqlite", "postgresql"])
def private_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store no other test sees, on both databases (PostgreSQL: a schema of its own), for tests
    that break it (drop a table) or need it empty."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        return
    with _fresh_postgres_schema() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def shared_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store per database for the whole session: the shared services' (tests/api/conftest.py)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('shared') / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_schema_url"))


OWN_STORE_FIXTURES = {"database_url", "private_database_url"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that asks for a store of its own (`database_url`, `private_database_url`) starts a
    service of its own, or restarts one, on each database: seconds each. They are marked slow, out
    of the fast lane; the tests on the shared services (`client`, `shared_database_url`) are not."""
    for item in items:
        if OWN_STORE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        label = getattr(item, "operation_label", None)
        if isinstance(label, str) and not item.nodeid.endswith("]"):
            # Schemathesis gives every operation's test the same node id; pytest-xdist tells items
            # apart by node id, so each gets its operation in brackets, as a parametrized test would.
            item._id = item.parent.id.child(f"{item.nodeid.rpartition('::')[2]}[{label}]")  # type: ignore[union-attr]


def pytest_report_header(config: pytest.Config) -> list[str]:
    reason = postgres_unavailable_reason()
    return [f"audit store tests: SQLite, and PostgreSQL {'SKIPPED: ' + reason if reason else 'at ' + POSTGRES_URL}"]
