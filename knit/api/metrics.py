"""The API's own Prometheus metrics: requests by route and code, and their latency.

Layer: api. Imports prometheus-client, werkzeug's routing (Quart's URL map) and hypercorn's
ASGI types.

:class:`ApiMetrics` wraps each HTTP request in :class:`knit.api.app.KnitApp`'s ASGI call,
so the gate's refusals and the fast reads (:mod:`knit.api.reads`) are counted like Quart's
answers. A request is labelled with its route's *template* (``/deployments/{id}``), never
its raw path: the label's values are bounded by the routes the app has. A path no route
matches (or a method no route of that path takes) is labelled ``unmatched``.

Latency is measured from the request's arrival to the end of its reply; for a stream
(the dashboard's events) that is the stream's whole life.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from hypercorn.typing import ASGISendCallable, ASGISendEvent, HTTPScope
from prometheus_client import CollectorRegistry, Counter, Histogram
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, Rule
from werkzeug.routing.exceptions import RoutingException

UNMATCHED = "unmatched"
"""The route label of a request no route takes."""
ROUTE_CACHE = 4096
"""Paths whose route template is remembered (the cache is emptied when full)."""
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds: the API answers in about a millisecond when idle, a stream lasts minutes."""

_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def template(rule: str) -> str:
    """``/deployments/{id}`` for werkzeug's ``/deployments/<deployment_id>``: a variable
    whose name ends in ``id`` is ``{id}``, any other keeps its name."""

    def name(match: re.Match[str]) -> str:
        variable = match.group(1)
        return "{id}" if variable == "id" or variable.endswith("_id") else "{" + variable + "}"

    return _VARIABLE.sub(name, rule)


class ApiMetrics:
    """Counts and times the API's requests into ``registry``.

    Args:
        registry: where the metrics go (the server's own, never the global one).
        url_map: the app's routes, read at the first request (routes are added after this
            is built).
    """

    def __init__(self, registry: CollectorRegistry, url_map: Map) -> None:
        self.url_map = url_map
        self._adapter: MapAdapter | None = None
        self._routes: dict[tuple[str, str], str] = {}
        self.requests = Counter(
            "knit_api_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "knit_api_request_duration_seconds",
            "Time from an HTTP request's arrival to the end of its reply, by route template.",
            ["method", "route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    def route(self, method: str, path: str) -> str:
        """The template of the route that takes ``method`` on ``path``, or ``unmatched``."""
        key = (method, path)
        found = self._routes.get(key)
        if found is not None:
            return found
        if self._adapter is None:
            self._adapter = self.url_map.bind("knit")
        try:
            rule, _ = self._adapter.match(path, method=method, return_rule=True)
        except (HTTPException, RoutingException):
            found = UNMATCHED
        else:
            found = template(rule.rule) if isinstance(rule, Rule) else UNMATCHED
        if len(self._routes) >= ROUTE_CACHE:
            self._routes.clear()
        self._routes[key] = found
        return found

    def wrap(
        self, scope: HTTPScope, send: ASGISendCallable
    ) -> tuple[ASGISendCallable, Callable[[], None]]:
        """A ``send`` that notes the reply's status, and what to call once the request is
        done (in a ``finally``: a request cut short is counted with the status it had, or
        ``0`` if none was sent)."""
        started = time.perf_counter()
        status = [0]

        async def noting(event: ASGISendEvent) -> None:
            if event["type"] == "http.response.start":
                status[0] = event["status"]
            await send(event)

        def done() -> None:
            method = scope["method"].upper()
            route = self.route(method, scope["path"])
            self.requests.labels(method, route, str(status[0])).inc()
            self.latency.labels(method, route).observe(time.perf_counter() - started)

        return noting, done
