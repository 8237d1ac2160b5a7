"""Who may call what: roles, the access each route needs, and the book of live API tokens.

Layer: domain. Pure: imports the standard library only. The API's gate
(``knit.api.gate``) applies these decisions to each request; the server keeps a
:class:`TokenBook` in memory so that checking a token costs one hash and one dict lookup.

- :class:`Role`: ``read`` < ``deploy`` < ``admin``.
- :func:`required_access`: what a ``(method, path)`` needs: nothing (``GET /healthz``, the
  dashboard's sign-in page and static files), a join token checked by the route itself
  (``POST /join``), a dashboard session, or an API token of some role. Paths nobody routes
  still need a valid token (``read`` for reads, ``admin`` for anything else), so nobody can
  probe the API without one.
- :class:`TokenBook`: the live API tokens by the SHA-256 of their secret and by id, with
  their expiry; revoking one removes it at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum

API_TOKEN_PREFIX = "knit_"
"""API token secrets: this prefix, then 43 characters of URL-safe base64 (32 random bytes)."""
JOIN_TOKEN_PREFIX = "knitjoin_"
"""Join token secrets: this prefix, then 43 characters of URL-safe base64."""
SECRET_BYTES = 32


class Role(StrEnum):
    """What an API token may do; each role may do everything the ones before it may."""

    READ = "read"
    DEPLOY = "deploy"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 for ``read``, 1 for ``deploy``, 2 for ``admin``."""
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether a token of this role may do what ``needed`` is required for."""
        return self.rank >= needed.rank


_RANKS = {Role.READ: 0, Role.DEPLOY: 1, Role.ADMIN: 2}


class Guard(Enum):
    """How a request is let in."""

    PUBLIC = "public"
    """No credential: ``GET /healthz``, the sign-in page, the dashboard's static files."""
    JOIN = "join"
    """The route checks a join token itself (``POST /join``)."""
    SESSION = "session"
    """A dashboard page: the session cookie of a signed-in browser."""
    BEARER = "bearer"
    """The REST API: ``Authorization: Bearer <API token>`` of at least ``Access.role``."""


@dataclass(frozen=True)
class Access:
    """What one request needs: a guard, the weakest role allowed (for ``SESSION`` and
    ``BEARER``), and whether it changes state from a browser (its Origin is checked)."""

    guard: Guard
    role: Role | None = None
    browser_write: bool = False


