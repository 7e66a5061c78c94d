"""CDS Hooks 2.0 as a signed CDS client and a browser call it: JWT client authentication (ES384 with
an inline JWK Set, RS384 with a JWK Set fetched from a jku), CORS, the fhirServer fallback for a
prefetch not sent, and the human view the cards link to.

The keys are generated here (cryptography: EC P-384, RSA 2048). The JWK Set URL and the EHR's FHIR
server are one local HTTP server started by this module: no FHIR server installs from the package
registries on this machine (see README, CDS Hooks), so it serves recorded search results written
in the published shapes (tests/fixtures/cds_hooks/fhir-server/, each file naming its source), with
their times moved to now.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service.app import create_app
from service.cds_hooks import PREFETCH, fhir_server_allowed
from service.settings import ServiceSettings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cds_hooks" / "fhir-server"
PUBLIC = "https://aegrade.example.org"
SERVICE = "/cds-services/aegrade-toxicity"
AUD = PUBLIC + SERVICE
EC_ISSUER = "https://ehr.example.org"
RSA_ISSUER = "https://sandbox.example.org"
ORIGIN = "https://sandbox.example.org"
API_KEY = "k" * 24
FHIR_TOKEN = "fhir-access-token-7f3a"  # the EHR's token for its FHIR server: sent there, stored nowhere

EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP384R1())


def _jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if isinstance(public, ec.EllipticCurvePublicKey) else RSAAlgorithm
    return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


def _stamp(text: str) -> str:
    """A fixture's times moved to now: 10:00 is ten minutes ago, 09:40 thirty."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    text = text.replace("2026-06-01T10:00:00Z", (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z"))
    return text.replace("2026-06-01T09:40:00Z", (now - timedelta(minutes=30)).isoformat().replace("+00:00", "Z"))


def fixture(name: str) -> dict[str, Any]:
    return json.loads(_stamp(json.dumps(json.loads((FIXTURES / f"{name}.json").read_text())["response"])))


class EhrServer:
    """The EHR side on loopback: its JWK Set (/jwks.json) and FHIR server (/fhir, answering the
    prefetch queries from the fixtures; /big answers more than the service reads; /broken, 500)."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": [_jwk(RSA_KEY.public_key(), "rsa-1", "RS384")]}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append((self.path, self.headers.get("Authorization")))
                status, body = server.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, path: str) -> tuple[int, Any]:
        if path == "/jwks.json":
            return 200, self.jwks
        if path.startswith("/big/"):
            return 200, {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "Basic", "id": "x" * 60}}] * 2000}
        if path.startswith("/broken/"):
            return 500, {"resourceType": "OperationOutcome"}
        route = unquote(path.removeprefix("/fhir/"))
        if route.startswith("Patient/"):
            return (200, fixture("Patient")) if route == "Patient/cds-p1" else (404, {"resourceType": "OperationOutcome"})
        if route.startswith("Observation?"):
            return 200, fixture("Observation-assessments" if "category=" in route else "Observation-vitals")
        if route.startswith("MedicationAdministration?"):
            return 200, fixture("MedicationAdministration")
        return 404, {"resourceType": "OperationOutcome"}

    def __enter__(self) -> EhrServer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def ehr() -> Iterator[EhrServer]:
    with EhrServer() as server:
        yield server


def secured_settings(database_url: str, ehr_url: str, **changes: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "public_base_url": PUBLIC,
        "cds_issuers": {
            EC_ISSUER: {"jwks": {"keys": [_jwk(EC_KEY.public_key(), "ec-1", "ES384")]}},
            RSA_ISSUER: {"jku": f"{ehr_url}/jwks.json"},
        },
        "cors_origins": [ORIGIN],
        "cds_fhir_servers": [f"{ehr_url}/fhir", f"{ehr_url}/big", f"{ehr_url}/broken"],
        "cds_fhir_max_bytes": 64 * 1024,
        "api_keys": [API_KEY],
    }
    return ServiceSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def secured(ehr: EhrServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with JWT issuers, CORS, a public URL, an allowed FHIR server and API keys."""
    database = tmp_path_factory.mktemp("cds") / "cds.sqlite3"
    with TestClient(create_app(secured_settings(f"sqlite:///{database}", ehr.url))) as client:
        yield client


