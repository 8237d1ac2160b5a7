"""The gate every HTTP request passes before anything answers it: body hygiene, then who.

Layer: api. Imports the standard library, hypercorn's ASGI types, ``knit.domain.auth``, the
``ControlPlane`` port and :mod:`knit.api.sessions`.

:meth:`Gate.check` runs in :class:`knit.api.app.KnitApp`'s ASGI call, ahead of both the
fast reads (:mod:`knit.api.reads`) and Quart, so the two paths cannot differ. It decides
from the headers alone (the body is never read here), in this order:

1. A write (POST, PUT, PATCH, DELETE) to the API must carry JSON (``Content-Type:
   application/json``) or no body at all, else 415: a browser can send ``text/plain`` or a
   form to any site, never JSON without asking first. A body announced larger than 1 MiB
   gets 413 (one sent in chunks is cut at 1 MiB by Quart, also 413).
2. A dashboard request that changes state (sign-in, sign-out, the actions) must come from a page of
   this server: its ``Origin`` (or ``Referer``) must be the request's own scheme and host,
   else 403. It must carry a form, else 415.
3. Who: ``knit.domain.auth.required_access`` says what the path needs. The API takes only
   ``Authorization: Bearer <token>`` (never a cookie): missing, unknown, expired or revoked
   is 401 with ``WWW-Authenticate: Bearer``, a weaker role 403. Dashboard pages take only
   the session cookie: without one a page redirects to the sign-in page, the event
   stream, a deployment's log stream and page fragments answer 401; a role too weak for
   a dashboard action gets a 403 page (HTML, not JSON).

What it lets through carries the caller in ``scope["knit.principal"]``. Checking a token
is one SHA-256 and one dict lookup (the port answers from memory): cheap enough for
every request of the fast reads.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, urlsplit

from hypercorn.typing import ASGISendCallable, HTTPScope

from knit.api.ports import ControlPlane
from knit.api.sessions import COOKIE_NAME, Sessions, clear_cookie_header, cookie_value
from knit.domain.auth import (
    SIGN_IN_PATH,
    WRITE_METHODS,
    Access,
    Guard,
    Principal,
    bearer_token,
    required_access,
)

MAX_BODY_BYTES = 1 << 20
"""The largest request body: 1 MiB."""
PRINCIPAL_KEY = "knit.principal"
"""Where the gate leaves the caller (a ``Principal``) in the ASGI scope."""
SESSION_KEY = "knit.session"
"""Where the gate leaves a dashboard request's ``Session`` in the ASGI scope."""
JSON_TYPE = "application/json"
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
STREAM_PATH = "/ui/stream"
LOGS_PATH = re.compile(r"/ui/deployments/[^/]+/logs")
"""A deployment's log stream for the dashboard's panel: data a script reads, not a page."""


@dataclass(frozen=True)
class Refusal:
    """A reply the gate sends instead of letting the request in."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, send: ASGISendCallable) -> None:
        """Send the whole reply (cancellation: the reply may be cut short)."""
        headers = [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", str(len(self.body)).encode("ascii")),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def refuse(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Refusal:
    """A JSON error reply in the API's one shape (``{"error": message}``)."""
    return Refusal(status, json.dumps({"error": message}).encode(), headers=list(headers))


FORBIDDEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Not allowed · Knit</title>
<link rel="stylesheet" href="/ui/static/dashboard.css"></head>
<body><header class="top"><a class="brand" href="/ui/">Knit</a></header>
<main id="main"><h1>Not allowed</h1><p class="reason" role="alert">{message}.</p>
<p>Sign in with a token of that role to do it. <a href="/ui/">Back to the overview</a></p>
</main></body></html>
"""
"""The dashboard's 403 page (``message`` is the gate's own text, never a user's)."""


def forbidden_page(message: str) -> Refusal:
    """403 for a dashboard request whose session's role is too weak: a page, not JSON."""
    body = FORBIDDEN_PAGE.format(message=html.escape(message)).encode()
    headers = [
        ("Content-Security-Policy", "default-src 'none'; style-src 'self'; base-uri 'none'"),
        ("Cache-Control", "no-store"),
    ]
    return Refusal(403, body, content_type="text/html; charset=utf-8", headers=headers)


def unauthorized(message: str) -> Refusal:
    """401 with ``WWW-Authenticate: Bearer``."""
    return refuse(401, message, [("WWW-Authenticate", "Bearer")])


