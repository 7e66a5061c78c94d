"""CDS Hooks client authentication: the JWT a CDS client signs (CDS Hooks 2.0, "Trusting CDS Clients").

A CDS client (an EHR, the CDS Hooks sandbox) sends `Authorization: Bearer <JWT>` on each service and
feedback call. The JWT is trusted when:

- its header's `alg` is ES384 or RS384 (the two the specification names), or one the issuer's entry
  lists instead (`"algorithms": ["ES256"]`, for the reference sandbox, which signs ES256); `none`,
  HS256 and every other symmetric algorithm are refused before any key is looked at; and it names
  its key (`kid`);
- its `iss` is an issuer of AEGRADE_CDS_ISSUERS, and the key `kid` is in that issuer's JWK Set:
  given inline (`{"jwks": {...}}`) or fetched from the configured URL (`{"jku": "https://..."}`),
  never from a URL the token names (a `jku` in the header must be the configured one). The key must
  fit the algorithm: an EC key on its curve (P-384 for ES384), an RSA key of 2048 bits or more;
- the signature verifies (PyJWT), `aud` is the URL called under AEGRADE_PUBLIC_BASE_URL
  (`<base>/cds-services/<id>`; for feedback `<base>/cds-services/<id>/feedback` or the service's
  URL), never one built from the request's Host header;
- `exp` is not past, `iat` not in the future (60 s of clock skew either way), `exp` at most an hour
  ahead (the specification asks for a few minutes), and `jti` was not seen before from this issuer.

Replays: a `jti` is remembered until its `exp` in a bounded in-memory cache. The cache is per process:
with several web processes (uvicorn --workers, several containers), a token replayed to another
process within its few minutes of life is not caught; put one process behind the CDS route, or
accept that window.

A fetched JWK Set is cached for an hour, and fetched again (at most once a minute) when a token
names a key it does not hold, so that a client's key rotation works. The fetch, like every request
this service makes, has a total time limit, a size bound, follows no redirect and ignores proxy
settings of the environment.

Which credential is enough (service/cds_hooks.py `require_cds_client`): with AEGRADE_CDS_ISSUERS
set, a valid JWT, or an API key of AEGRADE_API_KEYS when keys are set (a CDS client that signs is
not refused because keys are on, and a client or script holding a key is not refused because it does
not sign). With no issuers, the API key rule of the other routes (service/routes.py). Discovery is
open.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Unauthorized
from service.http import json_structure_errors, keys_match, parse_json
from service.settings import ServiceSettings

__all__ = [
    "ALGORITHMS",
    "ASYMMETRIC",
    "CdsClientVerifier",
    "FetchFailed",
    "ReplayCache",
    "fetch_json",
    "require_cds_client",
]

logger = logging.getLogger("aegrade.cds")

ALGORITHMS = ("ES384", "RS384")
"""CDS Hooks 2.0: CDS clients sign with ES384 or RS384. An issuer's entry may list others of
ASYMMETRIC instead (`"algorithms": ["ES256"]`: the CDS Hooks reference sandbox signs with ES256)."""
ASYMMETRIC = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512")
"""The algorithms an issuer may be configured for: signatures with a public key only (never HS*, never none)."""
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
LEEWAY_S = 60
MAX_LIFETIME_S = 3600
MAX_JTI_CHARS = 256
JWKS_MAX_BYTES = 256 * 1024
JWKS_TIMEOUT_S = 5.0
JWKS_TTL_S = 3600.0
JWKS_REFETCH_S = 60.0
REPLAY_CACHE_MAX = 100_000
MIN_RSA_BITS = 2048


class FetchFailed(Exception):
    """A JSON document could not be fetched: the message says why (never a token)."""


async def fetch_json(url: str, *, timeout_s: float, max_bytes: int, headers: dict[str, str] | None = None) -> Any:
    """GET `url` and parse its JSON, within `timeout_s` in all and `max_bytes` (after any
    Content-Encoding is undone, so that a compressed bomb is bounded too). No redirect is followed
    and the environment's proxy settings are not used. A number beyond a float's range or nesting
    deeper than service.http.MAX_JSON_DEPTH is refused, as in a request body. FetchFailed otherwise."""
    try:
        async with asyncio.timeout(timeout_s):
            async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
                async with client.stream("GET", url, headers={"Accept": "application/fhir+json, application/json", **(headers or {})}) as response:
                    if response.status_code != 200:
                        raise FetchFailed(f"HTTP {response.status_code}")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchFailed(f"the answer is over {max_bytes} bytes")
                        chunks.append(chunk)
    except TimeoutError as exc:
        raise FetchFailed(f"no answer within {timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"{type(exc).__name__}") from exc
    try:
        document, out_of_range = parse_json(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FetchFailed(f"the answer is not UTF-8 JSON ({type(exc).__name__})") from exc
    problems = json_structure_errors(document, out_of_range)
    if problems:
        raise FetchFailed(f"the answer cannot be used: {problems[0]['msg']}")
    return document


class ReplayCache:
    """The `jti` of every accepted token, by issuer, until its `exp`: at most `max_entries` at once.
    Only tokens whose signature verified enter it, so only trusted issuers can fill it; when it is
    full of unexpired entries, a new token is refused rather than an old one forgotten."""

    def __init__(self, max_entries: int = REPLAY_CACHE_MAX) -> None:
        self.max_entries = max_entries
        self._until: dict[tuple[str, str], float] = {}
        self._expiries: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._until)

    def first_use(self, issuer: str, jti: str, expires: float, now: float) -> bool:
        """Record (issuer, jti) until `expires`; False when it is already recorded (a replay).
        Raises OverflowError when the cache is full."""
        while self._expiries and self._expiries[0][0] < now:
            _, key = heapq.heappop(self._expiries)
            if self._until.get(key, now) < now:
                del self._until[key]
        key = (issuer, jti)
        if key in self._until:
            return False
        if len(self._until) >= self.max_entries:
            raise OverflowError("replay cache full")
        self._until[key] = expires
        heapq.heappush(self._expiries, (expires, key))
        return True


@dataclass
class _KeySet:
    keys: dict[str, dict[str, Any]]
    fetched_at: float
    source: str  # "jwks" (configured) or the jku URL


@dataclass
class CdsClientVerifier:
    """Verifies CDS client JWTs against `issuers` (AEGRADE_CDS_ISSUERS). One per process (app.state)."""

    issuers: dict[str, dict[str, Any]]
    clock: Callable[[], float] = time.time
    replays: ReplayCache = field(default_factory=ReplayCache)
    _key_sets: dict[str, _KeySet] = field(default_factory=dict)
    _failed_at: dict[str, float] = field(default_factory=dict)  # issuer -> when its jku last could not be fetched
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)  # one fetch per issuer at a time

    async def verify(self, token: str, audiences: list[str]) -> dict[str, Any]:
        """The token's claims when it is trusted for one of `audiences`; Unauthorized saying why otherwise."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _refused(f"the bearer token is not a JWT ({type(exc).__name__})") from exc
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC:
            raise _refused(f"JWT alg {str(algorithm)[:20]!r} is not accepted: CDS clients sign with {' or '.join(ALGORITHMS)}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refused("the JWT header names no key (kid)")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise _refused(f"the JWT issuer {str(issuer)[:120]!r} is not trusted (AEGRADE_CDS_ISSUERS)")
        trust = self.issuers[issuer]
        allowed = tuple(trust.get("algorithms") or ALGORITHMS)
        if algorithm not in allowed:
            raise _refused(f"JWT alg {algorithm!r} is not accepted for {issuer}: {' or '.join(allowed)}")
        jku = header.get("jku")
        if jku is not None and "jku" in trust and jku != trust["jku"]:
            raise _refused(f"the JWT's jku is not the JWK Set URL configured for {issuer}")
        key = await self._key(issuer, kid, str(algorithm))
        now = self.clock()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=audiences,
                issuer=issuer,
                leeway=LEEWAY_S,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iat": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _refused("the JWT has expired (exp)") from exc
        except jwt.InvalidAudienceError as exc:
            raise _refused(f"the JWT's aud is not this service's URL: {audiences[0]}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise _refused(f"the JWT lacks the claim {exc.claim}") from exc
        except jwt.ImmatureSignatureError as exc:
            raise _refused("the JWT is not valid yet (iat or nbf in the future)") from exc
        except jwt.InvalidSignatureError as exc:
            raise _refused("the JWT's signature does not verify with the issuer's key") from exc
        except jwt.PyJWTError as exc:
            raise _refused(f"the JWT is not valid ({type(exc).__name__})") from exc
        expires, jti = claims["exp"], claims["jti"]  # iat in the future is PyJWT's ImmatureSignatureError, above
        if not isinstance(expires, (int, float)) or expires > now + MAX_LIFETIME_S + LEEWAY_S:
            raise _refused(f"the JWT's exp is more than {MAX_LIFETIME_S} s ahead: CDS clients sign short-lived tokens")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise _refused(f"the JWT's jti must be a string of 1 to {MAX_JTI_CHARS} characters")
        try:
            first = self.replays.first_use(issuer, jti, float(expires) + LEEWAY_S, now)
        except OverflowError as exc:
            logger.error("cds auth: the replay cache is full; token of %s refused", issuer)
            raise _refused("too many tokens in flight; try again shortly") from exc
        if not first:
            raise _refused("the JWT was used before (jti replayed)")
        return claims

    async def _key(self, issuer: str, kid: str, algorithm: str) -> Any:
        key_set = await self._key_set(issuer, refresh=False)
        if kid not in key_set.keys and "jku" in self.issuers[issuer]:
            key_set = await self._key_set(issuer, refresh=True)  # the client may have rotated its keys (once a minute at most)
        jwk = key_set.keys.get(kid)
        if jwk is None:
            raise _refused(f"no key {kid[:64]!r} in the JWK Set of {issuer}")
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", algorithm) != algorithm:
            raise _refused(f"the key {kid[:64]!r} of {issuer} is not for {algorithm} signatures")
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm).key
        except jwt.PyJWTError as exc:
            raise _refused(f"the key {kid[:64]!r} of {issuer} cannot be used ({type(exc).__name__})") from exc
        curve = EC_CURVES.get(algorithm)
        if curve is not None and not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curve):
            raise _refused(f"the key {kid[:64]!r} of {issuer} is not an EC {curve} public key ({algorithm})")
        if curve is None and not (isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS):
            raise _refused(f"the key {kid[:64]!r} of {issuer} is not an RSA public key of {MIN_RSA_BITS} bits or more ({algorithm})")
        return key

    async def _key_set(self, issuer: str, *, refresh: bool) -> _KeySet:
        trust = self.issuers[issuer]
        if "jwks" in trust:
            cached = self._key_sets.get(issuer)
            if cached is None:
                cached = self._key_sets[issuer] = _KeySet(_by_kid(trust["jwks"]), self.clock(), "jwks")
            return cached
        async with self._locks.setdefault(issuer, asyncio.Lock()):  # concurrent calls wait for one fetch
            cached = self._key_sets.get(issuer)
            now = self.clock()
            if cached is not None and (now - cached.fetched_at < (JWKS_REFETCH_S if refresh else JWKS_TTL_S)):
                return cached
            failed = self._failed_at.get(issuer)
            if cached is None and failed is not None and now - failed < JWKS_REFETCH_S:
                raise _refused(f"the JWK Set of {issuer} could not be fetched (tried less than a minute ago)")
            url = str(trust["jku"])
            try:
                document = await fetch_json(url, timeout_s=JWKS_TIMEOUT_S, max_bytes=JWKS_MAX_BYTES)
            except FetchFailed as exc:
                logger.warning("cds auth: the JWK Set of %s could not be fetched: %s", issuer, exc)
                self._failed_at[issuer] = now
                if cached is not None:  # keep the keys we had; fetched again a minute later at the earliest
                    cached.fetched_at = now - JWKS_TTL_S + JWKS_REFETCH_S
                    return cached
                raise _refused(f"the JWK Set of {issuer} could not be fetched ({exc})") from exc
            self._failed_at.pop(issuer, None)
            key_set = self._key_sets[issuer] = _KeySet(_by_kid(document), now, url)
            return key_set


