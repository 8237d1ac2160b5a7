"""The dashboard's sign-in and sign-out: an API token in, a session cookie out.

Layer: dashboard. Imports quart, ``knit.api.ports``, ``knit.api.gate`` and
``knit.api.sessions``; never actors or the store.

- ``GET /ui/sign-in`` shows a form asking for an API token (any role: a ``read`` token sees
  every page; the actions need their API route's role).
- ``POST /ui/sign-in`` (a form: ``token``, ``next``) checks the token and sets the session
  cookie (HttpOnly, SameSite=Strict, Path=/, Secure over TLS; its value names the token,
  never holds it), then sends the browser to ``next`` (a dashboard path) or the overview.
  An unknown token shows the form again with 401.
- ``POST /ui/sign-out`` ends the session and removes the cookie.

The gate (:mod:`knit.api.gate`) has already refused these POSTs unless their ``Origin`` is
this server and their body a form of at most 1 MiB.
"""

from __future__ import annotations

import logging
import time

from quart import Blueprint, Response, redirect, render_template, request
from quart.typing import ResponseReturnValue

from knit.api.gate import SESSION_KEY
from knit.api.ports import ControlPlane
from knit.api.sessions import Session, Sessions, clear_cookie_header, set_cookie_header

log = logging.getLogger(__name__)

HOME = "/ui/"
MAX_TOKEN_LENGTH = 256


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the dashboard, never another site."""
    if (
        not target
        or not target.startswith("/ui/")
        or target.startswith("/ui/sign-")
        or "\\" in target
        or any(ord(c) < 0x20 for c in target)
    ):
        return HOME
    return target


def add_sign_in(bp: Blueprint, control: ControlPlane, sessions: Sessions) -> None:
    """Register the sign-in and sign-out routes on the dashboard's Blueprint."""

    async def form(status: int = 200, error: str | None = None, target: str = HOME) -> Response:
        html = await render_template("sign_in.html", error=error, next=target)
        return Response(html, status=status, mimetype="text/html")

    @bp.route("/ui/sign-in", methods=["GET"])
    async def sign_in_form() -> Response:
        return await form(target=safe_next(request.args.get("next")))

    @bp.route("/ui/sign-in", methods=["POST"])
    async def sign_in() -> ResponseReturnValue:
        data = await request.form  # past 1 MiB: 413 (the app's error handler)
        target = safe_next(data.get("next"))
        token = (data.get("token") or "").strip()
        principal = control.authenticate(token) if 0 < len(token) <= MAX_TOKEN_LENGTH else None
        if principal is None:
            return await form(401, "This token is unknown, revoked or expired.", target)
        value, max_age = sessions.issue(principal, time.time())
        secure = request.scheme == "https"
        response = redirect(target, 303)
        response.headers["Set-Cookie"] = set_cookie_header(value, max_age, secure=secure)
        log.info("dashboard: signed in with token %s", principal.token_id)
        return response

    @bp.route("/ui/sign-out", methods=["POST"])
    async def sign_out() -> ResponseReturnValue:
        session = request.scope.get(SESSION_KEY)
        if isinstance(session, Session):
            sessions.end(session)
        response = redirect("/ui/sign-in", 303)
        response.headers["Set-Cookie"] = clear_cookie_header(secure=request.scheme == "https")
        return response