def header(scope: HTTPScope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lowercase), or None."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def media_type(content_type: str | None) -> str | None:
    """``application/json`` of ``application/json; charset=utf-8``; None if absent."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def body_problem(scope: HTTPScope, accepted: frozenset[str]) -> Refusal | None:
    """415 or 413 for a write whose body is of the wrong type or too large, else None."""
    length_text = header(scope, b"content-length")
    chunked = "chunked" in (header(scope, b"transfer-encoding") or "").lower()
    try:
        length = int(length_text) if length_text is not None else None
    except ValueError:
        return refuse(400, "the Content-Length header is not a number")
    kind = media_type(header(scope, b"content-type"))
    has_body = chunked or bool(length)
    if kind is None and not has_body:
        return None  # POST /nodes/<id>/drain, DELETE: nothing to read
    if kind not in accepted:
        wanted = " or ".join(sorted(accepted))
        return refuse(415, f"unsupported content type {kind or '(none)'}: send {wanted}")
    if length is not None and length > MAX_BODY_BYTES:
        return refuse(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    return None


def same_origin(scope: HTTPScope) -> bool:
    """Whether a browser request comes from a page of this server: its ``Origin`` (or,
    without one, its ``Referer``) has the request's own scheme and ``Host``."""
    host = header(scope, b"host")
    if not host:
        return False
    own = f"{scope['scheme']}://{host}".lower()
    origin = header(scope, b"origin")
    if origin is not None and origin != "null":
        return origin.strip().lower() == own
    referer = header(scope, b"referer")
    if referer is None:
        return False
    parts = urlsplit(referer.strip())
    return f"{parts.scheme}://{parts.netloc}".lower() == own


class Gate:
    """Decides, from a request's headers, whether it may go on.

    Args:
        control: the port that authenticates tokens (from memory).
        sessions: the dashboard's session cookies.
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        control: ControlPlane,
        sessions: Sessions,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self.sessions = sessions
        self.clock = clock

    def check(self, scope: HTTPScope) -> Refusal | None:
        """None to let the request in (its principal left in the scope), or the refusal."""
        method = scope["method"].upper()
        access = required_access(method, scope["path"])
        dashboard = access.guard is Guard.SESSION or access.browser_write
        if method in WRITE_METHODS:
            if dashboard and not same_origin(scope):
                return refuse(403, "cross-site request refused: Origin is not this server")
            problem = body_problem(scope, FORM_TYPES if dashboard else frozenset({JSON_TYPE}))
            if problem is not None:
                return problem
        if access.guard is Guard.BEARER:
            return self._bearer(scope, access)
        if access.guard is Guard.SESSION:
            return self._session(scope, access)
        return None  # PUBLIC, or JOIN (the route checks the join token)

    def _bearer(self, scope: HTTPScope, access: Access) -> Refusal | None:
        token = bearer_token(header(scope, b"authorization"))
        if token is None:
            return unauthorized("an API token is required: Authorization: Bearer <token>")
        principal = self.control.authenticate(token)
        if principal is None:
            return unauthorized("the API token is unknown, revoked or expired")
        return self._allow(scope, principal, access)

    def _session(self, scope: HTTPScope, access: Access) -> Refusal | None:
        value = cookie_value(scope["headers"], COOKIE_NAME)
        now = self.clock()
        session = self.sessions.verify(value, now) if value else None
        principal = self.control.token_principal(session.token_id) if session else None
        if session is None or principal is None:
            return self._sign_in_first(scope, cleared=value is not None)
        cast(dict[str, Any], scope)[SESSION_KEY] = session
        return self._allow(scope, principal, access)

    @staticmethod
    def _allow(scope: HTTPScope, principal: Principal, access: Access) -> Refusal | None:
        if access.role is not None and not principal.role.allows(access.role):
            message = f"a {principal.role} token may not do this: it needs the {access.role} role"
            if access.guard is Guard.SESSION:
                return forbidden_page(message)
            return refuse(403, message)
        cast(dict[str, Any], scope)[PRINCIPAL_KEY] = principal
        return None

    @staticmethod
    def _sign_in_first(scope: HTTPScope, *, cleared: bool) -> Refusal:
        secure = scope["scheme"] == "https"
        headers = [("Set-Cookie", clear_cookie_header(secure=secure))] if cleared else []
        query = scope["query_string"].decode("latin-1")
        fragment = "fragment=1" in query.split("&")
        if scope["path"] == STREAM_PATH or LOGS_PATH.fullmatch(scope["path"]) or fragment:
            return refuse(401, "sign in first", headers)
        target = scope["path"] + (f"?{query}" if query and not fragment else "")
        location = f"{SIGN_IN_PATH}?next={quote(target, safe='/')}"
        headers.append(("Location", location))
        return Refusal(
            303, b"sign in first\n", content_type="text/plain; charset=utf-8", headers=headers
        )


def principal_of(scope: Mapping[str, object]) -> Principal | None:
    """The caller the gate let in (None for public routes)."""
    principal = scope.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else None
