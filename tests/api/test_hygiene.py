"""Hardening against a real uvicorn (tests/api/server.py): bodies and their encodings on every POST
route, the body read timeout, security headers, Cache-Control, HEAD on every GET route, and the form's
CSRF token.

Errors are read with tests/api/error_bodies.py: /v1/fhir/* answers them as OperationOutcomes, every
other route as our body {code, message, detail}; each check holds in both."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.error_bodies import error_code, field_errors, problem, where
from tests.api.server import Server
from tests.form_filling import csrf_token

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE.parents[1] / "service" / "templates"
STATIC = HERE.parents[1] / "service" / "static"
BUNDLE = json.loads((HERE.parent / "fixtures" / "fhir" / "V04.json").read_text())
ASSESSMENT = {"patient": {"age_years": 40}, "vitals": {"temperature_c": 38.5}}
OBSERVATION = {**ASSESSMENT, "observed_at": "2026-01-01T10:00:00Z"}
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hygiene') / 'audit.sqlite3'}"
    running = Server({"AEGRADE_DATABASE_URL": url, "AEGRADE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def cds_ids(http: httpx.Client) -> list[str]:
    return [s["id"] for s in http.get("/cds-services").json()["services"]]


def json_routes(http: httpx.Client) -> list[str]:
    """Every POST route that takes JSON."""
    routes = ["/v1/assessments", "/v1/fhir/assessments", "/v1/patients/p-1/observations", "/v1/patients/p-1/treatments"]
    for service_id in cds_ids(http):
        routes += [f"/cds-services/{service_id}", f"/cds-services/{service_id}/feedback"]
    return routes


# ---- A. bodies and encodings ---------------------------------------------------------------------


def _raw_exchange(server: Server, head: bytes, body_part: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send the head and part of a body, then nothing: what comes back, and after how long."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait_s) as sock:
        sock.sendall(head + body_part)
        started = time.monotonic()
        received = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pass
        return received, time.monotonic() - started


@pytest.mark.slow  # waits for the body timeout on every route
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_that_does_not_arrive_is_408_on_every_post_route(server: Server, http: httpx.Client, chunked: bool) -> None:
    for route in [*json_routes(http), "/"]:
        content_type = b"application/x-www-form-urlencoded" if route == "/" else b"application/json"
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: 100\r\n"
        head = b"POST " + route.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + content_type + b"\r\n" + framing + b"\r\n"
        part = b"a\r\n{\"patient\"\r\n" if chunked else b'{"patient"'
        received, waited = _raw_exchange(server, head, part, wait_s=BODY_TIMEOUT_S + 10)
        assert received.startswith(b"HTTP/1.1 408 "), (route, received[:200])
        assert waited < BODY_TIMEOUT_S + 5, (route, waited)
        body = json.loads(received.split(b"\r\n\r\n", 1)[1])
        assert problem(body)["code"] == "body_timeout", route
        assert b"connection: close" in received.lower()
    assert http.get("/healthz").status_code == 200  # and the service still answers


@pytest.mark.parametrize(
    ("encoded", "words"),
    [
        (b"\xef\xbb\xbf" + json.dumps(ASSESSMENT).encode(), "byte-order mark"),
        (json.dumps(ASSESSMENT).encode("utf-16"), "UTF-16"),
        (json.dumps(ASSESSMENT).encode("utf-16-le"), "UTF-16"),
        (json.dumps(ASSESSMENT).encode("utf-16-be"), "UTF-16"),
        (json.dumps(ASSESSMENT).encode("utf-32"), "UTF-32"),
        (json.dumps(ASSESSMENT).encode("utf-32-le"), "UTF-32"),
        (b'{"patient": {"age_years": 40, "note": "\xe9"}}', "not UTF-8"),
        (b'{"patient": {"age_years": 40, "note": "\xed\xa0\x80"}}', "not UTF-8"),  # a surrogate, as UTF-8
    ],
    ids=["bom", "utf16", "utf16le", "utf16be", "utf32", "utf32le", "latin1", "surrogate"],
)
def test_json_is_utf8_without_bom_on_every_json_route(http: httpx.Client, encoded: bytes, words: str) -> None:
    for route in json_routes(http):
        for content_type in ("application/json", "application/fhir+json"):
            response = http.post(route, content=encoded, headers={"content-type": content_type})
            assert response.status_code == 400, (route, response.text)
            [error] = field_errors(response)
            assert error.type == "json_invalid" and words in error.msg, (route, error)
            assert error.where == where(response, ["body"]), (route, error)  # the body as a whole


def test_a_declared_charset_other_than_utf8_is_415(http: httpx.Client) -> None:
    for route in json_routes(http):
        response = http.post(route, content=json.dumps(ASSESSMENT).encode("utf-16"),
                             headers={"content-type": "application/json; charset=utf-16"})
        assert response.status_code == 415, route
        assert problem(response)["code"] == "unsupported_charset" and "UTF-8" in problem(response)["message"]
    ok = http.post("/v1/assessments", content=json.dumps(ASSESSMENT), headers={"content-type": "application/json; charset=UTF-8"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("route", "raw", "loc"),
    [
        ("/v1/assessments", '{"patient": {"age_years": 40}, "vitals": {"temperature_c": 37, "temperature_c": 39}}',
         ["body", "vitals", "temperature_c"]),
        ("/v1/assessments", '{"patient": {"age_years": 40}, "patient": {"age_years": 9}}', ["body", "patient"]),
        ("/v1/patients/p-1/observations",
         '{"observed_at": "2026-01-01T10:00:00Z", "patient": {"age_years": 40}, "crs": {"vasopressors": [], "oxygen": {"device": "none", "device": "bipap"}}}',
         ["body", "crs", "oxygen", "device"]),
        ("/v1/patients/p-1/treatments", '{"agent": "tocilizumab", "agent": "dexamethasone"}', ["body", "agent"]),
        ("/v1/fhir/assessments",
         '{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient"}}, '
         '{"resource": {"resourceType": "Patient", "birthDate": "1980-01-01", "birthDate": "1990-01-01"}}]}',
         ["body", "entry", 1, "resource", "birthDate"]),
    ],
)
def test_a_repeated_key_is_422_naming_its_path(http: httpx.Client, route: str, raw: str, loc: list[Any]) -> None:
    response = http.post(route, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert error_code(response) == "duplicate_key"
    assert ("duplicate_key", where(response, loc)) in [(e.type, e.where) for e in field_errors(response)], response.text


def test_repeated_keys_on_the_cds_routes_too(http: httpx.Client) -> None:
    for service_id in cds_ids(http):
        for route in (f"/cds-services/{service_id}", f"/cds-services/{service_id}/feedback"):
            response = http.post(route, content='{"hook": "a", "hook": "b"}', headers={"content-type": "application/json"})
            assert response.status_code == 422 and field_errors(response)[0].where == ["body", "hook"], route


MAX_JSON_DEPTH = 64  # service/http.py; written here again so that a changed limit is noticed


def _nested_in(key: str, depth: int, inner: bytes = b"1") -> bytes:
    """{key: [[...inner...]]}: one object and `depth - 1` arrays, `depth` levels in all."""
    return b'{"' + key.encode() + b'": ' + b"[" * (depth - 1) + inner + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(
    ("raw", "kind", "loc"),
    [
        pytest.param(b"[" * 30_000 + b"]" * 30_000, "nesting_too_deep", ["body", *[0] * MAX_JSON_DEPTH],
                     id="deep-arrays"),
        pytest.param(b'{"a":' * 6_000 + b"1" + b"}" * 6_000, "nesting_too_deep", ["body", *["a"] * MAX_JSON_DEPTH],
                     id="deep-objects"),
        pytest.param(b'{"a":' * 100 + b"1" + b"}" * 100, "nesting_too_deep", ["body", *["a"] * MAX_JSON_DEPTH], id="objects-100"),
        pytest.param(_nested_in("a", 100), "nesting_too_deep", ["body", "a", *[0] * (MAX_JSON_DEPTH - 1)], id="arrays-100"),
        pytest.param(b'{"patient": {"age_years": ' + b"9" * 5_000 + b"}}", "number_too_large", ["body", "patient", "age_years"],
                     id="huge-int"),
        pytest.param(b'{"patient": {"age_years": 1e999999}}', "number_too_large", ["body", "patient", "age_years"], id="huge-exponent"),
        pytest.param(b'{"patient": {"age_years": -' + b"1" * 10_000 + b"}}", "number_too_large", ["body", "patient", "age_years"],
                     id="huge-negative"),
    ],
)
def test_deep_nesting_and_huge_numbers_are_422_naming_where_never_500(http: httpx.Client, raw: bytes, kind: str, loc: list[Any]) -> None:
    for route in json_routes(http):
        response = http.post(route, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, (route, response.status_code, response.text[:300])
        [error] = field_errors(response)
        assert error.type == kind, (route, error)
        assert error.where == where(response, loc), (route, error.where, response.text[:300])


@pytest.mark.parametrize(("depth", "refused"), [(MAX_JSON_DEPTH - 1, False), (MAX_JSON_DEPTH, False), (MAX_JSON_DEPTH + 1, True)])
def test_nesting_up_to_the_limit_is_read_and_one_deeper_is_refused_on_every_json_route(
    http: httpx.Client, depth: int, refused: bool
) -> None:
    """The limit is the same on every JSON route: at it, the route reads the body (and answers for
    what it says: "a" is no field of any route); one deeper, 422 nesting_too_deep naming where."""
    for route in json_routes(http):
        response = http.post(route, content=_nested_in("a", depth), headers={"content-type": "application/json"})
        assert response.status_code in (200, 400, 422), (route, response.status_code, response.text[:300])
        kinds = [e.type for e in field_errors(response)] if response.status_code != 200 else []
        if not refused:
            assert "nesting_too_deep" not in kinds, (route, response.text[:300])
            continue
        [error] = field_errors(response)
        assert response.status_code == 422 and error.type == "nesting_too_deep", (route, error)
        assert error.where == where(response, ["body", "a", *[0] * (MAX_JSON_DEPTH - 1)]), (route, error)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity, gzip", "x-unknown"])
def test_content_encoding_other_than_identity_is_415_on_every_post_route(http: httpx.Client, encoding: str) -> None:
    for route in [*json_routes(http), "/", "/login"]:
        response = http.post(route, content=b"{}", headers={"content-type": "application/json", "content-encoding": encoding})
        assert response.status_code == 415, route
        assert problem(response)["code"] == "unsupported_content_encoding"
    identity = http.post("/v1/assessments", json=ASSESSMENT, headers={"content-encoding": "identity"})
    assert identity.status_code == 200


def test_bodies_reach_the_routes_unchanged(http: httpx.Client) -> None:
    """The middleware parses JSON bodies to check them; the routes still get the bytes as sent."""
    graded = http.post("/v1/assessments", content=json.dumps(ASSESSMENT, indent=3).encode(), headers={"content-type": "application/json"})
    assert graded.status_code == 200
    record = http.get(f"/v1/assessments/{graded.json()['id']}").json()
    assert record["request"] == ASSESSMENT
    assert http.post("/v1/fhir/assessments", json=BUNDLE).status_code == 200
    assert http.post("/v1/patients/p-unchanged/observations", json=OBSERVATION).status_code == 200
    # invalid JSON is still the route's 400, as before
    broken = http.post("/v1/assessments", content=b'{"patient": ', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and field_errors(broken)[0].type == "json_invalid"


# ---- C. headers, caching, HEAD -------------------------------------------------------------------


def _csp(response: httpx.Response) -> dict[str, str]:
    return {d.split()[0]: d for d in (p.strip() for p in response.headers["content-security-policy"].split(";")) if d}


def test_security_headers_on_every_answer(http: httpx.Client) -> None:
    answers = [
        http.get("/"), http.get("/healthz"), http.get("/v1/rulesets"), http.get("/nowhere"), http.delete("/v1/assessments"),
        http.get("/static/form.css"), http.post("/v1/assessments", json=ASSESSMENT),
        http.post("/v1/assessments", json={"patient": {}}), http.post("/v1/assessments", content=b"x" * 70_000),
        http.get("/v1/assessments/" + "0" * 32), http.get("/openapi.json"), http.head("/"),
    ]
    for response in answers:
        where = f"{response.request.method} {response.request.url.path} {response.status_code}"
        assert response.headers.get("x-content-type-options") == "nosniff", where
        assert response.headers.get("x-frame-options") == "DENY", where
        assert response.headers.get("referrer-policy") == "no-referrer", where
        csp = _csp(response)
        assert csp["frame-ancestors"] == "frame-ancestors 'none'", where
        assert "'unsafe-inline'" not in csp.get("script-src", csp["default-src"]), where
        assert "'unsafe-inline'" not in csp.get("style-src", csp["default-src"]), where


def test_the_api_docs_still_load_with_their_own_policy(http: httpx.Client) -> None:
    """Their assets come from the service (never a CDN: tests/browser/test_docs_offline.py opens them
    offline); the policy names no other host, and allows Swagger UI's inline start-up script by hash."""
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = http.get(path)
        assert page.status_code == 200 and asset in page.text
        csp = _csp(page)
        assert "https:" not in page.text and "http" not in " ".join(csp.values()), (path, csp)
        [script] = re.findall(r'<script src="([^"]+)"', page.text)
        assert script.startswith("/static/vendor/") and http.get(script).status_code == 200
        assert csp["frame-ancestors"] == "frame-ancestors 'none'"
        assert "'unsafe-inline'" not in csp["script-src"]
    assert "'sha256-" in _csp(http.get("/docs"))["script-src"]