def token(
    *, key: Any = EC_KEY, alg: str = "ES384", kid: str = "ec-1", iss: str = EC_ISSUER, aud: Any = AUD,
    exp_in: float = 300, iat_in: float = 0, jti: str | None = None, headers: dict[str, Any] | None = None, drop: tuple[str, ...] = (),
) -> str:
    now = time.time()
    claims = {"iss": iss, "sub": "client-1", "aud": aud, "exp": int(now + exp_in), "iat": int(now + iat_in), "jti": jti or str(uuid.uuid4())}
    for name in drop:
        claims.pop(name)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **(headers or {})})


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def call(*, prefetch: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A patient-view call for the fixtures' patient, with every prefetch sent unless told."""
    if prefetch is None:
        prefetch = {
            "patient": fixture("Patient"),
            "vitals": fixture("Observation-vitals"),
            "assessments": fixture("Observation-assessments"),
            "medications": fixture("MedicationAdministration"),
        }
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": "cds-p1"},
        "prefetch": prefetch,
        **extra,
    }


# ---- JWT client authentication ------------------------------------------------------------------


def test_es384_with_inline_keys_and_rs384_with_a_fetched_jku_are_accepted(secured: TestClient, ehr: EhrServer) -> None:
    assert secured.post(SERVICE, json=call(), headers=bearer(token())).status_code == 200
    signed = token(key=RSA_KEY, alg="RS384", kid="rsa-1", iss=RSA_ISSUER, headers={"jku": f"{ehr.url}/jwks.json"})
    response = secured.post(SERVICE, json=call(), headers=bearer(signed))
    assert response.status_code == 200, response.text
    assert ("/jwks.json", None) in ehr.requests


def test_no_token_is_401_and_the_api_key_still_works(secured: TestClient) -> None:
    response = secured.post(SERVICE, json=call())
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert "JWT" in response.json()["message"]
    assert secured.post(SERVICE, json=call(), headers=bearer(API_KEY)).status_code == 200
    assert secured.post(SERVICE, json=call(), headers=bearer("x" * 24)).status_code == 401


def _refused(client: TestClient, signed: str, reason: str) -> None:
    response = client.post(SERVICE, json=call(), headers=bearer(signed))
    assert response.status_code == 401, response.text
    assert reason in response.json()["message"], response.json()["message"]
    assert signed not in response.text


def test_wrong_audience_is_401_and_the_host_header_is_never_the_audience(secured: TestClient) -> None:
    _refused(secured, token(aud="https://aegrade.example.org/cds-services/another"), "aud")
    _refused(secured, token(aud="http://testserver/cds-services/aegrade-toxicity"), "aud")  # the URL the request came to
    _refused(secured, token(aud=AUD + "-order-sign"), "aud")
    assert secured.post(SERVICE, json=call(), headers=bearer(token(aud=["https://other.example.org", AUD]))).status_code == 200


@pytest.mark.parametrize(("exp_in", "accepted"), [(-90, False), (-61, False), (-30, True)])
def test_expiry_with_a_minute_of_clock_skew(secured: TestClient, exp_in: float, accepted: bool) -> None:
    """exp past by more than the 60 s leeway is refused; within it, taken (30 s margins: no race)."""
    signed = token(exp_in=exp_in, iat_in=exp_in - 60)
    response = secured.post(SERVICE, json=call(), headers=bearer(signed))
    assert response.status_code == (200 if accepted else 401), response.text
    if not accepted:
        assert "expired" in response.json()["message"]


