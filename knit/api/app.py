"""The REST API: Quart routes that validate a request, call the control plane, answer JSON.

Layer: api. Imports quart, pydantic, knit.domain and the ``ControlPlane`` port; never actors
or the store. Errors become JSON bodies: ``{"error": "...", "errors": [{"field", "message"}]}``
with 400 (malformed or too deeply nested JSON), 401 (no valid token), 403 (a role too
weak), 404 (unknown id or path), 409 (conflict), 413 (a body over 1 MiB), 415 (a write
that is not JSON) or 422 (invalid input).

Every request passes :class:`knit.api.gate.Gate` first (tokens, roles, body hygiene); the
per-entity reads (``GET /nodes/<id>``, ``/deployments/<id>``, ``/events``) are then answered
by :class:`knit.api.reads.ReadRoutes` before Quart sees the request (:class:`KnitApp`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pydantic
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from knit.api import reads
from knit.api.gate import MAX_BODY_BYTES, Gate
from knit.api.metrics import ApiMetrics
from knit.api.openapi import openapi_document
from knit.api.ports import ControlPlane, LogSource
from knit.api.sessions import Sessions
from knit.dashboard import create_dashboard
from knit.domain.auth import bearer_token
from knit.domain.join import BusCredentialSpec, JoinRequest
from knit.domain.lifecycle import RollbackSpec, ScaleSpec
from knit.domain.logs import parse_log_query
from knit.domain.specs import (
    DeploymentSpec,
    NetworkSpec,
    RegistryCredentialsSpec,
)
from knit.domain.tokens import JoinTokenSpec, TokenSpec
from knit.domain.validation import validate_model
from knit.errors import Conflict, Invalid, KnitError, NotFound, Unauthorized, ValidationError

log = logging.getLogger(__name__)

M = TypeVar("M", bound=pydantic.BaseModel)


class BadRequest(KnitError):
    """The body is not JSON, or not a JSON object."""


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response with ``status``."""
    return Response(json.dumps(data), status=status, mimetype="application/json")


def error_response(
    status: int, message: str, errors: list[dict[str, str]] | None = None
) -> Response:
    """The one error body shape of the API."""
    return json_response(reads.error_json(message, errors), status)


async def read_model(model: type[M], *, empty: bool = False) -> M:
    """Parse the request body as JSON and validate it into ``model``.

    Args:
        model: what the body must be.
        empty: an empty body stands for ``{}`` (every field has a default).

    Raises:
        BadRequest: the body is not a JSON object, or is nested too deeply to parse.
        Invalid: the object breaks the model's rules.
    """
    raw = await request.get_data(as_text=False)
    if empty and not raw.strip():
        raw = b"{}"
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return validate_model(model, data)
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


