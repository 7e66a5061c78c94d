"""HTTP plumbing: the body-size limit, access control, and the mapping of errors to statuses.

Every answer that is not 2xx (but the form's HTML pages) has one shape, `error_body`:
{"code", "message", "detail"}, `detail` being {"code", "message"} (ProblemResponse) or the list of
{loc, msg, type} (ValidationErrorResponse: 400 and 422, FIELD_ERROR_CODES).

| status | when | body |
|---|---|---|
| 400 | the body is not JSON | ValidationErrorResponse (type json_invalid) |
| 400 | a JSON body that is not UTF-8 (a BOM, UTF-16/32) | ValidationErrorResponse (type json_invalid) |
| 401 | AEGRADE_API_KEYS is set and the bearer key is missing or wrong; CDS Hooks with AEGRADE_CDS_ISSUERS: no valid JWT (or key) | ProblemResponse (unauthorized) |
| 401 | the bedside form (AEGRADE_API_KEYS set): a wrong key at /login | HTML page |
| 403 | the bedside form: a POST without the form's CSRF token | HTML page, the values kept |
| 404 | no such assessment; an id in the path not of the route's form | ProblemResponse (not_found) |
| 405 | the route does not take this method (the message and Allow name those it takes) | ProblemResponse (method_not_allowed) |
| 408 | the body did not arrive within AEGRADE_BODY_TIMEOUT_S | ProblemResponse (body_timeout) |
| 412 | CDS Hooks: a prefetch the service needs is missing and could not be fetched from fhirServer | ProblemResponse (prefetch_missing) |
| 413 | the body is over AEGRADE_MAX_BODY_BYTES (AEGRADE_MAX_FHIR_BODY_BYTES on /v1/fhir/*, /cds-services/*) | ProblemResponse (body_too_large) |
| 415 | a Content-Encoding other than identity; a JSON charset other than UTF-8 | ProblemResponse (unsupported_content_encoding, unsupported_charset) |
| 422 | invalid or contradictory input; a key repeated in a JSON object (type duplicate_key); only `patient` (nothing_to_grade); JSON nested deeper than MAX_JSON_DEPTH (nesting_too_deep) or a number beyond a float's range (number_too_large) | ValidationErrorResponse, one entry per field |
| 500 | the engine's evaluators disagreed or lost a result: no grade | ProblemResponse (the engine error's code) |
| 503 | the audit store cannot be written or read: no grade | ProblemResponse (store_unavailable) |
| 503 | the grading process gave no grade in time (AEGRADE_GRADING_TIMEOUT_S) | ProblemResponse (grading_unavailable) |
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from aegrade.errors import EngineError, InvalidAssessment
from aegrade.fhir import FhirInputError
from service.middleware import Hygiene, scrubbed_traceback
from service.settings import ServiceSettings
from service.errors import (
    BodyTimeout,
    BodyTooLarge,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ServiceError,
    StoreUnavailable,
    UnsupportedCharset,
    UnsupportedEncoding,
)

__all__ = [
    "FIELD_ERROR_CODES",
    "LARGE_BODY_PREFIXES",
    "MAX_JSON_DEPTH",
    "BodyLimit",
    "OutOfRange",
    "error_body",
    "field_errors_response",
    "install_error_handlers",
    "json_structure_errors",
    "json_syntax_message",
    "keys_match",
    "parse_json",
    "problem",
]

logger = logging.getLogger("aegrade.service")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# The codes of the answers that carry the per-field list (`detail` a list of {loc, msg, type}).
FIELD_ERROR_CODES: dict[str, str] = {
    "json_invalid": "400: the body is not JSON (a syntax error names its line and column), not UTF-8, or cannot be read",
    "invalid_request": "422: the request does not match its schema (types, bounds, enums, unknown fields, path)",
    "invalid_assessment": "422: the engine's checks refused the assessment (contradictions, the wrong ICANS tool)",
    "fhir_input_invalid": "422: FHIR resources or a CDS Hooks call that cannot be read; each entry names the resource",
    "duplicate_key": "422: a key repeated in one JSON object; each entry's loc is the key's path",
    "nothing_to_grade": "422: no section beyond patient was sent (or mapped): the message names the sections to send",
    "nesting_too_deep": "422: JSON nested deeper than MAX_JSON_DEPTH levels; the entry's loc is where the limit is crossed",
    "number_too_large": "422: a number beyond a float's range (a 310-digit integer, 1e400); each loc names the number",
}
_SPECIFIC_TYPES = ("duplicate_key", "nothing_to_grade", "nesting_too_deep", "number_too_large")


def too_deep_at(text: str, limit: int) -> list[str | int]:
    """The path (keys and indexes) of the first value nested deeper than `limit` in JSON `text`,
    found by one pass over the characters with a stack, never by recursion (the text may be nested
    deeper than the parser goes). [] when no value is that deep."""
    path: list[str | int] = []
    containers: list[str] = []
    in_string = escaped = False
    string_start = 0
    last_string = ""
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                last_string = text[string_start:index]
            continue
        if char == '"':
            in_string, string_start = True, index + 1
        elif char in "[{":
            if len(containers) == limit:
                return path
            containers.append(char)
            path.append(0 if char == "[" else "")
        elif char in "]}":
            if containers:
                containers.pop()
                path.pop()
        elif char == ":" and containers and containers[-1] == "{":
            try:
                path[-1] = json.loads(f'"{last_string}"')
            except ValueError:
                path[-1] = last_string
        elif char == "," and containers and containers[-1] == "[":
            path[-1] = int(path[-1]) + 1
    return []


def error_body(code: str, message: str, detail: Any) -> dict[str, Any]:
    """The one shape of every answer that is not 2xx: {"code", "message", "detail"}. `detail` is
    what v1 answered: {"code", "message"} for a problem, the list of {loc, msg, type} for the
    per-field errors."""
    return {"code": code, "message": message, "detail": detail}


def _problem(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = error_body(code, message, {"code": code, "message": message})
    return JSONResponse(body, status_code=status, headers=headers)


def problem(error: ServiceError) -> JSONResponse:
    """The answer to a service error: its status, and {"code", "message", "detail": {"code", "message"}}."""
    return _problem(error.status, error.code, error.message, error.headers)


def _where(entry: Mapping[str, Any]) -> str:
    """An entry's field, for the message: its loc dotted, without the leading "body" (nothing for
    the body as a whole, or for a JSON syntax error, whose msg says where)."""
    loc = list(entry.get("loc") or ())
    if loc[:1] == ["body"]:
        loc = loc[1:]
    if not loc or entry.get("type") == "json_invalid":
        return ""
    return ".".join(str(p) for p in loc) + ": "


def _summary(entries: list[dict[str, Any]]) -> str:
    """One line for the per-field list: each field and its message (the first three)."""
    shown = [f"{_where(e)}{e.get('msg', '')}" for e in entries[:3]]
    if not entries:
        return "the request is invalid"
    if len(entries) == 1:
        return shown[0]
    more = f"; and {len(entries) - 3} more" if len(entries) > 3 else ""
    return f"{len(entries)} errors: " + "; ".join(shown) + more


def field_errors_response(
    entries: list[dict[str, Any]], status: int = 422, *, code: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The answer with the per-field list: {"code", "message" (a summary of the fields), "detail": [...]}.
    `code`: 400 is json_invalid; a 422 whose entries are all duplicate_key (or nothing_to_grade) has
    that code, else `code` (invalid_request when not given)."""
    if status == 400:
        code = "json_invalid"
    else:
        types = {str(e.get("type", "")) for e in entries}
        if len(types) == 1 and next(iter(types)) in _SPECIFIC_TYPES:
            code = next(iter(types))
        code = code or "invalid_request"
    return JSONResponse(error_body(code, _summary(entries), entries), status_code=status, headers=headers)