@pytest.mark.parametrize(("iat_in", "accepted"), [(30, True), (95, False)])
def test_issued_in_the_future_beyond_the_skew_is_401(secured: TestClient, iat_in: float, accepted: bool) -> None:
    response = secured.post(SERVICE, json=call(), headers=bearer(token(iat_in=iat_in)))
    assert response.status_code == (200 if accepted else 401), response.text


@pytest.mark.parametrize(("exp_in", "accepted"), [(3600 + 60 - 30, True), (3600 + 60 + 30, False)])
def test_a_token_living_over_an_hour_is_401(secured: TestClient, exp_in: float, accepted: bool) -> None:
    response = secured.post(SERVICE, json=call(), headers=bearer(token(exp_in=exp_in)))
    assert response.status_code == (200 if accepted else 401), response.text


def test_a_replayed_jti_is_401_and_the_same_jti_of_another_issuer_is_not(secured: TestClient) -> None:
    jti = str(uuid.uuid4())
    assert secured.post(SERVICE, json=call(), headers=bearer(token(jti=jti))).status_code == 200
    _refused(secured, token(jti=jti), "replayed")
    rsa_token = token(key=RSA_KEY, alg="RS384", kid="rsa-1", iss=RSA_ISSUER, jti=jti)
    assert secured.post(SERVICE, json=call(), headers=bearer(rsa_token)).status_code == 200


def test_unknown_issuer_unknown_key_and_another_key_are_401(secured: TestClient) -> None:
    _refused(secured, token(iss="https://evil.example.org"), "not trusted")
    _refused(secured, token(kid="ec-2"), "no key")
    _refused(secured, token(key=OTHER_EC_KEY), "signature")


def test_missing_claims_are_401(secured: TestClient) -> None:
    for claim in ("exp", "iat", "jti", "aud"):
        _refused(secured, token(drop=(claim,)), claim)


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)])


def test_algorithms_other_than_es384_and_rs384_are_401(secured: TestClient) -> None:
    now = int(time.time())
    claims = {"iss": EC_ISSUER, "aud": AUD, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    _refused(secured, _unsigned({"alg": "none", "kid": "ec-1", "typ": "JWT"}, claims), "alg 'none'")
    hs256 = jwt.encode({**claims, "jti": str(uuid.uuid4())}, "a shared secret of 32 characters!", algorithm="HS256", headers={"kid": "ec-1"})
    _refused(secured, hs256, "alg 'HS256'")
    es256 = jwt.encode({**claims, "jti": str(uuid.uuid4())}, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "ec-1"})
    _refused(secured, es256, "alg 'ES256'")
    # the right algorithm's name with a key of the other kind: the EC issuer's key for RS384
    _refused(secured, token(key=RSA_KEY, alg="RS384", kid="ec-1"), "not for RS384")
    _refused(secured, "not.a.jwt", "not a JWT")


def test_a_jku_in_the_token_must_be_the_configured_one(secured: TestClient, ehr: EhrServer) -> None:
    fetched = len(ehr.requests)
    signed = token(key=RSA_KEY, alg="RS384", kid="rsa-1", iss=RSA_ISSUER, headers={"jku": "http://127.0.0.1:9/attacker.json"})
    _refused(secured, signed, "jku")
    assert len(ehr.requests) == fetched  # nothing fetched for it


def test_feedback_takes_the_feedback_url_or_the_service_url_as_audience(secured: TestClient) -> None:
    cards = secured.post(SERVICE, json=call(), headers=bearer(token())).json()["cards"]
    assert cards
    now = datetime.now(timezone.utc).isoformat()
    for aud, status in ((AUD + "/feedback", 200), (AUD, 200), (PUBLIC + "/cds-services/aegrade-toxicity-order-sign", 401)):
        body = {"feedback": [{"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": now}]}
        response = secured.post(SERVICE + "/feedback", json=body, headers=bearer(token(aud=aud)))
        assert response.status_code == status, (aud, response.text)


def test_discovery_stays_open(secured: TestClient) -> None:
    assert secured.get("/cds-services").status_code == 200


