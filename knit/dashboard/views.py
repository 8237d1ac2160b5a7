"""The dashboard's pages: a Quart Blueprint of server-rendered Jinja2 pages plus an SSE stream.

Layer: dashboard. Imports quart (and through it jinja2), anyio, ``knit.api.ports``,
``knit.api.gate``, ``knit.api.sessions``, ``knit.domain.auth`` and ``knit.errors``; never
actors or the store.
Every value shown comes from users, so templates are autoescaped ``.html`` files and
nothing is marked safe by hand; env values are never handed to a template at all.
Routes (docs/dashboard.md):

- ``GET /`` redirects to ``/ui/``; ``GET /ui/`` is the overview;
- ``GET /ui/deployments/<id>``, ``GET /ui/nodes/<id>``, ``GET /ui/events?deployment=&node=``;
- any page with ``?fragment=1`` renders only its ``<main>`` content (what the script swaps in);
- ``GET /ui/stream`` is the live-update event stream (503 past ``max_streams``);
- ``GET|POST /ui/sign-in`` and ``POST /ui/sign-out`` (:mod:`knit.dashboard.signin`);
- the actions (submit, scale, delete a deployment; drain a node, make it eligible):
  :mod:`knit.dashboard.actions`; a deployment's logs: :mod:`knit.dashboard.logs`.

Every page but the sign-in form needs a signed-in browser: the API's gate
(:mod:`knit.api.gate`) sends others to the sign-in page before any route here runs.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from quart import Blueprint, Response, redirect, render_template, request, url_for
from quart.blueprints import BlueprintSetupState
from quart.typing import ResponseReturnValue

from knit.api.gate import principal_of
from knit.api.ports import ControlPlane, LogSource
from knit.api.sessions import Sessions
from knit.dashboard.actions import DONE, add_actions
from knit.dashboard.logs import PANEL_TAIL, add_logs
from knit.dashboard.present import (
    JSONDict,
    ago,
    count,
    health,
    human_bytes,
    masked_env,
    paginate,
    parse_page,
    rollout_view,
    running_by_deployment,
    short,
    version_rows,
)
from knit.dashboard.signin import add_sign_in
from knit.dashboard.stream import (
    HEARTBEAT_INTERVAL,
    MAX_STREAMS,
    POLL_INTERVAL,
    ClusterWatch,
    StreamLimiter,
    summary_events,
)
from knit.domain.auth import Role
from knit.errors import Conflict, Invalid, KnitError, NotFound, ValidationError

log = logging.getLogger(__name__)

TABLE_ROWS = 100
"""Rows per page in the overview's tables."""
INSTANCE_ROWS = 200
"""Rows per page of the instance tables of a deployment or a node."""
RECENT_EVENTS = 50
"""Events shown on a deployment's or a node's page."""
EVENTS_PAGE = 200
"""Events shown on the events page."""
VERSION_ROWS = 50
"""Rows per page of a deployment's versions table (newest first)."""
MAX_FILTER = 128
"""Longest id accepted as an events filter."""

PUBLIC_ENDPOINTS = frozenset({"dashboard.sign_in_form", "dashboard.sign_in", "dashboard.static"})
"""What the dashboard serves without a signed-in browser."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def create_dashboard(control: ControlPlane, **options: Any) -> Blueprint:
    """The dashboard Blueprint over ``control``; ``options`` go to :class:`Dashboard`."""
    return Dashboard(control, **options).blueprint


def _node_order(node: JSONDict) -> tuple[bool, str, str]:
    # Unhealthy nodes first: they are what an operator opens the page for.
    return (node.get("status") == "healthy", str(node.get("hostname")), str(node.get("id")))


def _filter_arg(*names: str) -> str | None:
    for name in names:
        value = (request.args.get(name) or "").strip()
        if value:
            return value[:MAX_FILTER]
    return None


def page_url(param: str, number: int) -> str:
    """The current page's URL with ``param`` set to ``number`` (other arguments kept)."""
    values: dict[str, Any] = {**request.args.to_dict(), **(request.view_args or {})}
    values.pop("fragment", None)
    values[param] = str(number)
    return url_for(str(request.endpoint), **values)


async def render_page(template: str, status: int = 200, **context: Any) -> Response:
    """Render ``template`` whole, or only its ``main`` block when ``?fragment=1``."""
    fragment = request.args.get("fragment") == "1"
    html = await render_template(template, fragment=fragment, **context)
    return Response(html, status=status, mimetype="text/html")


