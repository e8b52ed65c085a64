"""Who may use the dashboard, and the checks every request passes.

- **Authentication** (`Auth`): a token, or a user and a password, compared in constant time
  (`hmac.compare_digest`). Read from the environment (`PGQUEUE_DASHBOARD_TOKEN`,
  `PGQUEUE_DASHBOARD_USER` and `PGQUEUE_DASHBOARD_PASSWORD`) or from files (`..._FILE`: the
  secret's first line, for Docker and Kubernetes secrets). Without any, the dashboard is open
  to whoever reaches it: `pgqueue dashboard` then binds to 127.0.0.1 only.
- **Sessions**: a cookie holding the user, a random nonce and an expiry, signed with
  HMAC-SHA256 (`Signer`); HttpOnly, SameSite=Strict, Path= the dashboard's mount point,
  Secure when served over HTTPS. The signing key is `PGQUEUE_DASHBOARD_SECRET` (needed when
  several processes serve one dashboard), else random per process.
- **CSRF**: every POST carries a token derived from the session's nonce (HMAC with another
  key), compared in constant time; a POST without it is refused (403). Every request that
  changes anything is a POST; GETs read.
- **Headers**: a Content-Security-Policy that allows no inline script or style and nothing
  from elsewhere, no framing, no sniffing, no referrer beyond the origin, no caching.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgqueue.errors import ConfigurationError

SESSION_COOKIE = "pgqueue_session"
SESSION_SECONDS = 12 * 3600
# Form fields larger than this are refused: no form of the dashboard comes near it.
MAX_FORM_BYTES = 256 * 1024

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

ENV_TOKEN = "PGQUEUE_DASHBOARD_TOKEN"
ENV_USER = "PGQUEUE_DASHBOARD_USER"
ENV_PASSWORD = "PGQUEUE_DASHBOARD_PASSWORD"
ENV_SECRET = "PGQUEUE_DASHBOARD_SECRET"


@dataclass(frozen=True)
class Auth:
    """What a visitor must give to get in: a `token`, or a `username` and `password` (both
    may be configured; either then works)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 16:
            raise ConfigurationError(
                "the dashboard token must be at least 16 characters: make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
            )
        if (self.username is None) != (self.password is None):
            raise ConfigurationError(
                "the dashboard needs both a user and a password "
                f"({ENV_USER} and {ENV_PASSWORD}), or neither"
            )
        if self.password is not None and len(self.password) < 8:
            raise ConfigurationError("the dashboard password must be at least 8 characters")
        if self.token is None and self.username is None:
            raise ConfigurationError(
                f"an Auth needs a token or a user and a password ({ENV_TOKEN}, or {ENV_USER} "
                f"and {ENV_PASSWORD})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Auth | None:
        """The credentials the environment gives (each also as `NAME_FILE`), or None."""
        env = os.environ if environ is None else environ
        token = _secret(env, ENV_TOKEN)
        username = _secret(env, ENV_USER)
        password = _secret(env, ENV_PASSWORD)
        if token is None and username is None and password is None:
            return None
        return cls(token=token, username=username, password=password)

    def check(self, username: str, password: str, token: str) -> str | None:
        """The user the credentials identify, or None. Every configured secret is compared
        (in constant time) whatever the input, so the time taken says nothing about which
        one was close."""
        token_ok = self.token is not None and _same(token, self.token)
        user_ok = self.username is not None and _same(username, self.username)
        password_ok = self.password is not None and _same(password, self.password)
        if token_ok:
            return "token"
        if user_ok and password_ok:
            return self.username
        return None


def _same(given: str, expected: str) -> bool:
    # Digests of both, compared: compare_digest answers at once when the lengths differ, which
    # would tell a secret's length; and it refuses str with non-ASCII characters (a
    # TypeError, so a 500 for whoever sends one in a form or a cookie).
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


class LoginThrottle:
    """At most `attempts` failed logins per client address in `window` seconds; further ones
    are refused (429) until the window has passed. In memory, per dashboard process: enough to
    turn guessing a password into years of work, not a substitute for a strong secret."""

    def __init__(self, attempts: int = 10, window: float = 300.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        with self._lock:
            recent = self._recent(client)
            return len(recent) >= self.attempts

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(time.monotonic())
            if len(self._failures) > 10_000:  # many addresses: forget the ones gone quiet
                for key in [k for k, v in self._failures.items() if not v]:
                    del self._failures[key]

    def _recent(self, client: str) -> list[float]:
        horizon = time.monotonic() - self.window
        recent = [t for t in self._failures.get(client, []) if t > horizon]
        self._failures[client] = recent
        return recent


def _secret(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if value and path:
        raise ConfigurationError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigurationError(
                f"{name}_FILE={path}: cannot read it ({exc.strerror})"
            ) from None
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigurationError(f"{name}_FILE={path} is empty")
    return value or None


class Signer:
    """Signed, expiring sessions and the CSRF tokens derived from them.

    The credentials of `auth` are part of the keys: changing the token or the password ends
    every session opened with the old ones (a leaked token is revoked by replacing it), even
    when the signing secret stays the same."""

    def __init__(self, secret: str | None = None, auth: Auth | None = None) -> None:
        key = (secret or os.environ.get(ENV_SECRET) or secrets.token_hex(32)).encode()
        if auth is not None:
            key += json.dumps([auth.token, auth.username, auth.password]).encode()
        self._session_key = hashlib.sha256(b"pgqueue-dashboard-session:" + key).digest()
        self._csrf_key = hashlib.sha256(b"pgqueue-dashboard-csrf:" + key).digest()

    def new_session(self, user: str | None) -> dict[str, Any]:
        return {"u": user, "n": secrets.token_urlsafe(16), "e": int(time.time()) + SESSION_SECONDS}

    def dumps(self, session: Mapping[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(session, separators=(",", ":")).encode())
        return f"{body.decode()}.{self._sign(body)}"

    def loads(self, cookie: str | None) -> dict[str, Any] | None:
        """The session a cookie holds, or None if it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        if not _same(signature, self._sign(body.encode())):
            return None
        try:
            session = json.loads(base64.urlsafe_b64decode(body.encode()))
        except ValueError:
            return None
        if not isinstance(session, dict) or not isinstance(session.get("n"), str):
            return None
        expires = session.get("e")
        if not isinstance(expires, int) or expires < time.time():
            return None
        return session

    def csrf_token(self, session: Mapping[str, Any]) -> str:
        nonce = str(session["n"]).encode()
        return hmac.new(self._csrf_key, nonce, hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Mapping[str, Any] | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return _same(token, self.csrf_token(session))

    def _sign(self, body: bytes) -> str:
        digest = hmac.new(self._session_key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