class KnitApp(Quart):
    """Quart behind the gate (:mod:`knit.api.gate`), with the per-entity reads answered
    before its request machinery (see :mod:`knit.api.reads`)."""

    gate: Gate | None = None
    reads: reads.ReadRoutes | None = None
    metrics: ApiMetrics | None = None

    async def asgi_app(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Serve one ASGI connection: refused at the gate, a hot read here, or Quart."""
        if scope["type"] == "websocket":
            # No route speaks WebSocket: refuse the handshake before anything reads it.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        if scope["type"] != "http":
            await super().asgi_app(scope, receive, send)
            return
        if self.gate is None:
            raise RuntimeError("KnitApp has no gate: build it with create_app")
        if self.metrics is None:
            await self._serve_http(scope, receive, send, self.gate)
            return
        send, done = self.metrics.wrap(scope, send)
        try:
            await self._serve_http(scope, receive, send, self.gate)
        finally:
            done()

    async def _serve_http(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable, gate: Gate
    ) -> None:
        refusal = gate.check(scope)
        if refusal is not None:
            await refusal.send(send)
            return
        if self.reads is not None and await self.reads.answer(scope, send):
            return
        await super().asgi_app(scope, receive, send)


def create_app(
    control: ControlPlane,
    *,
    sessions: Sessions | None = None,
    logs: LogSource | None = None,
    registry: CollectorRegistry | None = None,
) -> KnitApp:
    """Build the Quart application serving Knit's REST API on top of ``control``.

    Args:
        control: the control plane.
        sessions: the dashboard's session cookies (default: a fresh random signing key).
        logs: where the logs routes get their streams (None: they answer 503).
        registry: the Prometheus metrics ``GET /metrics`` serves, to which the API adds its
            own (default: a fresh registry with the API's metrics only).
    """
    app = KnitApp("knit")
    registry = registry if registry is not None else CollectorRegistry()
    app.metrics = ApiMetrics(registry, app.url_map)
    sessions = sessions if sessions is not None else Sessions()
    app.gate = Gate(control, sessions)
    app.reads = reads.ReadRoutes(control)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    @app.errorhandler(BadRequest)
    async def on_bad_request(exc: BadRequest) -> Response:
        return error_response(400, str(exc))

    @app.errorhandler(Invalid)
    async def on_invalid(exc: Invalid) -> Response:
        return error_response(422, "invalid input", exc.errors)

    @app.errorhandler(ValidationError)
    async def on_validation(exc: ValidationError) -> Response:
        return error_response(422, "invalid input", [{"field": exc.field, "message": exc.message}])

    @app.errorhandler(Unauthorized)
    async def on_unauthorized(exc: Unauthorized) -> Response:
        response = error_response(401, str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.errorhandler(NotFound)
    async def on_not_found(exc: NotFound) -> Response:
        return error_response(404, str(exc))

    @app.errorhandler(Conflict)
    async def on_conflict(exc: Conflict) -> Response:
        return error_response(409, str(exc))

    @app.errorhandler(HTTPException)
    async def on_http(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(KnitError)
    async def on_knit_error(exc: KnitError) -> Response:
        log.warning("request failed: %s", type(exc).__name__)
        return error_response(503, str(exc))

    app.register_blueprint(create_dashboard(control, sessions=sessions, logs=logs))

    def route(rule: str, methods: list[str]) -> Callable[[Callable[..., Awaitable[Response]]], Any]:
        def register(view: Callable[..., Awaitable[Response]]) -> Any:
            return app.route(rule, methods=methods)(view)

        return register

    @route("/healthz", ["GET"])
    async def healthz() -> Response:
        return json_response({"ok": True})

    @route("/status", ["GET"])
    async def status() -> Response:
        return json_response(control.status())

    @route("/servers", ["GET"])
    async def servers() -> Response:
        return json_response(await control.list_servers())

    @route("/metrics", ["GET"])
    async def metrics() -> Response:
        # Needs a read token, like every API read (knit.domain.auth.required_access).
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @route("/openapi.json", ["GET"])
    async def openapi() -> Response:
        return json_response(openapi_document())

    # nodes
    @route("/nodes", ["GET"])
    async def list_nodes() -> Response:
        return json_response(await control.list_nodes())

    @route("/mesh", ["GET"])
    async def mesh_members() -> Response:
        return json_response(await control.mesh_members())

    @route("/nodes/<node_id>", ["GET"])
    async def get_node(node_id: str) -> Response:
        return json_response(await reads.get_node(control, node_id))

    @route("/nodes/<node_id>", ["DELETE"])
    async def remove_node(node_id: str) -> Response:
        return json_response(await control.remove_node(node_id))

    @route("/bus-credentials", ["POST"])
    async def bus_credentials() -> Response:
        spec = await read_model(BusCredentialSpec)
        host = urlsplit(f"//{request.host}").hostname
        return json_response(await control.issue_bus_credential(spec, host), 201)

    @route("/join", ["POST"])
    async def join_cluster() -> Response:
        # The body first: a malformed request does not spend a use of the token.
        spec = await read_model(JoinRequest)
        secret = bearer_token(request.headers.get("Authorization"))
        if secret is None:
            raise Unauthorized("a join token is required: Authorization: Bearer <join token>")
        host = urlsplit(f"//{request.host}").hostname
        return json_response(await control.join_node(secret, spec, host), 201)

    @route("/nodes/<node_id>/drain", ["POST"])
    async def drain_node(node_id: str) -> Response:
        return json_response(await control.set_node_eligible(node_id, False))

    @route("/nodes/<node_id>/eligible", ["POST"])
    async def eligible_node(node_id: str) -> Response:
        return json_response(await control.set_node_eligible(node_id, True))

    # registries
    @route("/registries", ["POST"])
    async def create_registry() -> Response:
        spec = await read_model(RegistryCredentialsSpec)
        return json_response(await control.create_registry(spec), 201)

    @route("/registries", ["GET"])
    async def list_registries() -> Response:
        return json_response(await control.list_registries())

    @route("/registries/<registry_id>", ["DELETE"])
    async def delete_registry(registry_id: str) -> Response:
        await control.delete_registry(registry_id)
        return json_response({"id": registry_id, "deleted": True})

    # networks
    @route("/networks", ["POST"])
    async def create_network() -> Response:
        spec = await read_model(NetworkSpec)
        return json_response(await control.create_network(spec), 201)

    @route("/networks", ["GET"])
    async def list_networks() -> Response:
        return json_response(await control.list_networks())

    @route("/networks/<network_id>", ["DELETE"])
    async def delete_network(network_id: str) -> Response:
        await control.delete_network(network_id)
        return json_response({"id": network_id, "deleted": True})

    # deployments
    @route("/deployments", ["POST"])
    async def create_deployment() -> Response:
        spec = await read_model(DeploymentSpec)
        return json_response(await control.create_deployment(spec), 201)

    @route("/deployments", ["GET"])
    async def list_deployments() -> Response:
        return json_response(await control.list_deployments())

    @route("/deployments/<deployment_id>", ["GET"])
    async def get_deployment(deployment_id: str) -> Response:
        return json_response(await reads.get_deployment(control, deployment_id))

    @route("/deployments/<deployment_id>", ["DELETE"])
    async def delete_deployment(deployment_id: str) -> Response:
        return json_response(await control.delete_deployment(deployment_id))

    @route("/deployments/<deployment_id>", ["PUT"])
    async def update_deployment(deployment_id: str) -> Response:
        spec = await read_model(DeploymentSpec)
        return json_response(await control.update_deployment(deployment_id, spec))

    @route("/deployments/<deployment_id>/scale", ["POST"])
    async def scale_deployment(deployment_id: str) -> Response:
        scale = await read_model(ScaleSpec)
        return json_response(await control.scale_deployment(deployment_id, scale.replicas))

    @route("/deployments/<deployment_id>/rollback", ["POST"])
    async def rollback_deployment(deployment_id: str) -> Response:
        rollback = await read_model(RollbackSpec, empty=True)
        return json_response(await control.rollback_deployment(deployment_id, rollback.version))

    @route("/deployments/<deployment_id>/versions", ["GET"])
    async def deployment_versions(deployment_id: str) -> Response:
        return json_response(await control.deployment_versions(deployment_id))

    # instances and events
    @route("/instances", ["GET"])
    async def list_instances() -> Response:
        return json_response(await control.list_instances())

    async def logs_response(**where: str | None) -> Response:
        query, index = parse_log_query({key: request.args[key] for key in request.args})
        if logs is None:
            return error_response(503, "this server does not stream logs")
        if where.get("instance_id") is not None and index is not None:
            raise Invalid([{"field": "instance", "message": "only for a deployment's logs"}])
        body = await logs.open_logs(query, index=index, **where)
        response = Response(
            body,
            mimetype="text/plain",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # a followed stream ends when the client leaves
        return response

    @route("/deployments/<deployment_id>/logs", ["GET"])
    async def deployment_logs(deployment_id: str) -> Response:
        return await logs_response(deployment_id=deployment_id)

    @route("/instances/<instance_id>/logs", ["GET"])
    async def instance_logs(instance_id: str) -> Response:
        return await logs_response(instance_id=instance_id)

    @route("/events", ["GET"])
    async def list_events() -> Response:
        query = {key: request.args[key] for key in request.args}
        return json_response(await reads.list_events(control, query))

    # API tokens and join tokens (admin: see knit.domain.auth.required_access)
    @route("/tokens", ["POST"])
    async def create_token() -> Response:
        spec = await read_model(TokenSpec)
        return json_response(await control.create_token(spec), 201)

    @route("/tokens", ["GET"])
    async def list_tokens() -> Response:
        return json_response(await control.list_tokens())

    @route("/tokens/<token_id>", ["DELETE"])
    async def delete_token(token_id: str) -> Response:
        await control.delete_token(token_id)
        return json_response({"id": token_id, "deleted": True})

    @route("/join-tokens", ["POST"])
    async def create_join_token() -> Response:
        spec = await read_model(JoinTokenSpec, empty=True)
        return json_response(await control.create_join_token(spec), 201)

    @route("/join-tokens", ["GET"])
    async def list_join_tokens() -> Response:
        return json_response(await control.list_join_tokens())

    @route("/join-tokens/<token_id>", ["DELETE"])
    async def delete_join_token(token_id: str) -> Response:
        return json_response(await control.delete_join_token(token_id))

    return app
