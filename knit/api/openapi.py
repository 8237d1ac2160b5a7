"""The OpenAPI 3.1 document of the REST API, built from the pydantic request models.

Layer: api. Pure: imports pydantic and knit.domain only. ``GET /openapi.json`` serves it.

Every operation but ``GET /healthz`` needs an API token (the ``bearer`` security scheme);
each says in ``x-knit-role`` the weakest role allowed (``knit.domain.auth``), and lists the
401 and 403 answers.
"""

from __future__ import annotations

from functools import cache

from pydantic import BaseModel

from knit.api.openapi_schemas import (
    _STR,
    BUS_CREDENTIAL,
    DEPLOYMENT,
    DEPLOYMENT_VERSION,
    ERROR,
    EVENT,
    INSTANCE,
    JOIN_GRANT,
    JOIN_TOKEN,
    MESH_MEMBER,
    NETWORK,
    NEW_JOIN_TOKEN,
    NEW_TOKEN,
    NODE,
    REGISTRY,
    ROLLOUT,
    SERVER,
    TOKEN,
    Schema,
)
from knit.domain.auth import required_access
from knit.domain.join import BusCredentialSpec, JoinRequest
from knit.domain.lifecycle import RollbackSpec, ScaleSpec
from knit.domain.specs import (
    DeploymentSpec,
    NetworkSpec,
    RegistryCredentialsSpec,
)
from knit.domain.tokens import JoinTokenSpec, TokenSpec


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str, ok: tuple[int, Schema], body: str | None = None, errors: tuple[int, ...] = ()
) -> Schema:
    responses: Schema = {str(ok[0]): _json(ok[1], "success")}
    for code in errors:
        responses[str(code)] = _json(
            _ref("Error"),
            {
                400: "malformed or too deeply nested JSON",
                404: "unknown id",
                409: "conflict",
                413: "a body over 1 MiB",
                415: "a body that is not application/json",
                422: "invalid input",
            }[code],
        )
    op: Schema = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
        for code in (413, 415):
            responses.setdefault(str(code), _json(_ref("Error"), "refused body"))
    return op


def _logs_op(summary: str, *, instance: bool = False) -> Schema:
    """A logs route: ``text/plain`` streamed, with the query of ``knit.domain.logs``."""
    op = _op(summary, (200, _STR), errors=(404, 422))
    op["responses"]["200"] = {
        "description": "one log line per line, streamed (docs/decisions/0020-log-streams.md)",
        "content": {"text/plain": {"schema": _STR}},
    }
    flag = {"type": "string", "enum": ["0", "1", "true", "false"]}
    op["parameters"] = [
        {"name": "follow", "in": "query", "schema": flag},
        {"name": "tail", "in": "query", "schema": _STR, "description": "N or all (100)"},
        {"name": "since", "in": "query", "schema": _STR, "description": "10m, Unix or RFC 3339"},
        {"name": "timestamps", "in": "query", "schema": flag},
    ]
    if instance:
        op["parameters"].append({"name": "instance", "in": "query", "schema": {"type": "integer"}})
    return op


def _optional_body(op: Schema) -> Schema:
    """``op`` with its request body optional (none stands for ``{}``)."""
    op["requestBody"]["required"] = False
    return op


def _secure(paths: Schema) -> None:
    """Mark every operation with the role it needs and its 401/403 answers."""
    for path, item in paths.items():
        concrete = path.replace("{id}", "x")
        for method, op in item.items():
            if method == "parameters":
                continue
            access = required_access(method.upper(), concrete)
            if access.role is None:
                op["security"] = []
                continue
            op["x-knit-role"] = access.role.value
            op["responses"]["401"] = _json(_ref("Error"), "no valid API token")
            op["responses"]["403"] = _json(_ref("Error"), "the token's role is too weak")


def _list(name: str) -> Schema:
    return {"type": "array", "items": _ref(name)}


def _id_param(name: str) -> list[Schema]:
    return [{"name": name, "in": "path", "required": True, "schema": _STR}]