def json_syntax_message(line: int, column: int, expected: str, position: int) -> str:
    """What a JSON syntax error says: where (line, column, character offset) and what was expected."""
    return f"JSON syntax error at line {line}, column {column} (character {position}): {expected}"


def _json_syntax_error(error: Mapping[str, Any], body: bytes) -> dict[str, Any]:
    """FastAPI's json_invalid entry (loc ["body", offset], msg "JSON decode error") with a msg that
    names the line, the column and what was expected. The grading process gives them in `ctx`;
    for FastAPI's own errors they are computed from the body."""
    loc = list(error.get("loc", ("body",)))
    ctx = error.get("ctx") or {}
    position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    expected = str(ctx.get("error") or error.get("msg") or "invalid JSON")
    line, column = ctx.get("line"), ctx.get("column")
    if position is not None and (line is None or column is None):
        text = body.decode("utf-8", errors="replace")
        line = text.count("\n", 0, position) + 1
        column = position - text.rfind("\n", 0, position)
    if position is None or line is None or column is None:
        return {"loc": loc, "msg": str(error.get("msg", "")), "type": "json_invalid"}
    return {"loc": loc, "msg": json_syntax_message(int(line), int(column), expected, position), "type": "json_invalid"}


MAX_JSON_DEPTH = 64
"""The deepest nesting a JSON body may have (objects and arrays). A FHIR Bundle inside a CDS Hooks
prefetch, with contained resources and extensions, is about 20 deep; past 64 nothing clinical is
lost, and the serializers (pydantic's, at about 250) never meet a depth they cannot write."""

