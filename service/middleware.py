"""ASGI hygiene around the whole application: our access log, security headers, HEAD, unexpected errors.

`Hygiene` is the outermost layer of the service (service/http.py `BodyLimit` puts it around itself):

- **Access log** (logger `aegrade.access`, INFO): one line per request, `METHOD route-template status
  duration`, e.g. `GET /v1/patients/{patient_id}/episode 404 1.3 ms`. The route's template, never the
  path: patient ids, assessment ids and query strings are not printed. It replaces uvicorn's access
  log, which prints the raw path; `quiet_uvicorn_access_log` turns that one off.
- **Security headers** on every answer: a Content-Security-Policy without inline script (on /docs
  and /redoc: their assets from the service too, Swagger UI's start-up script by its hash, inline
  styles for ReDoc),
  `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (and `frame-ancestors 'none'`),
  `Referrer-Policy: no-referrer`, and `Cache-Control: no-store` on everything but /static (whose
  URLs carry a content hash) and the OpenAPI pages.
- **HEAD** on every GET route: answered as the GET, with its status and headers and no body (FastAPI
  routes answer only the methods they declare, so HEAD was a 405).
- **Unexpected errors** (an exception no handler took): a 500 problem body, and one log line with
  the exception's type and the traceback's frames, never its message (which may quote a request).
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

from starlette.routing import Mount

from service.errors import InternalError

__all__ = ["DOCS_CSP", "Hygiene", "SECURITY_HEADERS", "docs_csp", "quiet_uvicorn_access_log", "route_template", "scrubbed_traceback", "ScrubExceptions"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_logger = logging.getLogger("aegrade.access")
logger = logging.getLogger("aegrade.service")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# Swagger UI and ReDoc (/docs and /redoc) are served from the service (service/app.py: the pinned
# fastapi-offline package's copy), never a CDN. Their pages differ from the rest in two ways: ReDoc
# writes <style> elements at run time (styled-components), and ReDoc's search runs in a blob: worker.
# Swagger UI's one inline start-up script (FastAPI's) is allowed by its hash: the /docs route sends
# this policy with it (docs_csp).
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; "
    "worker-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)


def docs_csp(script_hashes: list[str]) -> str:
    """DOCS_CSP with these inline scripts allowed by their hash ('sha256-...')."""
    allowed = " ".join(f"'{h}'" for h in script_hashes)
    return DOCS_CSP.replace("script-src 'self';", f"script-src 'self' {allowed};" if allowed else "script-src 'self';")


DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
CACHEABLE_PREFIXES = ("/static/",)
CACHEABLE_PATHS = ("/docs", "/redoc", "/openapi.json")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def _templates(routes: Any) -> list[tuple[re.Pattern[str], str]]:
    """(regex, template) of every route, in routing order, FastAPI's included routers opened."""
    found: list[tuple[re.Pattern[str], str]] = []
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):  # FastAPI's included router: its routes, as mounted
            for context in contexts():
                regex, template = getattr(context, "path_regex", None), getattr(context, "path_format", None)
                if isinstance(regex, re.Pattern) and isinstance(template, str):
                    found.append((regex, template))
            continue
        regex, template = getattr(route, "path_regex", None), getattr(route, "path_format", None)
        if isinstance(regex, re.Pattern) and isinstance(template, str):
            found.append((regex, f"{template.rstrip('/')}/{{path}}" if isinstance(route, Mount) else template))
        elif hasattr(route, "routes"):
            found.extend(_templates(route.routes))
    return found


_TEMPLATES: dict[int, list[tuple[re.Pattern[str], str]]] = {}


def route_template(scope: Scope) -> str:
    """The template of the route for `scope`'s path (`/v1/patients/{patient_id}/episode`), or "-"
    when no route has it. Never the path itself."""
    app = scope.get("app")
    if app is None:
        return "-"
    table = _TEMPLATES.get(id(app))
    if table is None:
        table = _TEMPLATES[id(app)] = _templates(getattr(app, "routes", ()))
    path = scope.get("path", "")
    for regex, template in table:
        if regex.match(path):
            return template
    return "-"


def scrubbed_traceback(exc: BaseException) -> str:
    """The traceback's frames and the exception types of the chain, without any exception's message."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    chain: list[BaseException] = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    for i, item in enumerate(reversed(chain)):
        if i:
            parts.append("\nThe above exception led to the following one:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        parts.append(f"{type(item).__module__}.{type(item).__qualname__} (message withheld: it may quote a request)\n")
    return "".join(parts).rstrip("\n")


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ScrubExceptions(logging.Filter):
    """On uvicorn's "Exception in ASGI application" records: the traceback without exception messages.

    Installed on the `uvicorn.error` logger; uvicorn's own start-up and lifespan records are left whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None and "ASGI application" in str(record.msg):
            record.exc_text = scrubbed_traceback(exc_info[1])
        return True


def quiet_uvicorn_access_log() -> None:
    """uvicorn's access log prints raw paths (patient ids among them): turn it off, whatever uvicorn's
    options. uvicorn logs access only while the `uvicorn.access` logger has handlers; it is checked
    for each connection, after this runs at import of the application."""
    access = logging.getLogger("uvicorn.access")
    for handler in list(access.handlers):
        access.removeHandler(handler)
    access.propagate = False
    access.disabled = True
    error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ScrubExceptions) for f in error.filters):
        error.addFilter(ScrubExceptions())


def _problem_bytes(code: str, message: str) -> bytes:
    """The 500 body, in the one error shape (service/http.py error_body)."""
    return json.dumps({"code": code, "message": message, "detail": {"code": code, "message": message}}).encode()


class Hygiene:
    """ASGI middleware: access log, security headers, HEAD as GET without body, unexpected errors as 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        path = scope["path"]
        head = method == "HEAD"
        inner = dict(scope, method="GET") if head else scope
        docs = path in DOCS_PATHS
        cacheable = path in CACHEABLE_PATHS or path.startswith(CACHEABLE_PREFIXES)
        status = 0
        started_response = False
        finished = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started_response, finished
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started_response = True
                headers = [(k.lower(), v) for k, v in message.get("headers", ())]
                names = {k for k, _ in headers}
                for name, value in SECURITY_HEADERS:
                    if name not in names:
                        headers.append((name, value))
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", (DOCS_CSP if docs else CSP).encode()))
                if method == "POST" or not cacheable:
                    headers = [(k, v) for k, v in headers if k != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                message = dict(message, headers=headers)
            elif message["type"] == "http.response.body":
                more = bool(message.get("more_body", False))
                if head:
                    if more:
                        return
                    message = {"type": "http.response.body", "body": b"", "more_body": False}
                finished = not more
            await send(message)

        try:
            await self.app(inner, receive, send_with_headers)
        except Exception as exc:  # noqa: BLE001 - any exception no handler took: a 500, logged without its message
            logger.error("unexpected error on %s %s: %s\n%s", method, route_template(inner), type(exc).__name__, scrubbed_traceback(exc))
            if not started_response:
                body = _problem_bytes(InternalError.code, "unexpected error; no grade was given")
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                    }
                )
                await send_with_headers({"type": "http.response.body", "body": body, "more_body": False})
            else:
                status = 500
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "%s %s %s %.1f ms%s",
                    method,
                    route_template(inner),
                    status or "-",
                    (time.perf_counter() - started) * 1000,
                    "" if finished or not status else " (incomplete)",
                )
