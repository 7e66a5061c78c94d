"""The bedside form's session and CSRF tokens: HMAC-signed, with no state on the server.

- **Session** (only when AEGRADE_API_KEYS is set): /login takes a key once and sets the cookie
  `aegrade_session` = `<issued>.<expires>.<key fingerprint>.<nonce>.<HMAC>`, HttpOnly,
  SameSite=Strict, Path=/ (Secure over HTTPS). It lasts SESSION_MAX_AGE_S, and ends when its key is
  removed from AEGRADE_API_KEYS or the secret changes. It opens the form only: the API still takes
  its bearer key on every request.
- **CSRF**: every form POST (/, /login, /logout) carries the hidden field `csrf_token`, an HMAC of
  the cookie it is bound to: the session when there is one, else the random cookie `aegrade_csrf`
  (HttpOnly, SameSite=Strict; a signed double-submit). A cross-site page can neither read the token
  nor send the cookies, so it cannot write an audit record through the form.

The HMAC key is AEGRADE_SESSION_SECRET, or a random one per process (sessions then end with it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "SESSION_COOKIE", "SESSION_MAX_AGE_S", "Sessions"]

SESSION_COOKIE = "aegrade_session"
CSRF_COOKIE = "aegrade_csrf"
CSRF_FIELD = "csrf_token"
SESSION_MAX_AGE_S = 12 * 3600  # a shift


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Sessions:
    """Issues and checks session cookies and CSRF tokens under one HMAC key."""

    def __init__(self, secret: bytes | None, keys: list[str]) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._fingerprints = {_fingerprint(k) for k in keys}

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def issue(self, key: str, now: float | None = None) -> str:
        """The session cookie's value for a user who gave `key` (a valid one)."""
        issued = int(now if now is not None else time.time())
        payload = f"{issued}.{issued + SESSION_MAX_AGE_S}.{_fingerprint(key)}.{secrets.token_hex(8)}"
        return f"{payload}.{self._sign('session', payload)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        """Whether `cookie` is a session this service issued, not expired, for a key still configured."""
        if not cookie or len(cookie) > 256:
            return False
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign("session", payload)):
            return False
        parts = payload.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return False
        return int(parts[1]) > (now if now is not None else time.time()) and parts[2] in self._fingerprints

    @staticmethod
    def new_binding() -> str:
        """A fresh value for the `aegrade_csrf` cookie."""
        return secrets.token_urlsafe(24)

    def csrf_token(self, binding: str) -> str:
        """The form's hidden token for the cookie value `binding`."""
        return self._sign("csrf", binding)

    def csrf_ok(self, binding: str | None, token: str | None) -> bool:
        if not binding or not token or len(binding) > 256:
            return False
        return hmac.compare_digest(token, self.csrf_token(binding))
