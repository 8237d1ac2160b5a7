"""Dashboard sessions: a signed cookie naming an API token, never holding it.

Layer: api. Pure but for randomness: imports the standard library and ``knit.domain.auth``.

Signing in on the dashboard takes an API token once; the browser then holds a cookie
``knit_session=<token id>.<expiry>.<nonce>.<signature>``, the signature an HMAC-SHA256
under a key made at random when the server starts (so a restart signs everybody out).
Each request checks the signature and the expiry, then asks the live token book for the
token id: revoking the token ends its sessions at once. Signing out ends the nonce (kept
in memory until the cookie would have expired anyway).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from knit.domain.auth import Principal

COOKIE_NAME = "knit_session"
SESSION_TTL = 12 * 3600.0
"""Longest a session lasts (less when its token expires sooner)."""
MAX_ENDED = 100_000
"""Signed-out sessions remembered at most (the oldest are forgotten past it)."""


@dataclass(frozen=True)
class Session:
    """A session the cookie proves: its token's id, when it ends, and its nonce."""

    token_id: str
    expires_at: int
    nonce: str


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


class Sessions:
    """Issues and checks session cookies.

    Args:
        key: the signing key (default: 32 random bytes).
        ttl: seconds a session lasts at most.
    """

    def __init__(self, key: bytes | None = None, *, ttl: float = SESSION_TTL) -> None:
        self._key = key if key is not None else os.urandom(32)
        self.ttl = ttl
        self._ended: dict[str, int] = {}

    def issue(self, principal: Principal, now: float) -> tuple[str, int]:
        """A cookie value for ``principal``'s token and its lifetime in seconds."""
        expires = now + self.ttl
        if principal.expires_at is not None:
            expires = min(expires, principal.expires_at)
        expires_at = int(expires)
        nonce = secrets.token_urlsafe(12)
        payload = f"{principal.token_id}.{expires_at}.{nonce}"
        return f"{payload}.{_mac(self._key, payload)}", max(0, expires_at - int(now))

    def verify(self, value: str, now: float) -> Session | None:
        """The session a cookie value proves, or None (forged, malformed, expired, ended)."""
        parts = value.split(".")
        if len(parts) != 4:
            return None
        token_id, expires, nonce, mac = parts
        payload = f"{token_id}.{expires}.{nonce}"
        try:
            good = hmac.compare_digest(_mac(self._key, payload), mac)
        except (TypeError, UnicodeEncodeError):  # non-ASCII: never one of ours
            return None
        if not good or not expires.isdigit():
            return None
        session = Session(token_id=token_id, expires_at=int(expires), nonce=nonce)
        if now >= session.expires_at or nonce in self._ended:
            return None
        return session

    def end(self, session: Session) -> None:
        """Refuse this session's cookie from now on (signing out)."""
        if len(self._ended) >= MAX_ENDED:
            # The oldest entries first (dicts keep insertion order); a forgotten one may
            # still be used until its expiry, as a cookie that was never ended could.
            for nonce in list(self._ended)[: MAX_ENDED // 10]:
                del self._ended[nonce]
        self._ended[session.nonce] = session.expires_at


def cookie_value(headers: Iterable[tuple[bytes, bytes]], name: str = COOKIE_NAME) -> str | None:
    """The value of cookie ``name`` in ASGI request headers, or None."""
    for key, raw in headers:
        if key.lower() != b"cookie":
            continue
        for part in raw.decode("latin-1").split(";"):
            cookie_name, sep, value = part.strip().partition("=")
            if sep and cookie_name == name:
                return value.strip().strip('"')
    return None


def set_cookie_header(value: str, max_age: int, *, secure: bool) -> str:
    """The ``Set-Cookie`` value of a session cookie: HttpOnly, SameSite=Strict, Path=/,
    Secure when served over TLS."""
    flags = f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"
    return f"{COOKIE_NAME}={value}{flags}{'; Secure' if secure else ''}"


def clear_cookie_header(*, secure: bool) -> str:
    """The ``Set-Cookie`` value that removes the session cookie."""
    return set_cookie_header("", 0, secure=secure)
