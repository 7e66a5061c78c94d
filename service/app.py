"""The ASGI application: `uvicorn service.app:app` starts it on the embedded defaults.

The lifespan loads every rule file and runs its own test cases (aegrade.Engine), and opens the audit
store; if either fails, the service does not start.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import importlib.metadata
import importlib.resources
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

import aegrade
from service.cds_hooks import call_examples
from service.cds_hooks import router as cds_router
from service.course import router as course_pages
from service.fhir_native import FhirErrors
from service.fhir_routes import router as fhir_router
from service.http import BodyLimit, install_error_handlers
from service.middleware import docs_csp
from service.pages import STATIC_DIR
from service.pages import router as pages
from service.record_view import router as record_view
from service.routes import RAW_BODY_MODELS, router
from service.settings import ServiceSettings
from service.episodes import EpisodeStore
from service.grader import Grader, GraderConfig
from service.store import AuditStore

__all__ = ["app", "create_app"]

logger = logging.getLogger("aegrade.service")

DESCRIPTION = """Adverse-event grading for immunotherapy toxicities: ASTCT 2019 CRS and ICANS grades, with
the rules that set them, their criteria, citations and evidence levels. Decision support: every
answer informs, none orders. Every assessment answered is stored before the answer is sent."""


def create_app(
    settings: ServiceSettings | None = None, *, grader_engine_factory: str | None = None
) -> FastAPI:
    """The application. `grader_engine_factory` is for tests: "module:function" that builds the
    grading process's engine (see GraderConfig)."""
    settings = settings or ServiceSettings()
    _configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grader = Grader(
            GraderConfig(
                database_url=settings.database_url,
                rules_dir=str(settings.rules_dir) if settings.rules_dir is not None else None,
                rule_settings=settings.rule_settings,
                log_level=settings.log_level,
                lock_timeout_s=settings.store_lock_timeout_s,
                masking_window_hours=settings.episode_masking_window_hours,
                engine_factory=grader_engine_factory,
            ),
            processes=settings.grading_processes,
        )
        grader.launch()  # the grading processes build their engines while this one builds its own
        try:
            engine = aegrade.Engine(rules_dir=settings.rules_dir, settings=settings.rule_settings)
            # The web process's one SQLAlchemy engine: it reads records and episodes, and marks
            # undelivered answers; the grading processes write everything that grades.
            store = AuditStore(settings.database_url, lock_timeout_s=settings.store_lock_timeout_s)
            store.create_schema(migrate=settings.migrate)  # upgrades it, or refuses a store behind or ahead
            episodes = EpisodeStore(store, engine, masking_window_hours=settings.episode_masking_window_hours)
            await grader.start([(rs.id, rs.sha256) for rs in engine.rulesets])
        except BaseException:
            await grader.close(timeout=5)
            raise
        app.state.grader = grader
        app.state.engine = engine
        app.state.episodes = episodes
        app.state.store = store
        # What startup built (rule sets, schemas, models) lives as long as the process. Left in the
        # collector's generations, every full collection scanned it again: under load they came
        # about 3.6 times a second and stopped the event loop for 26 ms on average (48 ms at most),
        # which made the p99 latency. Frozen, they are never scanned again.
        gc.collect()
        gc.freeze()
        logger.info(
            "aegrade ready: %s; audit store %s; authentication %s",
            ", ".join(rs.label for rs in engine.rulesets),
            store.safe_url,
            "on" if settings.api_keys else "off",
        )
        try:
            yield
        finally:
            await grader.close()
            store.close()

    app = FastAPI(
        title="aegrade",
        version=aegrade.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below, from the packaged assets: never a CDN
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(fhir_router)
    app.include_router(cds_router)
    app.include_router(pages)
    app.include_router(record_view)  # /assessments/{id}: the page CDS cards link to
    app.include_router(course_pages)
    _install_docs(app)  # before /static: it mounts /static/vendor/...
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, settings=settings)  # + access log, headers, HEAD
    app.add_middleware(FhirErrors)  # outermost: every error on /v1/fhir/* as an OperationOutcome (service/fhir_native.py)
    _document_raw_bodies(app)
    return app