PUBLIC = Access(Guard.PUBLIC)
READ = Access(Guard.BEARER, Role.READ)
DEPLOY = Access(Guard.BEARER, Role.DEPLOY)
ADMIN = Access(Guard.BEARER, Role.ADMIN)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods that may change state (their bodies are checked: JSON only, at most 1 MiB)."""

DASHBOARD_PREFIX = "/ui"
SIGN_IN_PATH = "/ui/sign-in"
SIGN_OUT_PATH = "/ui/sign-out"
STATIC_PREFIX = "/ui/static/"

_SEGMENT = r"[^/]+"
_ADMIN_READS = (re.compile(r"/tokens"), re.compile(r"/join-tokens"))
"""GETs that need ``admin``: the inventory of who may do what."""
_WRITES: tuple[tuple[str, re.Pattern[str], Role], ...] = (
    ("POST", re.compile(r"/deployments"), Role.DEPLOY),
    ("DELETE", re.compile(rf"/deployments/{_SEGMENT}"), Role.DEPLOY),
    ("PUT", re.compile(rf"/deployments/{_SEGMENT}"), Role.DEPLOY),
    ("POST", re.compile(rf"/deployments/{_SEGMENT}/(scale|rollback)"), Role.DEPLOY),
)
"""Writes weaker than ``admin``; every other write (registries, networks, nodes, tokens,
join tokens, and paths nobody routes) needs ``admin``."""
_DASHBOARD_ACTIONS: tuple[tuple[frozenset[str], re.Pattern[str], Role], ...] = (
    (frozenset({"GET", "POST"}), re.compile(r"/ui/deployments/new"), Role.DEPLOY),
    (frozenset({"GET", "POST"}), re.compile(rf"/ui/deployments/{_SEGMENT}/delete"), Role.DEPLOY),
    (frozenset({"POST"}), re.compile(rf"/ui/deployments/{_SEGMENT}/scale"), Role.DEPLOY),
    (frozenset({"POST"}), re.compile(rf"/ui/nodes/{_SEGMENT}/(drain|eligible)"), Role.ADMIN),
)
"""The dashboard's actions and the role of the API route each one stands for (the form that
leads to an action needs its role too); every other dashboard path needs ``read``."""


def required_access(method: str, path: str) -> Access:
    """What a request for ``path`` with ``method`` needs to be let in.

    ``path`` is the decoded path (ASGI's ``scope["path"]``). Matching is exact: a path
    that matches no route below gets the strictest rule for its method, so a path the web
    framework would route differently (``//deployments``, ``/deployments/``) is never let
    in more cheaply than the route it could reach.
    """
    method = method.upper()
    reading = method in READ_METHODS
    if path == "/healthz" and method in ("GET", "HEAD"):
        return PUBLIC
    if path == "/join" and method == "POST":
        return Access(Guard.JOIN)
    if path == "/" or path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/"):
        return _dashboard_access(method, path)
    if reading:
        if any(p.fullmatch(path) for p in _ADMIN_READS):
            return ADMIN
        return READ
    for write_method, pattern, role in _WRITES:
        if method == write_method and pattern.fullmatch(path):
            return Access(Guard.BEARER, role)
    return ADMIN


def _dashboard_access(method: str, path: str) -> Access:
    reading = method in READ_METHODS
    if path == SIGN_IN_PATH:
        return Access(Guard.PUBLIC, browser_write=not reading)
    if reading and path.startswith(STATIC_PREFIX):
        return PUBLIC
    role = Role.READ
    for methods, pattern, action_role in _DASHBOARD_ACTIONS:
        if method in methods and pattern.fullmatch(path):
            role = action_role
    return Access(Guard.SESSION, role, browser_write=not reading)


# --- secrets -------------------------------------------------------------------------------


def new_secret(prefix: str = API_TOKEN_PREFIX) -> str:
    """A fresh token secret: ``prefix`` and 32 random bytes in URL-safe base64 (43 chars)."""
    return prefix + secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """The SHA-256 of a secret, in hex: what the store keeps instead of the secret.

    A fast hash is enough: the secrets are 256 random bits, not passwords a dictionary
    could guess (docs/decisions/0012-api-tokens.md).
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None.

    The scheme is case-insensitive (RFC 9110); anything else (Basic, an empty token, a
    token with spaces) is no token.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


# --- the book of live tokens ---------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who a valid API token speaks for."""

    token_id: str
    name: str
    role: Role
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        """Whether the token has expired at ``now`` (seconds since the epoch)."""
        return self.expires_at is not None and now >= self.expires_at


class TokenBook:
    """The live API tokens, by the SHA-256 of their secret and by id.

    The server fills it from the store at start and changes it with every token it creates
    or revokes; being the only writer of the tokens table, it never needs to read the
    store again to authenticate a request. Expired tokens are refused (and dropped) when
    they are looked up.
    """

    def __init__(self, tokens: Iterable[tuple[str, Principal]] = ()) -> None:
        self._by_hash: dict[str, Principal] = {}
        self._hash_of: dict[str, str] = {}
        for token_hash, principal in tokens:
            self.add(token_hash, principal)

    def __len__(self) -> int:
        return len(self._by_hash)

    def add(self, token_hash: str, principal: Principal) -> None:
        """Let ``principal``'s token in (replacing any entry of the same id)."""
        self.remove(principal.token_id)
        self._by_hash[token_hash] = principal
        self._hash_of[principal.token_id] = token_hash

    def remove(self, token_id: str) -> bool:
        """Refuse the token ``token_id`` from now on; whether it was there."""
        token_hash = self._hash_of.pop(token_id, None)
        if token_hash is None:
            return False
        del self._by_hash[token_hash]
        return True

    def authenticate(self, secret: str, now: float) -> Principal | None:
        """The principal of a presented secret, or None (unknown or expired)."""
        token_hash = hash_secret(secret)
        principal = self._by_hash.get(token_hash)
        return self._live(principal, now)

    def principal(self, token_id: str, now: float) -> Principal | None:
        """The principal of the token ``token_id`` if it is still valid, else None."""
        token_hash = self._hash_of.get(token_id)
        principal = None if token_hash is None else self._by_hash.get(token_hash)
        return self._live(principal, now)

    def _live(self, principal: Principal | None, now: float) -> Principal | None:
        if principal is None:
            return None
        if principal.expired(now):
            self.remove(principal.token_id)
            return None
        return principal
