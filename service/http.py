"""HTTP plumbing: the body-size limit, access control, and the mapping of errors to statuses.

| status | when | body |
|---|---|---|
| 400 | the body is not JSON | ValidationErrorResponse (type json_invalid) |
| 401 | AEGRADE_API_KEYS is set and the bearer key is missing or wrong | ProblemResponse (unauthorized) |
| 404 | no such assessment |
| 412 | CDS Hooks: a prefetch the service needs is missing (it does not query FHIR servers) | ProblemResponse (prefetch_missing) | ProblemResponse (not_found) |
| 413 | the body is over AEGRADE_MAX_BODY_BYTES | ProblemResponse (body_too_large) |
| 422 | invalid or contradictory input | ValidationErrorResponse, one entry per field |
| 500 | the engine's evaluators disagreed or lost a result: no grade | ProblemResponse (the engine error's code) |
| 503 | the audit store cannot be written or read: no grade | ProblemResponse (store_unavailable) |
| 503 | the grading process gave no grade in time (AEGRADE_GRADING_TIMEOUT_S) | ProblemResponse (grading_unavailable) |
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aegrade.errors import EngineError, InvalidAssessment
from aegrade.fhir import FhirInputError
from service.store import StoreUnavailable

__all__ = ["ApiError", "BodyLimit", "install_error_handlers", "keys_match"]

logger = logging.getLogger("aegrade.service")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ApiError(Exception):
    """An error answer with a stable code (401, 404, 409, 412, 413, 500, 503)."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _problem(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": {"code": code, "message": message}}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before the app sees it.

    The body (at most `max_bytes`) is read here and handed on whole, whatever Content-Length says.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _problem(413, "body_too_large", f"the request body is over {self.max_bytes} bytes")
        await response(scope, receive, send)


def keys_match(presented: str, keys: list[str]) -> bool:
    """Whether `presented` is one of `keys`, in time independent of where or whether it matches."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = False
    for key in keys:
        found |= hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    return found


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _field_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"loc": [_json_safe(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": _field_errors(errors)}, status_code=400)
        whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in errors)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if whole_body and (not await request.body() or media_type != "application/json"):
            not_json = {"loc": ["body"], "msg": "the body must be JSON, sent as Content-Type: application/json", "type": "json_invalid"}
            return JSONResponse({"detail": [not_json]}, status_code=400)
        return JSONResponse({"detail": _field_errors(errors)}, status_code=422)

    @app.exception_handler(InvalidAssessment)
    async def _assessment_invalid(_request: Request, exc: InvalidAssessment) -> JSONResponse:
        body = [{"loc": ["body", *e.loc], "msg": e.msg, "type": e.code} for e in exc.errors]
        return JSONResponse({"detail": body}, status_code=422)

    @app.exception_handler(FhirInputError)
    async def _fhir_invalid(_request: Request, exc: FhirInputError) -> JSONResponse:
        return JSONResponse({"detail": [e.as_dict() for e in exc.errors]}, status_code=422)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _problem(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def _store(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        logger.error("audit store unavailable: %s", exc)
        return _problem(503, "store_unavailable", "the audit store cannot be written: no grade was given")

    @app.exception_handler(EngineError)
    async def _engine(_request: Request, exc: EngineError) -> JSONResponse:
        return _problem(500, exc.code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, say): it is not JSON
            not_json = {"loc": ["body"], "msg": f"the body is not JSON: {exc.detail}", "type": "json_invalid"}
            return JSONResponse({"detail": [not_json]}, status_code=400)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _problem(exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return _problem(500, "internal_error", "unexpected error; no grade was given")