def _component(model: type[BaseModel], components: Schema) -> Schema:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    return schema


@cache
def openapi_document() -> Schema:
    """The whole OpenAPI document (computed once)."""
    components: Schema = {}
    for model in (
        DeploymentSpec,
        NetworkSpec,
        RegistryCredentialsSpec,
        TokenSpec,
        JoinTokenSpec,
        JoinRequest,
        BusCredentialSpec,
        ScaleSpec,
        RollbackSpec,
    ):
        components[model.__name__] = _component(model, components)
    components.update(
        Node=NODE,
        MeshMember=MESH_MEMBER,
        Instance=INSTANCE,
        Registry=REGISTRY,
        Network=NETWORK,
        Deployment=DEPLOYMENT,
        Rollout=ROLLOUT,
        DeploymentVersion=DEPLOYMENT_VERSION,
        Event=EVENT,
        Server=SERVER,
        Token=TOKEN,
        NewToken=NEW_TOKEN,
        JoinToken=JOIN_TOKEN,
        NewJoinToken=NEW_JOIN_TOKEN,
        JoinGrant=JOIN_GRANT,
        BusCredential=BUS_CREDENTIAL,
        Error=ERROR,
    )
    deleted = {"type": "object", "properties": {"id": _STR, "deleted": {"type": "boolean"}}}
    paths: Schema = {
        "/nodes": {"get": _op("List nodes", (200, _list("Node")))},
        "/mesh": {
            "get": _op(
                "List the WireGuard mesh's members", (200, _list("MeshMember")), errors=(404,)
            )
        },
        "/nodes/{id}": {
            "get": _op("Get a node", (200, _ref("Node")), errors=(404,)),
            "delete": _op(
                "Remove a node: its credentials stop working at once, its instances move",
                (
                    200,
                    {"type": "object", "properties": {"id": _STR, "removed": {"type": "boolean"}}},
                ),
                errors=(404,),
            ),
            "parameters": _id_param("id"),
        },
        "/bus-credentials": {
            "post": _op(
                "NATS credentials for a tool on the embedded bus: only the subjects listed, "
                "until they expire (a day at most)",
                (201, _ref("BusCredential")),
                "BusCredentialSpec",
                (400, 409, 422),
            ),
        },
        "/join": {
            "post": _op(
                "Join the cluster as a node, with a join token as the bearer token",
                (201, _ref("JoinGrant")),
                "JoinRequest",
                (400, 409, 422),
            ),
        },
        "/nodes/{id}/drain": {
            "post": _op(
                "Drain a node: move its instances, place nothing new",
                (200, _ref("Node")),
                errors=(404,),
            ),
            "parameters": _id_param("id"),
        },
        "/nodes/{id}/eligible": {
            "post": _op("Make a drained node eligible again", (200, _ref("Node")), errors=(404,)),
            "parameters": _id_param("id"),
        },
        "/registries": {
            "get": _op(
                "List registry credentials (never with passwords)", (200, _list("Registry"))
            ),
            "post": _op(
                "Store registry credentials",
                (201, _ref("Registry")),
                "RegistryCredentialsSpec",
                (400, 422),
            ),
        },
        "/registries/{id}": {
            "delete": _op("Delete registry credentials", (200, deleted), errors=(404, 409)),
            "parameters": _id_param("id"),
        },
        "/networks": {
            "get": _op("List networks", (200, _list("Network"))),
            "post": _op(
                "Declare a network", (201, _ref("Network")), "NetworkSpec", (400, 409, 422)
            ),
        },
        "/networks/{id}": {
            "delete": _op("Delete a network", (200, deleted), errors=(404, 409)),
            "parameters": _id_param("id"),
        },
        "/deployments": {
            "get": _op("List deployments", (200, _list("Deployment"))),
            "post": _op(
                "Submit a deployment", (201, _ref("Deployment")), "DeploymentSpec", (400, 409, 422)
            ),
        },
        "/deployments/{id}": {
            "get": _op(
                "Get a deployment with its instances", (200, _ref("Deployment")), errors=(404,)
            ),
            "put": _op(
                "Change a deployment: a full spec of the same name. A changed spec is a new "
                "version, rolled out by its update policy; only replicas changed is a scale; "
                "the same spec changes nothing",
                (200, _ref("Deployment")),
                "DeploymentSpec",
                (400, 404, 409, 422),
            ),
            "delete": _op(
                "Delete a deployment and its containers", (200, _ref("Deployment")), errors=(404,)
            ),
            "parameters": _id_param("id"),
        },
        "/deployments/{id}/scale": {
            "post": _op(
                "Run this many instances of the current version (no new version)",
                (200, _ref("Deployment")),
                "ScaleSpec",
                (400, 404, 409, 422),
            ),
            "parameters": _id_param("id"),
        },
        "/deployments/{id}/rollback": {
            "post": _optional_body(
                _op(
                    "Go back to an earlier version's spec (no body: the newest stable one "
                    "before the current one), as a new version rolled out like any update",
                    (200, _ref("Deployment")),
                    "RollbackSpec",
                    (400, 404, 409, 422),
                )
            ),
            "parameters": _id_param("id"),
        },
        "/deployments/{id}/versions": {
            "get": _op(
                "A deployment's versions, newest first (never secret values)",
                (200, _list("DeploymentVersion")),
                errors=(404, 409),
            ),
            "parameters": _id_param("id"),
        },
        "/deployments/{id}/logs": {
            "get": _logs_op(
                "Stream the stdout and stderr of a deployment's instances, merged, each line "
                "prefixed with its instance's index ([0] ...)",
                instance=True,
            ),
            "parameters": _id_param("id"),
        },
        "/instances": {"get": _op("List container instances", (200, _list("Instance")))},
        "/instances/{id}/logs": {
            "get": _logs_op("Stream one instance's stdout and stderr ([index] ...)"),
            "parameters": _id_param("id"),
        },
        "/events": {
            "get": {
                **_op("List events, newest first", (200, _list("Event")), errors=(422,)),
                "parameters": [
                    {"name": "deployment_id", "in": "query", "schema": _STR},
                    {"name": "node_id", "in": "query", "schema": _STR},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                ],
            }
        },
        "/status": {
            "get": _op(
                "This server (id, role), the leader (id, since), counters and actors",
                (200, {"type": "object"}),
            )
        },
        "/servers": {
            "get": _op(
                "The servers of the database: id, role, status, api_url, version, started_at, "
                "last_seen",
                (200, _list("Server")),
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format; docs/operations.md lists them)",
                "responses": {
                    "200": {
                        "description": "success",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/healthz": {"get": _op("Liveness (no token needed)", (200, {"type": "object"}))},
        "/openapi.json": {"get": _op("This document", (200, {"type": "object"}))},
        "/tokens": {
            "get": _op("List API tokens (never their secrets)", (200, _list("Token"))),
            "post": _op(
                "Make an API token: its secret is in this answer only",
                (201, _ref("NewToken")),
                "TokenSpec",
                (400, 409, 422),
            ),
        },
        "/tokens/{id}": {
            "delete": _op("Revoke an API token at once", (200, deleted), errors=(404,)),
            "parameters": _id_param("id"),
        },
        "/join-tokens": {
            "get": _op("List join tokens (never their secrets)", (200, _list("JoinToken"))),
            "post": _op(
                "Make a join token (1 use, 1 hour by default): its secret is in this answer only",
                (201, _ref("NewJoinToken")),
                "JoinTokenSpec",
                (400, 422),
            ),
        },
        "/join-tokens/{id}": {
            "delete": _op("Revoke a join token", (200, _ref("JoinToken")), errors=(404,)),
            "parameters": _id_param("id"),
        },
    }
    _secure(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Knit", "version": "1", "description": "Knit's REST API"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token: `knit token create`, or the server's "
                    "first admin token in <data-dir>/admin.token",
                }
            },
        },
        "security": [{"bearer": []}],
    }