def test_a_jwks_is_refetched_for_a_new_key_at_most_once_a_minute(ehr: EhrServer) -> None:
    """Key rotation: a token naming a key the cached set lacks makes one new fetch, not one per token."""
    import asyncio

    from service.cds_auth import CdsClientVerifier
    from service.errors import Unauthorized

    clock = [time.time()]
    verifier = CdsClientVerifier({RSA_ISSUER: {"jku": f"{ehr.url}/jwks.json"}}, clock=lambda: clock[0])
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def fetches() -> int:
        return sum(1 for path, _ in ehr.requests if path == "/jwks.json")

    async def run() -> None:
        await verifier.verify(token(key=RSA_KEY, alg="RS384", kid="rsa-1", iss=RSA_ISSUER), [AUD])
        before = fetches()
        ehr.jwks = {"keys": [*ehr.jwks["keys"], _jwk(new_key.public_key(), "rsa-2", "RS384")]}
        rotated = token(key=new_key, alg="RS384", kid="rsa-2", iss=RSA_ISSUER)
        clock[0] += 59  # within a minute of the last fetch: not fetched again
        with pytest.raises(Unauthorized):
            await verifier.verify(rotated, [AUD])
        assert fetches() == before
        clock[0] += 1  # a minute: fetched again, and the new key verifies
        await verifier.verify(rotated, [AUD])
        assert fetches() == before + 1

    try:
        asyncio.run(run())
    finally:
        ehr.jwks = {"keys": [_jwk(RSA_KEY.public_key(), "rsa-1", "RS384")]}


def test_the_replay_cache_is_bounded_and_forgets_expired_tokens() -> None:
    from service.cds_auth import ReplayCache

    cache = ReplayCache(max_entries=2)
    assert cache.first_use("i", "a", expires=100, now=0) and cache.first_use("i", "b", expires=200, now=0)
    assert not cache.first_use("i", "a", expires=100, now=50)
    with pytest.raises(OverflowError):
        cache.first_use("i", "c", expires=300, now=100)  # full: "a" expires at 100, not before
    assert cache.first_use("i", "c", expires=300, now=101)  # "a" expired and was forgotten
    assert len(cache) == 2 and not cache.first_use("i", "b", expires=200, now=150)


def test_settings_refuse_issuers_without_a_public_url_and_jku_over_plain_http() -> None:
    with pytest.raises(ValueError, match="PUBLIC_BASE_URL"):
        ServiceSettings(cds_issuers={EC_ISSUER: {"jwks": {"keys": []}}})
    with pytest.raises(ValueError, match="https"):
        ServiceSettings(public_base_url=PUBLIC, cds_issuers={EC_ISSUER: {"jku": "http://keys.example.org/jwks.json"}})
    with pytest.raises(ValueError, match="exactly one"):
        ServiceSettings(public_base_url=PUBLIC, cds_issuers={EC_ISSUER: {}})


# ---- CORS ----------------------------------------------------------------------------------------


PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.mark.parametrize("path", ["/cds-services", SERVICE, SERVICE + "/feedback", "/v1/fhir/assessments"])
def test_a_preflight_from_an_allowed_origin_is_answered(secured: TestClient, path: str) -> None:
    response = secured.options(path, headers=PREFLIGHT)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["x-content-type-options"] == "nosniff"  # the hygiene layer is around it


def test_a_preflight_from_another_origin_is_refused(secured: TestClient) -> None:
    response = secured.options(SERVICE, headers={**PREFLIGHT, "Origin": "https://evil.example.org"})
    assert response.status_code == 400 and "access-control-allow-origin" not in response.headers


