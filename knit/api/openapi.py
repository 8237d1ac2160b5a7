"""The OpenAPI 3.1 document of the REST API, built from the pydantic request models.

Layer: api. Pure: imports pydantic and knit.domain only. ``GET /openapi.json`` serves it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from knit.domain.specs import DeploymentSpec, NetworkSpec, RegistryCredentialsSpec

Schema = dict[str, Any]

_STR = {"type": "string"}
_NULL_STR = {"type": ["string", "null"]}

NODE: Schema = {
    "type": "object",
    "properties": {
        "id": _STR,
        "hostname": _STR,
        "status": {"type": "string", "enum": ["healthy", "unhealthy"]},
        "eligible": {"type": "boolean"},
        "last_heartbeat": _NULL_STR,
        "labels": {"type": "object", "additionalProperties": _STR},
        "cpus": {"type": "integer"},
        "memory_bytes": {"type": "integer"},
        "docker_version": _NULL_STR,
        "allow_host_network": {"type": "boolean"},
    },
    "required": ["id", "hostname", "status", "last_heartbeat"],
}
INSTANCE: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"], "description": "Docker's container id"},
        "instance_id": _STR,
        "node_id": _NULL_STR,
        "deployment_id": _STR,
        "status": {
            "type": "string",
            "enum": ["pending", "running", "stopped", "error", "lost", "unknown"],
        },
        "error": _NULL_STR,
    },
    "required": ["id", "node_id", "deployment_id", "status"],
}
REGISTRY: Schema = {
    "type": "object",
    "properties": {"id": _STR, "url": _STR, "username": _STR},
    "required": ["id", "url", "username"],
}
NETWORK: Schema = {
    "type": "object",
    "properties": {"id": _STR, "name": _STR, "driver": _STR, "subnet": _NULL_STR},
    "required": ["id", "name", "driver"],
}
DEPLOYMENT: Schema = {
    "allOf": [
        {"$ref": "#/components/schemas/DeploymentSpec"},
        {
            "type": "object",
            "properties": {
                "id": _STR,
                "status": _STR,
                "pending_reason": _NULL_STR,
                "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}},
            },
            "required": ["id"],
        },
    ]
}
EVENT: Schema = {
    "type": "object",
    "properties": {
        "id": _STR,
        "at": _STR,
        "kind": _STR,
        "message": _STR,
        "node_id": _NULL_STR,
        "deployment_id": _NULL_STR,
        "instance_id": _NULL_STR,
        "task_id": _NULL_STR,
    },
}
ERROR: Schema = {
    "type": "object",
    "properties": {
        "error": _STR,
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": _STR, "message": _STR},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["error"],
}


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
            {400: "malformed JSON", 404: "unknown id", 409: "conflict", 422: "invalid input"}[code],
        )
    op: Schema = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


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
    for model in (DeploymentSpec, NetworkSpec, RegistryCredentialsSpec):
        components[model.__name__] = _component(model, components)
    components.update(
        Node=NODE,
        Instance=INSTANCE,
        Registry=REGISTRY,
        Network=NETWORK,
        Deployment=DEPLOYMENT,
        Event=EVENT,
        Error=ERROR,
    )
    deleted = {"type": "object", "properties": {"id": _STR, "deleted": {"type": "boolean"}}}
    paths: Schema = {
        "/nodes": {"get": _op("List nodes", (200, _list("Node")))},
        "/nodes/{id}": {
            "get": _op("Get a node", (200, _ref("Node")), errors=(404,)),
            "parameters": _id_param("id"),
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
            "delete": _op(
                "Delete a deployment and its containers", (200, _ref("Deployment")), errors=(404,)
            ),
            "parameters": _id_param("id"),
        },
        "/instances": {"get": _op("List container instances", (200, _list("Instance")))},
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
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Knit", "version": "1", "description": "Knit's REST API"},
        "paths": paths,
        "components": {"schemas": components},
    }
