"""Service settings, from environment variables (prefix AEGRADE_), with embedded defaults.

| variable | default | meaning |
|---|---|---|
| AEGRADE_DATABASE_URL | sqlite:///./var/aegrade.sqlite3 | audit store (SQLAlchemy URL); postgresql+psycopg://... for PostgreSQL |
| AEGRADE_RULES_DIR | rules/ of the checkout | directory of rule files |
| AEGRADE_RULE_SETTINGS | {} | JSON: {"rule set id": {"setting": value}} for the interpretive settings |
| AEGRADE_API_KEYS | (empty: no authentication) | comma-separated keys; when set, /v1/* needs Authorization: Bearer <key> |
| AEGRADE_MAX_BODY_BYTES | 65536 | larger request bodies get 413 |
| AEGRADE_LOG_LEVEL | INFO | log level of the aegrade loggers |
| AEGRADE_GRADING_PROCESSES | 1 | processes that grade and record, for every route, beside the web process |
| AEGRADE_GRADING_TIMEOUT_S | 30 | every route that grades (JSON, form, FHIR, CDS Hooks, episodes): longer without a committed grade is a 503, and the grading process is replaced |
| AEGRADE_FHIR_WINDOW_HOURS | 4 | FHIR input: Observations older than this before the assessment time are not used |
| AEGRADE_FHIR_ADMINISTRATIONS_MASK_FEVER | true | FHIR input: a tocilizumab, anakinra, corticosteroid or antipyretic administration given at or after CRS onset in the Bundle, or for CRS, sets fever_masked; premedication never does |
| AEGRADE_EPISODE_MASKING_WINDOW_HOURS | (empty: the CRS rule file's fever_masking.window, no limit) | how long after a masking treatment fever stays masked (episodes, FHIR); overrides the rule file (an interpretation: ASTCT 2019 sets no duration) |
| AEGRADE_BODY_TIMEOUT_S | 30 | a request body not received whole within this many seconds gets 408 |
| AEGRADE_SESSION_SECRET | (empty: a random secret per process) | HMAC key of the bedside form's session and CSRF tokens (32+ characters); set it when several processes serve the form |
| AEGRADE_MIGRATE | true | upgrade the audit store's schema at start (Alembic); false: refuse to start when it is behind (`python -m service.migrations upgrade`) |
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AEGRADE_", extra="forbid")

    database_url: str = Field(default="sqlite:///./var/aegrade.sqlite3", description="SQLAlchemy URL of the audit store.")
    migrate: bool = Field(
        default=True,
        description=(
            "Upgrade the audit store's schema to this version's at start (service/migrations). False: the "
            "service refuses to start when the schema is behind; run `python -m service.migrations upgrade`."
        ),
    )
    rules_dir: Path | None = Field(default=None, description="Directory of rule files; default rules/ of the checkout.")
    rule_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='Interpretive settings, e.g. {"astct-crs": {"facemask_low_flow": "flow"}}.'
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated API keys; empty turns authentication off."
    )
    max_body_bytes: int = Field(default=65536, ge=1024, le=10 * 1024 * 1024, description="Largest request body accepted.")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    episode_masking_window_hours: float | None = Field(
        default=None,
        gt=0,
        le=24 * 365,
        description=(
            "Episodes: hours after a tocilizumab, corticosteroid or antipyretic dose during which fever stays "
            "masked; overrides the CRS rule file's fever_masking.window. Empty: the rule file's window (no limit as "
            "shipped). ASTCT 2019 sets no duration; either is an interpretation."
        ),
    )

    grading_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes that grade and record, for every route, beside the web process (service/grader.py).",
    )
    grading_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description=(
            "Every route that grades: seconds to wait for the grade and its committed record; past it the answer "
            "is 503 (no grade), the record (if committed) is marked undelivered, and the grading process is replaced."
        ),
    )

    @property
    def store_lock_timeout_s(self) -> float:
        """Every wait on the store (SQLite busy timeout, PostgreSQL lock and statement timeouts):
        half the grading timeout, so that a stalled store is answered 503 store_unavailable by the
        grading process itself, in time, without replacing it."""
        return self.grading_timeout_s / 2

    fhir_window_hours: float = Field(
        default=4.0,
        gt=0,
        le=24 * 7,
        description="FHIR input: the latest value of each kind no older than this before the assessment time is used.",
    )
    fhir_administrations_mask_fever: bool = Field(
        default=True,
        description=(
            "FHIR input: a tocilizumab, anakinra, corticosteroid or antipyretic administration given at or after "
            "CRS onset (a fever in the Bundle before it), or for CRS, sets crs.fever_masked; premedication never "
            "does. False: administrations are not read as masking."
        ),
    )

    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds to receive a request body whole; a body that is not in by then is answered 408.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        min_length=32,
        description=(
            "HMAC key of the bedside form's session cookie and CSRF tokens. Empty: a random key per process "
            "(sessions end with the process; set it when several processes serve the form)."
        ),
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[str]) -> list[str]:
        short = [k for k in keys if len(k) < 16]
        if short:
            raise ValueError("each API key must be at least 16 characters")
        return keys