def test_answers_to_an_allowed_origin_carry_cors_headers_errors_too(secured: TestClient) -> None:
    origin = {"Origin": ORIGIN}
    assert secured.get("/cds-services", headers=origin).headers["access-control-allow-origin"] == ORIGIN
    unauthorized = secured.post(SERVICE, json=call(), headers=origin)
    assert unauthorized.status_code == 401 and unauthorized.headers["access-control-allow-origin"] == ORIGIN
    too_large = secured.post(SERVICE, content=b"{" + b" " * (9 * 1024 * 1024) + b"}", headers={**origin, "Content-Type": "application/json"})
    assert too_large.status_code == 413 and too_large.headers["access-control-allow-origin"] == ORIGIN
    other = secured.get("/cds-services", headers={"Origin": "https://evil.example.org"})
    assert "access-control-allow-origin" not in other.headers


def test_without_origins_there_is_no_cors(client: TestClient) -> None:
    response = client.options(SERVICE, headers=PREFLIGHT)
    assert response.status_code == 405 and "access-control-allow-origin" not in response.headers


def test_a_signed_client_in_a_browser_calls_discovery_service_and_feedback(secured: TestClient) -> None:
    """The sandbox's way: a page at an allowed origin, its CDS client signing each call (ES384)."""
    origin = {"Origin": ORIGIN}
    discovery = secured.get("/cds-services", headers=origin)
    assert discovery.status_code == 200 and discovery.headers["access-control-allow-origin"] == ORIGIN
    service = discovery.json()["services"][0]["id"]
    url = f"/cds-services/{service}"
    assert secured.options(url, headers=PREFLIGHT).status_code == 200
    answer = secured.post(url, json=call(), headers={**origin, **bearer(token(aud=PUBLIC + url))})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    card = answer.json()["cards"][0]
    assert secured.options(url + "/feedback", headers=PREFLIGHT).status_code == 200
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": datetime.now(timezone.utc).isoformat()}]}
    stored = secured.post(url + "/feedback", json=feedback, headers={**origin, **bearer(token(aud=PUBLIC + url + "/feedback"))})
    assert stored.status_code == 200 and stored.json() == {"stored": 1}
    assert stored.headers["access-control-allow-origin"] == ORIGIN


# ---- extension, fhirServer ------------------------------------------------------------------------