def test_templates_and_static_files_need_no_inline_script_or_style() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"{template.name}: inline <script>"
        assert "<style" not in text and not re.search(r"\sstyle=", text), f"{template.name}: inline style"
        assert not re.search(r"\son[a-z]+=", text), f"{template.name}: inline event handler"
        assert "javascript:" not in text
    assert "innerHTML" not in (STATIC / "form.js").read_text()


def test_no_store_on_records_episodes_forms_and_every_post(http: httpx.Client) -> None:
    graded = http.post("/v1/assessments", json=ASSESSMENT)
    http.post("/v1/patients/p-cache/observations", json=OBSERVATION)
    for response in (
        graded,
        http.get(f"/v1/assessments/{graded.json()['id']}"),
        http.get("/v1/patients/p-cache/episode"),
        http.post("/v1/patients/p-cache/observations", json=OBSERVATION),
        http.post("/v1/fhir/assessments", json=BUNDLE),
        http.post("/v1/assessments", json={"patient": {}}),
        http.get("/"),
        http.post("/", data={"patient.age_years": "40"}),
        http.get("/v1/rulesets"),
    ):
        where = f"{response.request.method} {response.request.url.path}"
        assert response.headers.get("cache-control") == "no-store", where
    assert "no-store" not in http.get("/static/form.css").headers.get("cache-control", "")