def _by_kid(jwks: Any) -> dict[str, dict[str, Any]]:
    """The keys of a JWK Set by their kid (keys without a kid cannot be named by a token; private
    members are never kept)."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        return {}
    private = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
    return {
        key["kid"]: {k: v for k, v in key.items() if k not in private}
        for key in keys
        if isinstance(key, dict) and isinstance(key.get("kid"), str)
    }


def _refused(reason: str) -> Unauthorized:
    logger.info("cds auth: refused: %s", reason)
    return Unauthorized(f"CDS client not authenticated: {reason}", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


_bearer = HTTPBearer(auto_error=False, description="CDS Hooks: a JWT signed by a trusted CDS client, or an API key.")


def _verifier(request: Request) -> CdsClientVerifier:
    verifier: CdsClientVerifier | None = getattr(request.app.state, "cds_verifier", None)
    if verifier is None:
        settings: ServiceSettings = request.app.state.settings
        verifier = request.app.state.cds_verifier = CdsClientVerifier(settings.cds_issuers)
    return verifier


def audiences_for(base_url: str, path: str) -> list[str]:
    """The `aud` values a token may carry for a call to `path`: the URL called, under the public
    base URL; for feedback, the service's own URL too (clients differ in which they sign)."""
    called = f"{base_url}{path}"
    if path.endswith("/feedback"):
        return [called, called.removesuffix("/feedback")]
    return [called]


async def require_cds_client(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """The access rule of the CDS service and feedback routes (see the module's docstring)."""
    settings: ServiceSettings = request.app.state.settings
    token = credentials.credentials if credentials is not None else None
    if settings.api_keys and token is not None and keys_match(token, settings.api_keys):
        return
    if settings.cds_issuers:
        if token is None:
            raise _refused("no bearer token: send the CDS client's signed JWT (Authorization: Bearer <JWT>)")
        assert settings.public_base_url is not None  # ServiceSettings requires it with issuers
        path, root = request.scope["path"], request.scope.get("root_path", "")
        if root and path.startswith(root):  # behind a proxy's prefix: the public base URL carries it
            path = path[len(root):]
        await _verifier(request).verify(token, audiences_for(settings.public_base_url, path))
        return
    if settings.api_keys:
        raise Unauthorized("a valid API key is required: Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
