"""Docker does not run on the test machines; what can be checked about the deployment files is."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_variables_are_service_settings() -> None:
    environment = COMPOSE["services"]["api"]["environment"]
    fields = {f"AEGRADE_{name.upper()}" for name in ServiceSettings.model_fields}
    assert set(environment) <= fields, set(environment) - fields


def test_required_secrets_have_no_default() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for variable in ("AEGRADE_DB_PASSWORD", "AEGRADE_API_KEYS"):
        assert re.search(r"\$\{" + variable + r":\?", text), variable
        assert not re.search(r"\$\{" + variable + r":-", text), variable


def test_services_have_healthchecks_and_the_api_waits_for_the_database() -> None:
    services = COMPOSE["services"]
    assert "healthcheck" in services["db"] and "healthcheck" in services["api"]
    assert services["api"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_compose_database_url_is_the_psycopg_dialect_the_store_uses() -> None:
    url = COMPOSE["services"]["api"]["environment"]["AEGRADE_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://")


def test_dockerfile_builds_durable_rules_and_points_at_the_rules() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "build-essential" in dockerfile
    assert "AEGRADE_RULES_DIR=/app/rules" in dockerfile and "COPY rules ./rules" in dockerfile
    assert 'CMD ["uvicorn", "service.app:app"' in dockerfile
    assert "psycopg" in dockerfile


def test_settings_are_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for name in ServiceSettings.model_fields:
        assert f"AEGRADE_{name.upper()}" in readme, name