def test_reserved_extension_objects_are_accepted(secured: TestClient) -> None:
    extension = {"com.example.ehr-version": "2026.1"}
    sent = call(extension=extension)
    sent["context"]["extension"] = extension
    response = secured.post(SERVICE, json=sent, headers=bearer(token()))
    assert response.status_code == 200, response.text
    now = datetime.now(timezone.utc).isoformat()
    item = {"card": response.json()["cards"][0]["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
            "overrideReason": {"userComment": "seen", "extension": extension}, "extension": extension}
    feedback = secured.post(SERVICE + "/feedback", json={"feedback": [item], "extension": extension}, headers=bearer(token(aud=AUD + "/feedback")))
    assert feedback.status_code == 200, feedback.text


def _card_summaries(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(card["summary"] for card in response.json()["cards"])


def test_prefetch_not_sent_is_fetched_from_an_allowed_fhir_server(secured: TestClient, ehr: EhrServer) -> None:
    """Every key left out: the service runs the discovery templates against fhirServer with the
    call's token, and grades what it gets as if it had been sent. The token is on no record."""
    sent = _card_summaries(secured.post(SERVICE, json=call(), headers=bearer(token())))
    assert any("CRS" in summary for summary in sent)
    ehr.requests.clear()
    fetched_call = call(prefetch={}, fhirServer=f"{ehr.url}/fhir", fhirAuthorization={
        "access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "cds-service"})
    response = secured.post(SERVICE, json=fetched_call, headers=bearer(token()))
    assert _card_summaries(response) == sent
    queried = sorted(path for path, auth in ehr.requests if auth == f"Bearer {FHIR_TOKEN}")
    expected = sorted("/fhir/" + template.replace("{{context.patientId}}", "cds-p1") for template in PREFETCH.values())
    assert [unquote(path) for path in queried] == [unquote(path) for path in expected]
    link = next(card["links"][0]["url"] for card in response.json()["cards"] if card["links"][0]["url"].startswith(PUBLIC))
    record = secured.get(f"/v1/assessments/{link.rsplit('/', 1)[1]}", headers=bearer(API_KEY)).json()
    assert record["request"]["fetched_from_fhir_server"]["keys"] == list(PREFETCH)
    assert record["request"]["prefetch"]["vitals"]["type"] == "searchset"
    assert FHIR_TOKEN not in json.dumps(record)


def test_only_the_keys_not_sent_are_fetched_and_null_is_never_fetched(secured: TestClient, ehr: EhrServer) -> None:
    partial = call()
    del partial["prefetch"]["medications"]
    partial["prefetch"]["assessments"] = None
    ehr.requests.clear()
    response = secured.post(SERVICE, json={**partial, "fhirServer": f"{ehr.url}/fhir"}, headers=bearer(token()))
    assert response.status_code == 200, response.text
    assert [path.split("?")[0] for path, _ in ehr.requests] == ["/fhir/MedicationAdministration"]


@pytest.mark.parametrize(
    ("server", "why"),
    [
        ("https://ehr.example.org/fhir", "does not query that fhirServer"),
        ("{ehr}/other", "does not query that fhirServer"),
        ("{ehr}/fhir/../jwks.json", "does not query that fhirServer"),
        ("{ehr}/fhirx", "does not query that fhirServer"),
        ("{ehr}/broken", "HTTP 500"),
        ("{ehr}/big", "over 65536 bytes"),
    ],
)
def test_a_prefetch_that_cannot_be_fetched_is_412(secured: TestClient, ehr: EhrServer, server: str, why: str) -> None:
    partial = call()
    del partial["prefetch"]["vitals"]
    ehr.requests.clear()
    response = secured.post(SERVICE, json={**partial, "fhirServer": server.format(ehr=ehr.url)}, headers=bearer(token()))
    assert response.status_code == 412, response.text
    assert "vitals" in response.json()["message"] and why in response.json()["message"]
    if "does not query" in why:
        assert ehr.requests == []


def test_which_fhir_servers_are_allowed() -> None:
    allowed = ["https://ehr.example.org/fhir/r4", "http://127.0.0.1:8080"]
    assert fhir_server_allowed("https://ehr.example.org/fhir/r4", allowed)
    assert fhir_server_allowed("https://EHR.example.org/fhir/r4/", allowed)
    assert fhir_server_allowed("https://ehr.example.org/fhir/r4/tenant-1", allowed)
    assert fhir_server_allowed("http://127.0.0.1:8080/anything", allowed)
    for refused in ("http://ehr.example.org/fhir/r4", "https://ehr.example.org/fhir", "https://ehr.example.org/fhir/r4x",
                    "https://ehr.example.org:8443/fhir/r4", "https://user@ehr.example.org/fhir/r4", "https://ehr.example.org/fhir/r4?x=1",
                    "https://ehr.example.org/fhir/r4/../admin", "https://ehr.example.org/fhir/r4/%2e%2e/admin", "http://127.0.0.1:8081",
                    "file:///etc/passwd", "https://ehr.example.org.evil.org/fhir/r4"):
        assert not fhir_server_allowed(refused, allowed), refused


# ---- cards: links to the human view, what was missing ---------------------------------------------


def test_cards_link_to_the_human_view_under_the_public_url_behind_the_forms_access(secured: TestClient) -> None:
    cards = secured.post(SERVICE, json=call(), headers=bearer(token())).json()["cards"]
    links = {link["url"] for card in cards for link in card["links"] if link["url"].startswith(PUBLIC)}
    [link] = links
    path = link.removeprefix(PUBLIC)
    assert path.startswith("/assessments/") and "/v1/" not in path
    # the form's access: no session, to the sign-in page; the API key (a script) or a session opens it
    anonymous = secured.get(path, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login?next=%2Fassessments%2F")
    page = secured.get(path, headers=bearer(API_KEY))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "no-store" in page.headers["cache-control"]
    assert "CRS (ASTCT 2019)" in page.text and "Criteria met" in page.text and "The inputs graded" in page.text
    assert "Observation/temp-1" in page.text  # where the values came from
    assert secured.get("/assessments/" + "0" * 32, headers=bearer(API_KEY)).status_code == 404
    assert secured.get("/assessments/not-an-id", headers=bearer(API_KEY)).status_code == 404


def test_the_human_view_escapes_what_was_sent(client: TestClient) -> None:
    """The record holds what a client sent: shown as text, never as markup."""
    sent = call()
    sent["prefetch"]["vitals"]["entry"][0]["resource"]["id"] = "<script>alert(1)</script>"
    cards = client.post(SERVICE, json=sent).json()["cards"]
    assessment_id = cards[0]["detail"].rsplit("Its id is ", 1)[1].rstrip(".")
    page = client.get(f"/assessments/{assessment_id}")  # keys off: open, as the form is
    assert page.status_code == 200 and "<script>" not in page.text and "&lt;script&gt;" in page.text


def test_a_domain_not_charted_gives_a_card_saying_what_is_missing(client: TestClient) -> None:
    """No vitals and no administrations (null: the client has none), an ICE score only: CRS cannot be assessed, and the card
    says so and why, rather than nothing."""
    sent = call()
    sent["prefetch"]["vitals"] = sent["prefetch"]["medications"] = None
    when = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    sent["prefetch"]["assessments"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
        "resourceType": "Observation", "id": "ice-1", "status": "final",
        "code": {"coding": [{"system": "http://aegrade.org/fhir/CodeSystem/assessment", "code": "ice-total"}]},
        "subject": {"reference": "Patient/cds-p1"}, "effectiveDateTime": when, "valueInteger": 10}}]}
    response = client.post(SERVICE, json=sent)
    assert response.status_code == 200, response.text
    crs = [card for card in response.json()["cards"] if card["summary"].startswith("CRS")]
    assert [card["summary"] for card in crs] == ["CRS: not assessable, no temperature, blood pressure, SpO2 or oxygen support in the last 4 h"]
    assert crs[0]["indicator"] == "info"


def test_settings_lists_take_commas_or_json() -> None:
    assert ServiceSettings(cors_origins="https://a.example.org, http://localhost:3000").cors_origins == ["https://a.example.org", "http://localhost:3000"]
    assert ServiceSettings(cors_origins='["https://a.example.org/"]').cors_origins == ["https://a.example.org"]
    with pytest.raises(ValueError):
        ServiceSettings(cors_origins="*")
    with pytest.raises(ValueError):
        ServiceSettings(cds_fhir_servers="https://user@ehr.example.org/fhir")
    assert copy.deepcopy(ServiceSettings(public_base_url="https://h.example.org/aegrade/").public_base_url) == "https://h.example.org/aegrade"


def test_a_jwks_that_cannot_be_fetched_is_401_and_not_fetched_again_within_a_minute(ehr: EhrServer) -> None:
    import asyncio

    from service.cds_auth import CdsClientVerifier
    from service.errors import Unauthorized

    clock = [time.time()]
    verifier = CdsClientVerifier({RSA_ISSUER: {"jku": f"{ehr.url}/broken/jwks.json"}}, clock=lambda: clock[0])
    signed = token(key=RSA_KEY, alg="RS384", kid="rsa-1", iss=RSA_ISSUER)

    def fetches() -> int:
        return sum(1 for path, _ in ehr.requests if path == "/broken/jwks.json")

    async def run() -> None:
        before = fetches()
        for advance, fetched in ((0, 1), (59, 1), (1, 2)):  # a failure is retried a minute later, not sooner
            clock[0] += advance
            with pytest.raises(Unauthorized, match="could not be fetched"):
                await verifier.verify(signed, [AUD])
            assert fetches() == before + fetched

    asyncio.run(run())


def test_a_clinician_signed_in_to_the_form_opens_the_linked_page(secured: TestClient) -> None:
    import re

    cards = secured.post(SERVICE, json=call(), headers=bearer(token())).json()["cards"]
    path = next(link["url"] for card in cards for link in card["links"] if link["url"].startswith(PUBLIC)).removeprefix(PUBLIC)
    browser = TestClient(secured.app)  # a browser of its own (its own cookies) on the running service: no second lifespan
    assert browser.get(path, follow_redirects=False).status_code == 303
    login = browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf is not None
    signed_in = browser.post("/login", data={"key": API_KEY, "csrf_token": csrf.group(1)}, follow_redirects=False)
    assert signed_in.status_code == 303
    page = browser.get(path)
    assert page.status_code == 200 and "CRS (ASTCT 2019)" in page.text


@pytest.mark.slow
def test_the_settings_from_the_environment_on_a_real_server(tmp_path: Path) -> None:
    """uvicorn with AEGRADE_CDS_ISSUERS (JSON), AEGRADE_CORS_ORIGINS (comma-separated) and
    AEGRADE_PUBLIC_BASE_URL in its environment: a browser's preflight and a signed call."""
    import httpx

    from tests.api.server import Server

    env = {
        "AEGRADE_DATABASE_URL": f"sqlite:///{tmp_path / 'env.sqlite3'}",
        "AEGRADE_PUBLIC_BASE_URL": PUBLIC,
        "AEGRADE_CDS_ISSUERS": json.dumps({EC_ISSUER: {"jwks": {"keys": [_jwk(EC_KEY.public_key(), "ec-1", "ES384")]}}}),
        "AEGRADE_CORS_ORIGINS": f"https://other.example.org, {ORIGIN}",
    }
    server = Server(env).start(timeout=90)  # a busy machine starts it slowly
    try:
        preflight = httpx.options(server.url + SERVICE, headers=PREFLIGHT, timeout=30)
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
        unsigned = httpx.post(server.url + SERVICE, json=call(), headers={"Origin": ORIGIN}, timeout=30)
        assert unsigned.status_code == 401
        signed = httpx.post(server.url + SERVICE, json=call(), headers={"Origin": ORIGIN, **bearer(token())}, timeout=30)
        assert signed.status_code == 200, signed.text
        assert signed.headers["access-control-allow-origin"] == ORIGIN
        assert any(link["url"].startswith(PUBLIC + "/assessments/") for card in signed.json()["cards"] for link in card["links"])
    finally:
        server.stop()


def test_an_issuer_may_be_configured_for_es256_as_the_reference_sandbox_signs() -> None:
    """The CDS Hooks sandbox signs ES256 (P-256) with a jku: its entry lists ES256, and then only that."""
    import asyncio

    from service.cds_auth import CdsClientVerifier
    from service.errors import Unauthorized

    p256 = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [_jwk(p256.public_key(), "sb-1", "ES256"), _jwk(EC_KEY.public_key(), "sb-384", "ES256")]}
    verifier = CdsClientVerifier({RSA_ISSUER: {"jwks": jwks, "algorithms": ["ES256"]}})

    async def run() -> None:
        assert (await verifier.verify(token(key=p256, alg="ES256", kid="sb-1", iss=RSA_ISSUER), [AUD]))["iss"] == RSA_ISSUER
        with pytest.raises(Unauthorized, match="not accepted for"):
            await verifier.verify(token(key=EC_KEY, alg="ES384", kid="sb-384", iss=RSA_ISSUER), [AUD])
        with pytest.raises(Unauthorized, match="sb-384"):  # the key it names is on P-384, not ES256's curve
            await verifier.verify(token(key=p256, alg="ES256", kid="sb-384", iss=RSA_ISSUER), [AUD])

    asyncio.run(run())
    with pytest.raises(ValueError, match="algorithms"):
        ServiceSettings(public_base_url=PUBLIC, cds_issuers={EC_ISSUER: {"jwks": jwks, "algorithms": ["HS256"]}})