DOCS_ASSETS = "fastapi-offline"
"""The pinned package (pyproject.toml) whose copy of Swagger UI and ReDoc /docs and /redoc load."""


def _install_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc), their scripts, styles and icon served by the service
    from the pinned DOCS_ASSETS package under /static/vendor/<package>-<version>/ (the URL changes
    with the version, so the assets may be cached), never from a CDN: the pages work on networks
    that block CDNs. Swagger UI's inline start-up script is allowed by its hash (service/middleware.py)."""
    version = importlib.metadata.version(DOCS_ASSETS)
    assets = importlib.resources.files(DOCS_ASSETS.replace("-", "_")) / "static"
    prefix = f"/static/vendor/{DOCS_ASSETS}-{version}"
    # ReDoc 2 shows its maker's logo from cdn.redoc.ly, whatever its options: the copy served here
    # has no such URL (the image then fails at once and ReDoc leaves it out), so that nothing on
    # these pages is loaded from another host.
    redoc_js = (assets / "redoc.standalone.js").read_bytes().replace(b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"data:,")

    @app.get(f"{prefix}/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:
        return Response(redoc_js, media_type="text/javascript; charset=utf-8")

    app.mount(prefix, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{prefix}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{prefix}/swagger-ui.css",
            swagger_favicon_url=f"{root}{prefix}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": False},
        )
        html = bytes(page.body)
        hashes = [
            "sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode()
            for script in re.findall(rb"<script>(.*?)</script>", html, flags=re.S)
        ]
        return HTMLResponse(html, headers={"Content-Security-Policy": docs_csp(hashes)})

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{prefix}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{prefix}/favicon.png",
            with_google_fonts=False,
        )


def _document_raw_bodies(app: FastAPI) -> None:
    """Put the models of bodies that routes read themselves (their `openapi_extra` refers to them)
    in the OpenAPI components, generated by FastAPI as for a body it reads: `POST /v1/assessments`
    hands its body to the grading process unparsed."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            components = generate()["components"]["schemas"]
            for model in RAW_BODY_MODELS:

                async def takes(body: Any) -> None: ...

                takes.__annotations__ = {"body": model, "return": None}
                route = APIRoute("/", takes, methods=["POST"])
                generated = get_openapi(title=app.title, version=app.version, routes=[route])["components"]["schemas"]
                components.setdefault(model.__name__, generated[model.__name__])
        schema = app.openapi_schema
        assert schema is not None
        # A malformed path parameter is a 404 (service/http.py): FastAPI's generated 422 is not
        # answered by operations that take no body and no query.
        for item in schema["paths"].values():
            for operation in item.values():
                kinds = {p.get("in") for p in operation.get("parameters", [])}
                if "requestBody" not in operation and kinds <= {"path"}:
                    operation.get("responses", {}).pop("422", None)
        # The CDS example's Observations are charted 10 minutes ago: the service grades only what
        # was charted in its window, so the example is made anew for each document served.
        call = schema["paths"]["/cds-services/{service_id}"]["post"]["requestBody"]["content"]["application/json"]
        call["examples"] = call_examples()
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _configure_logging(level: str) -> None:
    """aegrade's loggers write to stderr (ids, codes and timings; never patient data). Our access log
    (`aegrade.access`: method, route template, status, duration) replaces uvicorn's, which prints raw
    paths with the patient ids in them: that one is turned off here, whatever uvicorn's options."""
    from service.middleware import quiet_uvicorn_access_log

    root = logging.getLogger("aegrade")
    root.setLevel(level)
    if not any(getattr(h, "_aegrade", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._aegrade = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    quiet_uvicorn_access_log()


app = create_app()
