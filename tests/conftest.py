"""Shared test set-up: the hypothesis profiles, and the engine built once per session.

Profiles: "ci" (fixed seed, 400 examples a property; loaded automatically when CI is set) and
"dev" (300 random examples, for quick local runs). Choose one with HYPOTHESIS_PROFILE.

Since v1.1 an incomplete result tries the values of each open input (`undetermined_by`), so one
assessment costs a few milliseconds instead of a fraction of one: 2,000 examples a property took
the suite past 15 minutes on 2 cores. The boundaries themselves are pinned by the unit tests just
below, at and just above every threshold; the properties look for what those miss.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import aegrade

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

settings.register_profile(
    "ci",
    max_examples=400,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


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


@pytest.fixture(scope="session")
def postgres_schema_url() -> object:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped at the end of the session."""
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    import uuid

    import sqlalchemy

    schema = f"aegrade_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    return str(request.getfixturevalue("postgres_schema_url"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    reason = postgres_unavailable_reason()
    return [f"audit store tests: SQLite, and PostgreSQL {'SKIPPED: ' + reason if reason else 'at ' + POSTGRES_URL}"]
