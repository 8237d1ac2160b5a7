"""The API's per-entity reads, answered straight from ASGI ahead of Quart's request machinery.

Layer: api. Imports the standard library, hypercorn's ASGI types, ``knit.errors`` and the
``ControlPlane`` port.

``GET /nodes/<id>``, ``GET /deployments/<id>`` and ``GET /events`` are what clients poll. For
each request Quart starts two tasks (the handler and a body receiver), waits for them with
``asyncio.wait``, sends the reply under ``asyncio.wait_for`` (one more task) and cancels the
receiver: nine turns of the event loop before the reply is out, each one a wait behind every
actor that is ready when the server is busy (measured: ``simulations/bench_api.py``,
``docs/decisions/0007-reads-in-threads.md``). :meth:`ReadRoutes.answer` serves these three
GET routes within the ASGI call itself: no task, no turn of its own, only the store read's.

The Quart routes of the same paths call the same functions here (``HEAD``, a root path and
the test client's odd requests end up there), so the JSON and the errors are the same
either way. Nothing else is served here: the dashboard, writes and lists go through Quart.

Authentication is not done here: :class:`knit.api.gate.Gate` has let the request in (or
refused it) before either path sees it, so both refuse alike (``tests/api/test_reads.py``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from hypercorn.typing import ASGISendCallable, HTTPScope

from knit.api.ports import ControlPlane
from knit.errors import Conflict, Invalid, KnitError, NotFound, ValidationError

log = logging.getLogger(__name__)

Query = Mapping[str, str]
"""A request's query parameters: the first value of each."""

INTERNAL_ERROR = (
    "The server encountered an internal error and was unable to complete your request. "
    "Either the server is overloaded or there is an error in the application."
)
"""Werkzeug's description of a 500, which is what Quart answers for an unexpected error."""

_ENTITY = re.compile(r"/(nodes|deployments)/([^/]+)")


async def get_node(control: ControlPlane, node_id: str) -> Any:
    """``GET /nodes/<id>``."""
    return await control.get_node(node_id)


async def get_deployment(control: ControlPlane, deployment_id: str) -> Any:
    """``GET /deployments/<id>``."""
    return await control.get_deployment(deployment_id)


async def list_events(control: ControlPlane, query: Query) -> Any:
    """``GET /events?deployment_id=&node_id=&limit=`` (``deployment``/``node`` also accepted).

    Raises:
        ValidationError: ``limit`` is not an integer from 1 to 10,000.
    """
    raw_limit = query.get("limit", "100")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ValidationError("limit", "must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise ValidationError("limit", "must be between 1 and 10000")
    return await control.list_events(
        deployment_id=query.get("deployment_id") or query.get("deployment"),
        node_id=query.get("node_id") or query.get("node"),
        limit=limit,
    )


def error_json(message: str, errors: list[dict[str, str]] | None = None) -> Any:
    """The one error body shape of the API."""
    body: dict[str, Any] = {"error": message}
    if errors is not None:
        body["errors"] = errors
    return body


def error_reply(exc: Exception) -> tuple[int, Any]:
    """The status and body the API answers for ``exc`` (as ``create_app``'s handlers do)."""
    if isinstance(exc, Invalid):
        return 422, error_json("invalid input", exc.errors)
    if isinstance(exc, ValidationError):
        return 422, error_json("invalid input", [{"field": exc.field, "message": exc.message}])
    if isinstance(exc, NotFound):
        return 404, error_json(str(exc))
    if isinstance(exc, Conflict):
        return 409, error_json(str(exc))
    if isinstance(exc, KnitError):
        log.warning("request failed: %s", type(exc).__name__)
        return 503, error_json(str(exc))
    log.error("request failed", exc_info=exc)
    return 500, error_json(INTERNAL_ERROR)


class ReadRoutes:
    """The per-entity GET routes, as an ASGI fast path.

    Args:
        control: the control plane the reads go to.
    """

    def __init__(self, control: ControlPlane) -> None:
        self.control = control

    def route(self, scope: HTTPScope) -> Callable[[], Awaitable[Any]] | None:
        """The read that answers this request, or None if it is not one of these routes."""
        if scope["method"] != "GET" or scope.get("root_path"):
            return None
        path = scope["path"]
        if path == "/events":
            raw = scope["query_string"].decode("latin-1")
            query: dict[str, str] = {}
            for key, value in parse_qsl(raw, keep_blank_values=True, errors="replace"):
                query.setdefault(key, value)
            return lambda: list_events(self.control, query)
        match = _ENTITY.fullmatch(path)
        if match is None:
            return None
        kind, key = match.groups()
        if kind == "nodes":
            return lambda: get_node(self.control, key)
        return lambda: get_deployment(self.control, key)

    async def answer(self, scope: HTTPScope, send: ASGISendCallable) -> bool:
        """Answer the request if it is one of these routes; False (nothing sent) if not.

        Cancellation: the read stops (see ``Store.read``); nothing is sent.
        """
        read = self.route(scope)
        if read is None:
            return False
        try:
            status, data = 200, await read()
        except Exception as exc:
            status, data = error_reply(exc)
        body = json.dumps(data).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return True
