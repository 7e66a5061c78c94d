"""Fixtures shared by the API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    """The service on its defaults (authentication off), its store at `database_url` (SQLite, and
    PostgreSQL when it is reachable), its lifespan run: rule sets loaded, grading process started."""
    with TestClient(create_app(ServiceSettings(database_url=database_url))) as test_client:
        yield test_client