class Dashboard:
    """The dashboard's state (the stream limiter and the shared watch) and its Blueprint.

    Registering the Blueprint on an app also stores this object as
    ``app.extensions["knit.dashboard"]``, so whoever serves the app can call :meth:`close`
    before stopping the HTTP server: open event streams then end at once instead of holding
    the server's graceful shutdown until its timeout.

    Args:
        control: the control plane the pages read (and that checks tokens at sign-in).
        sessions: the session cookies (shared with the gate that checks them).
        logs: where a deployment's log panel reads (None: it answers 503).
        max_streams: live streams allowed at once; more are answered 503.
        poll_interval: seconds between reads of the cluster view for the live stream.
        heartbeat_interval: seconds of silence after which a stream sends a comment.
    """

    def __init__(
        self,
        control: ControlPlane,
        *,
        sessions: Sessions | None = None,
        logs: LogSource | None = None,
        max_streams: int = MAX_STREAMS,
        poll_interval: float = POLL_INTERVAL,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.control = control
        self.sessions = sessions if sessions is not None else Sessions()
        self.logs = logs
        self.streams = StreamLimiter(max_streams)
        self.watch = ClusterWatch(control, max_age=poll_interval)
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.closing = anyio.Event()
        self.blueprint = self._build()

    def close(self) -> None:
        """End every open event stream (within one poll interval) and refuse new ones."""
        self.closing.set()

    def _build(self) -> Blueprint:
        bp = Blueprint(
            "dashboard",
            __name__,
            template_folder="templates",
            static_folder="static",
            static_url_path="/ui/static",
        )
        bp.add_app_template_filter(short, "short")
        bp.add_app_template_filter(ago, "ago")
        bp.add_app_template_filter(human_bytes, "human_bytes")
        bp.add_app_template_filter(health, "health")
        bp.add_app_template_global(page_url, "page_url")
        add_sign_in(bp, self.control, self.sessions)
        add_actions(bp, self.control, render=render_page, deployment_page=self.deployment)
        add_logs(bp, self.logs, self.closing)

        @bp.context_processor
        def signed_in() -> dict[str, Any]:
            principal = principal_of(request.scope)

            def can(role: str) -> bool:
                # Only to hide the forms a role may not use: the gate refuses them anyway.
                return principal is not None and principal.role.allows(Role(role))

            done = request.args.get("done")
            return {"principal": principal, "can": can, "done": done if done in DONE else None}

        @bp.before_request
        async def gated() -> Response | None:
            # The gate (knit.api.gate) decides; this only makes sure it ran, so the
            # Blueprint registered on an app without it shows nothing.
            if request.endpoint in PUBLIC_ENDPOINTS or principal_of(request.scope):
                return None
            return Response("sign in first\n", status=401, mimetype="text/plain")

        def remember(state: BlueprintSetupState) -> None:
            state.app.extensions["knit.dashboard"] = self

        bp.record_once(remember)

        @bp.after_request
        async def headers(response: Response) -> Response:
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            if response.mimetype == "text/html":
                response.headers.setdefault("Cache-Control", "no-store")
            return response

        @bp.errorhandler(NotFound)
        async def not_found(exc: NotFound) -> Response:
            return await render_page("not_found.html", 404, kind=exc.kind, key=exc.key)

        @bp.errorhandler(Conflict)
        async def conflict(exc: Conflict) -> Response:
            return await render_page("refused.html", 409, errors=[{"message": str(exc)}])

        @bp.errorhandler(Invalid)
        async def invalid(exc: Invalid) -> Response:
            return await render_page("refused.html", 422, errors=exc.errors)

        @bp.errorhandler(ValidationError)
        async def invalid_field(exc: ValidationError) -> Response:
            errors = [{"field": exc.field, "message": exc.message}]
            return await render_page("refused.html", 422, errors=errors)

        @bp.errorhandler(KnitError)
        async def unavailable(exc: KnitError) -> Response:
            log.warning("dashboard page failed: %s: %s", type(exc).__name__, exc)
            return await render_page("unavailable.html", 503, reason=type(exc).__name__)

        @bp.route("/")
        async def root() -> ResponseReturnValue:
            return redirect(url_for("dashboard.overview"))

        @bp.route("/ui/")
        async def overview() -> Response:
            return await self.overview()

        @bp.route("/ui/deployments/<deployment_id>")
        async def deployment(deployment_id: str) -> Response:
            return await self.deployment(deployment_id)

        @bp.route("/ui/nodes/<node_id>")
        async def node(node_id: str) -> Response:
            return await self.node(node_id)

        @bp.route("/ui/events")
        async def events() -> Response:
            return await self.events()

        @bp.route("/ui/stream")
        async def stream() -> Response:
            return self.stream()

        @bp.route("/ui/<path:rest>")
        async def unknown(rest: str) -> Response:
            return await render_page("not_found.html", 404, kind="page", key="/ui/" + rest)

        return bp

    async def overview(self) -> Response:
        """Counts, then the nodes and deployments tables (paged)."""
        nodes = sorted(await self.control.list_nodes(), key=_node_order)
        deployments = sorted(
            await self.control.list_deployments(),
            key=lambda d: (str(d.get("name")), str(d.get("id"))),
        )
        instances = await self.control.list_instances()
        return await render_page(
            "overview.html",
            section="overview",
            counts=count(nodes, deployments, instances),
            totals={
                "nodes": len(nodes),
                "deployments": len(deployments),
                "instances": len(instances),
            },
            running=running_by_deployment(instances),
            nodes=paginate(
                nodes,
                parse_page(request.args.get("nodes_page")),
                per_page=TABLE_ROWS,
                param="nodes_page",
            ),
            deployments=paginate(
                deployments,
                parse_page(request.args.get("deployments_page")),
                per_page=TABLE_ROWS,
                param="deployments_page",
            ),
            servers=await self.control.list_servers(),
        )

    async def deployment(self, deployment_id: str, status: int = 200, **extra: Any) -> Response:
        """One deployment: its spec (env values masked), rollout, versions, instances and
        recent events; ``extra`` (an action's errors) goes to the template, with ``status``.
        """
        data = dict(await self.control.get_deployment(deployment_id))
        versions = version_rows(
            await self.control.deployment_versions(deployment_id), data.get("version")
        )
        instances = sorted(
            data.pop("instances", []), key=lambda i: (i.get("index", 0), str(i.get("instance_id")))
        )
        env = masked_env(data.pop("env", None))  # values never reach a template
        nodes = {n["id"]: n for n in await self.control.list_nodes()}
        events = await self.control.list_events(
            deployment_id=deployment_id, node_id=None, limit=RECENT_EVENTS
        )
        running = sum(i.get("status") == "running" for i in instances)
        return await render_page(
            "deployment.html",
            status,
            section="deployments",
            log_tail=PANEL_TAIL,
            **extra,
            deployment=data,
            env=env,
            running=running,
            rollout=rollout_view(data),
            versions=paginate(
                versions,
                parse_page(request.args.get("versions_page")),
                per_page=VERSION_ROWS,
                param="versions_page",
            ),
            nodes=nodes,
            instances=paginate(
                instances,
                parse_page(request.args.get("page")),
                per_page=INSTANCE_ROWS,
                param="page",
            ),
            events=events,
            deployments={deployment_id: data},
        )

    async def node(self, node_id: str) -> Response:
        """One node: its details, its instances and recent events."""
        data = await self.control.get_node(node_id)
        instances = [i for i in await self.control.list_instances() if i.get("node_id") == node_id]
        deployments = {d["id"]: d for d in await self.control.list_deployments()}
        instances.sort(
            key=lambda i: (
                str(deployments.get(i.get("deployment_id"), {}).get("name")),
                i.get("index", 0),
            )
        )
        events = await self.control.list_events(
            deployment_id=None, node_id=node_id, limit=RECENT_EVENTS
        )
        return await render_page(
            "node.html",
            section="nodes",
            node=data,
            deployments=deployments,
            nodes={node_id: data},
            instances=paginate(
                instances,
                parse_page(request.args.get("page")),
                per_page=INSTANCE_ROWS,
                param="page",
            ),
            events=events,
        )

    async def events(self) -> Response:
        """The latest events, optionally about one deployment and/or one node."""
        deployment_id = _filter_arg("deployment", "deployment_id")
        node_id = _filter_arg("node", "node_id")
        events = await self.control.list_events(
            deployment_id=deployment_id, node_id=node_id, limit=EVENTS_PAGE
        )
        return await render_page(
            "events.html",
            section="events",
            events=events,
            limit=EVENTS_PAGE,
            deployment_id=deployment_id or "",
            node_id=node_id or "",
            deployments={d["id"]: d for d in await self.control.list_deployments()},
            nodes={n["id"]: n for n in await self.control.list_nodes()},
        )

    def stream(self) -> Response:
        """The live-update stream, or 503 when ``max_streams`` are already open."""
        slot = None if self.closing.is_set() else self.streams.acquire()
        if slot is None:
            return Response(
                "too many live dashboard streams, or the server is stopping; try again later\n",
                status=503,
                mimetype="text/plain",
                headers={"Retry-After": "30"},
            )
        body = summary_events(
            self.watch,
            slot,
            self.closing,
            poll_interval=self.poll_interval,
            heartbeat_interval=self.heartbeat_interval,
        )
        response = Response(
            body,
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # an event stream has no end; the client decides when
        return response
