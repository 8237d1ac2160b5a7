"""A deployment's logs for the dashboard: the API's log stream behind the session cookie.

Layer: dashboard. Imports quart, anyio, ``knit.api.ports``, ``knit.domain.logs`` and
``knit.errors``; never actors or the store.

``GET /ui/deployments/<id>/logs`` takes the query of ``GET /deployments/{id}/logs``
(``follow``, ``tail``, ``since``, ``timestamps``, ``instance``) and answers the same text
lines (``[index] line``) from the same :class:`knit.api.ports.LogSource`. The REST API never
accepts the session cookie, so this is the only way a page reaches the logs; the gate lets
only a signed-in browser in (``read``, like the API route). The deployment page's script
reads it with a streaming ``fetch``; without JavaScript its link opens the plain text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from quart import Blueprint, Response, request

from knit.api.ports import LogSource
from knit.domain.logs import parse_log_query
from knit.errors import Invalid

PANEL_TAIL = 100
"""Lines the deployment page's log panel starts with."""


async def until_closing(body: AsyncIterator[bytes], closing: anyio.Event) -> AsyncIterator[bytes]:
    """``body``'s chunks until it ends or the dashboard closes (checked between chunks: a
    quiet followed stream is ended by the HTTP server's graceful timeout instead)."""
    try:
        async for chunk in body:
            yield chunk
            if closing.is_set():
                return
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


def add_logs(bp: Blueprint, logs: LogSource | None, closing: anyio.Event) -> None:
    """Register ``GET /ui/deployments/<id>/logs`` on the dashboard's Blueprint."""

    @bp.route("/ui/deployments/<deployment_id>/logs", methods=["GET"])
    async def deployment_logs(deployment_id: str) -> Response:
        try:
            query, index = parse_log_query({key: request.args[key] for key in request.args})
        except Invalid as exc:
            text = "".join(f"{e['field']}: {e['message']}\n" for e in exc.errors)
            return Response(text, status=422, mimetype="text/plain")
        if logs is None or closing.is_set():
            return Response("this server does not stream logs now\n", 503, mimetype="text/plain")
        body = await logs.open_logs(query, index=index, deployment_id=deployment_id)
        response = Response(
            until_closing(body, closing),
            mimetype="text/plain",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # a followed stream ends when the client leaves
        return response
