"""Fixtures shared by the API tests.

`client` is one service per database for the whole session: starting one (the web process's engine
and self-test, and a grading process building its own) takes seconds, and was half of the suite's
time when every test started its own. Its store is shared, so a test using it must not expect an
empty store or count other tests' rows: it finds its own records by the ids it created (or by a
marker in what it sent). A test that needs a fresh store, other settings, or that breaks the store
starts its own service (on `private_database_url` when it breaks the store).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings


@pytest.fixture(scope="session")
def client(shared_database_url: str) -> Iterator[TestClient]:
    """The service on its defaults (authentication off), its store at `shared_database_url` (SQLite,
    and PostgreSQL when it is reachable), its lifespan run: rule sets loaded, grading process started.
    Shared by every test that asks for it: see the module's docstring."""
    with TestClient(create_app(ServiceSettings(database_url=shared_database_url))) as test_client:
        yield test_client