LARGE_BODY_PREFIXES = ("/v1/fhir/", "/cds-services/")
"""The routes whose bodies are whole FHIR records (a Bundle, a CDS Hooks prefetch): their limit is
AEGRADE_MAX_FHIR_BODY_BYTES."""


class BodyLimit:
    """ASGI middleware: what a request body must be before the app sees it.

    - over `max_bytes` (declared or received), or over `large_bytes` on the routes under
      LARGE_BODY_PREFIXES: 413 `body_too_large`;
    - not received whole within `body_timeout_s` seconds: 408 `body_timeout`, and the connection is closed;
    - a `Content-Encoding` other than identity: 415 `unsupported_content_encoding`;
    - a JSON body (application/json, application/*+json): a charset other than UTF-8 declared is 415
      `unsupported_charset`; a byte-order mark, UTF-16/32 or bytes that are not UTF-8 are 400
      (json_invalid); so are JSON nested too deeply for the parser and numbers too long to convert;
      a key repeated in one object is 422 (type duplicate_key), its `loc` the key's path; nesting
      deeper than MAX_JSON_DEPTH (nesting_too_deep) and a number beyond a float's range, such as a
      310-digit integer (number_too_large), are 422 naming where, so that no route, serializer or
      audit record meets them.

    Memory and time are linear in the body: it is read once into a list of chunks, parsed once, and
    walked once without recursion.

    The body (at most `max_bytes`) is read here and handed on whole and unchanged, whatever
    Content-Length says. With `settings`, the service's `Hygiene` layer (service/middleware.py: access
    log, security headers, HEAD) is put around it, its timeout is `settings.body_timeout_s`, its
    large limit `settings.max_fhir_body_bytes`, and CORS (Starlette's CORSMiddleware) is put between
    the two for `settings.cors_origins`: a preflight is answered before any body check, and every
    answer, a 413 as well, carries the CORS headers a browser needs to read it.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        max_bytes: int,
        *,
        body_timeout_s: float = 30.0,
        large_bytes: int | None = None,
        settings: ServiceSettings | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.large_bytes = settings.max_fhir_body_bytes if settings is not None else (large_bytes or max_bytes)
        self.body_timeout_s = settings.body_timeout_s if settings is not None else body_timeout_s
        self._entry: Callable[[Scope, Receive, Send], Awaitable[None]] = self._checked
        if settings is not None:
            inner: Callable[[Scope, Receive, Send], Awaitable[None]] = self._checked
            if settings.cors_origins:
                inner = CORSMiddleware(
                    inner,
                    allow_origins=settings.cors_origins,
                    allow_methods=["GET", "POST", "OPTIONS"],
                    allow_headers=["Authorization", "Content-Type"],
                    allow_credentials=False,  # bearer tokens are sent by the page itself; no cookies cross origins
                    max_age=600,
                )
            self._entry = Hygiene(inner)

    def limit_for(self, path: str) -> int:
        """The body limit of the route at `path`."""
        return self.large_bytes if path.startswith(LARGE_BODY_PREFIXES) else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        root = str(scope.get("root_path", ""))
        path = str(scope.get("path", ""))
        limit = self.limit_for(path.removeprefix(root) if root else path)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(scope, receive, send, limit)
            return
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if encoding and any(e.strip() not in ("", "identity") for e in encoding.split(",")):
            await problem(
                UnsupportedEncoding("request bodies are accepted without Content-Encoding (identity) only")
            )(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._too_large(scope, receive, send, limit)
                        return
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            message_text = f"the request body did not arrive within {self.body_timeout_s:g} s"
            await problem(BodyTimeout(message_text, headers={"Connection": "close"}))(scope, receive, send)
            return
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if body and json_media_type(content_type):
            rejection = _json_rejection(body, content_type)
            if rejection is not None:
                await rejection(scope, receive, send)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(BodyTooLarge(f"the request body is over {limit} bytes"))
        await response(scope, receive, send)


def json_media_type(content_type: str) -> bool:
    """Whether a body of this Content-Type is read as JSON: application/json or application/*+json."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return True
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and subtype.endswith("+json")


_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


def _body_error(msg: str, loc: tuple[Any, ...] = ("body",), status: int = 400, kind: str = "json_invalid") -> JSONResponse:
    return field_errors_response([{"loc": list(loc), "msg": msg, "type": kind}], status)


class _Duplicates(dict[str, Any]):
    """A JSON object in which some key was repeated: `repeated` names them (the last value is kept)."""

    repeated: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in pairs:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    marked = _Duplicates(result)
    marked.repeated = repeated
    return marked


def _duplicate_paths(document: Any) -> list[tuple[Any, ...]]:
    """The path of each repeated key, in document order (iteratively: the depth is the parser's)."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Duplicates):
                found.extend((*path, key) for key in value.repeated)
            stack.extend(((*path, k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(value))))
    return found


def _nul_paths(document: Any) -> list[tuple[Any, ...]]:
    """The path of each string (key or value) holding a NUL character: PostgreSQL cannot store one,
    and no clinical text needs one, so it is refused before the store on every backend."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                found.append(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    found.append((*path, key))
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in enumerate(value))
    return sorted(found, key=str)


def _json_rejection(body: bytes, content_type: str) -> JSONResponse | None:
    """The answer to a JSON body that is not UTF-8 JSON without repeated keys; None when it is (or when
    it is not JSON at all: the route answers that, as before)."""
    charset = ""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if charset and charset not in ("utf-8", "utf8"):
        return problem(UnsupportedCharset(f"JSON bodies are UTF-8 only; the Content-Type declares charset={charset[:40]}"))
    if body.startswith(b"\xef\xbb\xbf"):
        return _body_error("the body starts with a byte-order mark: JSON bodies are UTF-8 without a BOM")
    if body.startswith(_UTF16_32_BOMS) or (len(body) >= 2 and (body[0] == 0 or body[1] == 0)):
        return _body_error("the body is UTF-16 or UTF-32: JSON bodies are UTF-8 only")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _body_error(f"the body is not UTF-8 (invalid byte at offset {exc.start}): JSON bodies are UTF-8 only")
    hook_used = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal hook_used
        result = _object_pairs(items)
        hook_used = hook_used or isinstance(result, _Duplicates)
        return result

    try:
        document, out_of_range = parse_json(text, object_pairs_hook=pairs)
    except json.JSONDecodeError:
        return None  # not JSON: the route says so, as it always has
    except RecursionError:  # deeper than the parser goes: where the limit is crossed, found without recursion
        return field_errors_response([{
            "loc": ["body", *too_deep_at(text, MAX_JSON_DEPTH)],
            "msg": f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels",
            "type": "nesting_too_deep",
        }])
    except ValueError as exc:  # not expected (numbers are read by parse_json's hooks): never a 500
        return _body_error(f"the JSON cannot be read: {str(exc)[:120]}")
    unreadable = json_structure_errors(document, out_of_range)
    if unreadable:
        return field_errors_response([{**e, "loc": ["body", *e["loc"]]} for e in unreadable])
    if "\\u0000" in text:  # cheap test first: a NUL escape somewhere (or a backslash before "u0000")
        nul = _nul_paths(document)
        if nul:
            return field_errors_response(
                [
                    {"loc": ["body", *path], "msg": "NUL characters (\\u0000) are not accepted in text", "type": "nul_character"}
                    for path in nul
                ]
            )
    if not hook_used:
        return None
    return field_errors_response(
        [
            {"loc": ["body", *path], "msg": f"the key {str(path[-1])[:80]!r} is repeated in one JSON object", "type": "duplicate_key"}
            for path in _duplicate_paths(document)
        ]
    )


class OutOfRange(float):
    """A JSON number beyond a float's range (a 310-digit integer, 1e400), kept as its text."""

    text: str


_FLOAT_MAX = sys.float_info.max
_MAX_ERRORS = 20


def _out_of_range(text: str) -> OutOfRange:
    marker = OutOfRange(math.inf)
    marker.text = text
    return marker


def parse_json(text: str, **hooks: Any) -> tuple[Any, bool]:
    """json.loads, with every number beyond a float's range read as an OutOfRange marker (never
    converted: a long integer is neither an OverflowError later nor a ValueError of Python's digit
    limit now), and whether there was one. RecursionError when the parser's own depth is passed."""
    found = False

    def parse_int(digits: str) -> Any:
        nonlocal found
        if len(digits) <= 308:  # below 10**308, always within a float's range
            return int(digits)
        if len(digits) <= 320 and abs(int(digits)) <= _FLOAT_MAX:
            return int(digits)
        found = True
        return _out_of_range(digits)

    def parse_float(literal: str) -> Any:
        nonlocal found
        value = float(literal)
        if math.isinf(value):
            found = True
            return _out_of_range(literal)
        return value

    document = json.loads(text, parse_int=parse_int, parse_float=parse_float, **hooks)
    return document, found


def json_structure_errors(document: Any, out_of_range: bool = True) -> list[dict[str, Any]]:
    """Where a parsed JSON document is nested deeper than MAX_JSON_DEPTH, or holds a number beyond a
    float's range (`out_of_range`: parse_json found one; else numbers are not looked at): entries
    {loc, msg, type}, in document order, at most 20. One walk without recursion, containers only unless a number is
    to be found; each path is built only for what is reported."""
    errors: list[dict[str, Any]] = []
    # (value, depth, parent entry, key): the path of an entry is rebuilt from its parents when reported
    stack: list[tuple[Any, int, Any, Any]] = [(document, 0, None, None)]

    def path(entry: tuple[Any, int, Any, Any]) -> list[Any]:
        keys: list[Any] = []
        while entry[2] is not None:
            keys.append(entry[3])
            entry = entry[2]
        return keys[::-1]

    while stack and len(errors) < _MAX_ERRORS:
        entry = stack.pop()
        value, depth = entry[0], entry[1]
        if isinstance(value, OutOfRange):
            errors.append({"loc": path(entry), "msg": f"the number {value.text[:24]}{'...' if len(value.text) > 24 else ''} is beyond the range of a number (a float)", "type": "number_too_large"})
            continue
        if isinstance(value, dict):
            children: Any = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if depth >= MAX_JSON_DEPTH:
            errors.append({"loc": path(entry), "msg": f"nested deeper than {MAX_JSON_DEPTH} levels", "type": "nesting_too_deep"})
            continue
        below = [(child, depth + 1, entry, key) for key, child in children
                 if isinstance(child, (dict, list)) or (out_of_range and isinstance(child, OutOfRange))]
        stack.extend(reversed(below))  # popped in document order
    return errors


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


def _path_problem(errors: list[dict[str, Any]]) -> str:
    """Which path parameter is malformed (never its value: it may be a patient id)."""
    names = ", ".join(dict.fromkeys(str(e["loc"][1]) for e in errors if len(e.get("loc", ())) > 1))
    return f"the {names or 'path'} is not of the form this route takes"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        path = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("path",)]
        if path:  # a malformed id (or service id) names no resource: 404, as an unknown one does
            return problem(NotFound(f"no such resource: {_path_problem(path)}"))
        if any(e.get("type") == "json_invalid" for e in errors):
            body = await request.body()
            entries = [
                _json_syntax_error(e, body) if e.get("type") == "json_invalid" else entry
                for e, entry in zip(errors, _field_errors(errors))
            ]
            return field_errors_response(entries, 400)
        whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in errors)
        if whole_body and (not await request.body() or not json_media_type(request.headers.get("content-type", ""))):
            not_json = {"loc": ["body"], "msg": "the body must be JSON, sent as Content-Type: application/json", "type": "json_invalid"}
            return field_errors_response([not_json], 400)
        return field_errors_response(_field_errors(errors), 422)

    @app.exception_handler(FhirInputError)
    async def _fhir_invalid(_request: Request, exc: FhirInputError) -> JSONResponse:
        return field_errors_response([e.as_dict() for e in exc.errors], 422, code=exc.code)

    @app.exception_handler(InvalidAssessment)
    async def _assessment_invalid(_request: Request, exc: InvalidAssessment) -> JSONResponse:
        body = [{"loc": ["body", *e.loc], "msg": e.msg, "type": e.code} for e in exc.errors]
        return field_errors_response(body, 422, code=exc.code)

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return problem(exc)

    @app.exception_handler(StoreUnavailable)
    async def _store(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        logger.error("audit store unavailable: %s", exc)
        return problem(StoreUnavailable("the audit store cannot be written: no grade was given"))

    @app.exception_handler(EngineError)
    async def _engine(_request: Request, exc: EngineError) -> JSONResponse:
        return _problem(500, exc.code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, say): it is not JSON
            not_json = {"loc": ["body"], "msg": f"the body is not JSON: {exc.detail}", "type": "json_invalid"}
            return field_errors_response([not_json], 400)
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow") or ""
            message = f"{request.method} is not allowed here" + (f"; allowed: {allowed}" if allowed else "")
            return problem(MethodNotAllowed(message, headers=exc.headers))
        if exc.status_code == 404:
            return problem(NotFound(str(exc.detail), headers=exc.headers))
        return _problem(exc.status_code, f"http_{exc.status_code}", str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Its message may quote the request: the type and the frames only (service/middleware.py).
        logger.error("unexpected error: %s\n%s", type(exc).__name__, scrubbed_traceback(exc))
        return problem(InternalError("unexpected error; no grade was given"))
