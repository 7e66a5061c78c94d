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
| AEGRADE_MAX_FHIR_BODY_BYTES | 8388608 | the body limit of the FHIR and CDS Hooks routes (/v1/fhir/*, /cds-services/*), sized for real prefetches |
| AEGRADE_PUBLIC_BASE_URL | (empty: no card links) | the service's public URL (https://host[/prefix]): the JWT audience of CDS calls and the base of card links |
| AEGRADE_CDS_ISSUERS | (empty: no JWT check) | JSON: {"issuer": {"jwks": {...}} or {"jku": "https://..."}}; CDS calls then need a signed JWT (service/cds_auth.py) |
| AEGRADE_CORS_ORIGINS | (empty: no CORS) | browser origins allowed to call the service (comma-separated or a JSON list) |
| AEGRADE_CDS_FHIR_SERVERS | (empty: never) | base URLs of FHIR servers the CDS service may query for a prefetch the client did not send |
| AEGRADE_CDS_FHIR_TIMEOUT_S | 5 | CDS Hooks: seconds for each query of the client's FHIR server |
| AEGRADE_CDS_FHIR_MAX_BYTES | 5242880 | CDS Hooks: largest answer read from the client's FHIR server |
| AEGRADE_MIGRATE | true | upgrade the audit store's schema at start (Alembic); false: refuse to start when it is behind (`python -m service.migrations upgrade`) |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
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

    max_fhir_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=(
            "Largest request body on the FHIR and CDS Hooks routes (/v1/fhir/*, /cds-services/*): a prefetch of "
            "100 Observations, 100 administrations and their Medications is several hundred KiB, an EHR's "
            "several MiB; the other routes keep AEGRADE_MAX_BODY_BYTES."
        ),
    )
    public_base_url: str | None = Field(
        default=None,
        description=(
            "The service's public URL, as CDS clients and browsers reach it (https://host or https://host/prefix). "
            "CDS Hooks: the JWT audience is <this>/cds-services/<id>; card links point under it. Never taken from "
            "the request's Host header. Empty: cards carry no link to the assessment."
        ),
    )
    cds_issuers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            'CDS clients trusted to call the CDS service, by JWT issuer: {"<iss>": {"jwks": {"keys": [...]}}} or '
            '{"<iss>": {"jku": "https://.../jwks.json"}}, optionally with "algorithms" (default ES384 and RS384). Set: '
            "a CDS call needs a JWT signed by one of them (or an API key of AEGRADE_API_KEYS). Needs "
            "AEGRADE_PUBLIC_BASE_URL (the audience)."
        ),
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins (scheme://host[:port]) allowed by CORS: comma-separated, or a JSON list.",
    )
    cds_fhir_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "CDS Hooks: base URLs of the FHIR servers the service may query (GET only) for a prefetch the client did not "
            "send, with the call's fhirAuthorization. A fhirServer not under one of them is never contacted (no "
            "requests to addresses a caller chooses). Comma-separated or a JSON list. Empty: never query; 412."
        ),
    )
    cds_fhir_timeout_s: float = Field(default=5.0, gt=0, le=60, description="CDS Hooks: seconds for each FHIR query.")
    cds_fhir_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="CDS Hooks: largest FHIR answer read."
    )

    @field_validator("cors_origins", "cds_fhir_servers", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if origin == "*" or parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]); '*' is not accepted")
        return [origin.rstrip("/") for origin in origins]

    @field_validator("public_base_url", mode="after")
    @classmethod
    def _base_url(cls, url: str | None) -> str | None:
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL without query or fragment, e.g. https://aegrade.example.org")
        return url.rstrip("/")

    @field_validator("cds_fhir_servers")
    @classmethod
    def _fhir_servers(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
                raise ValueError(f"{url!r} is not a FHIR base URL (http(s)://host[:port][/path], no user, query or fragment)")
        return [url.rstrip("/") for url in urls]

    @field_validator("cds_issuers")
    @classmethod
    def _issuers(cls, issuers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for issuer, trust in issuers.items():
            if set(trust) - {"algorithms"} not in ({"jwks"}, {"jku"}):
                raise ValueError(f"issuer {issuer!r}: give exactly one of jwks (a JWK Set) or jku (its URL), and optionally algorithms")
            algorithms = trust.get("algorithms", ["ES384"])
            signing = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512")  # service/cds_auth.py ASYMMETRIC
            if not isinstance(algorithms, list) or not algorithms or any(a not in signing for a in algorithms):
                raise ValueError(f"issuer {issuer!r}: algorithms must be a list of {', '.join(signing)}")
            if "jwks" in trust and not (isinstance(trust["jwks"], dict) and isinstance(trust["jwks"].get("keys"), list)):
                raise ValueError(f"issuer {issuer!r}: jwks must be a JWK Set, {{\"keys\": [...]}}")
            if "jku" in trust:
                parts = urlsplit(str(trust["jku"]))
                loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
                if not (parts.scheme == "https" or (parts.scheme == "http" and loopback)) or not parts.netloc:
                    raise ValueError(f"issuer {issuer!r}: jku must be an https URL (http only on loopback)")
        return issuers

    @model_validator(mode="after")
    def _issuers_need_audience(self) -> ServiceSettings:
        if self.cds_issuers and not self.public_base_url:
            raise ValueError("AEGRADE_CDS_ISSUERS needs AEGRADE_PUBLIC_BASE_URL: the JWT audience is the service's public URL")
        return self

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