def _get_paths(http: httpx.Client) -> list[str]:
    paths = ["/", "/healthz", "/docs", "/redoc", "/openapi.json", "/static/form.css", "/static/form.js", "/login", "/nowhere"]
    graded = http.post("/v1/assessments", json=ASSESSMENT).json()["id"]
    http.post("/v1/patients/p-head/observations", json=OBSERVATION)
    values = {"assessment_id": graded, "patient_id": "p-head"}
    for path, operations in http.get("/openapi.json").json()["paths"].items():
        if "get" in operations:
            paths.append(re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path))
    return paths


def test_head_on_every_get_route_is_the_get_without_its_body(http: httpx.Client) -> None:
    for path in _get_paths(http):
        got, head = http.get(path), http.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        for name in ("content-type", "content-security-policy", "cache-control", "x-frame-options"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
        if path not in ("/", "/login"):  # the form's pages carry a token of their own each time
            assert head.headers.get("content-length") == got.headers.get("content-length"), path
    assert http.head("/v1/assessments").status_code == 405  # a POST-only route has no HEAD either


# ---- C. the form's CSRF token on the real server -------------------------------------------------


def test_the_form_posts_only_with_its_token(server: Server) -> None:
    fields = {"patient.age_years": "40", "vitals.temperature": "38.2"}
    with httpx.Client(base_url=server.url) as browser:
        page = browser.get("/")
        cookie = page.headers["set-cookie"].lower()
        assert "aegrade_csrf=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert browser.post("/", data=fields).status_code == 403
        graded = browser.post("/", data={**fields, "csrf_token": csrf_token(page.text)})
        assert graded.status_code == 200 and 'id="assessment-id"' in graded.text
    # a cross-site form post: no cookie (SameSite=Strict), a token copied from another visit
    with httpx.Client(base_url=server.url) as attacker:
        stolen = csrf_token(attacker.get("/").text)
    forged = httpx.post(f"{server.url}/", data={**fields, "csrf_token": stolen})
    assert forged.status_code == 403 and 'id="assessment-id"' not in forged.text
