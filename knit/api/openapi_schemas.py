"""The schemas of the REST API's answers (what the routes return), for the OpenAPI document.

Layer: api. Pure: imports knit.domain only. ``knit.api.openapi`` puts them in the
document's components; the request bodies' schemas come from the pydantic models.
"""

from __future__ import annotations

from typing import Any

from knit.domain.auth import Role
from knit.domain.specs import Health, RolloutState

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
        "cpus": {"type": "number"},
        "memory_bytes": {"type": "integer"},
        "reserved_cpus": {"type": "number", "description": "reserved by its instances"},
        "reserved_memory_bytes": {"type": "integer", "description": "reserved by its instances"},
        "free_cpus": {"type": "number", "description": "cpus - reserved_cpus"},
        "free_memory_bytes": {"type": "integer", "description": "memory - reserved"},
        "docker_version": _NULL_STR,
        "allow_host_network": {"type": "boolean"},
        "address": {"type": ["string", "null"], "description": "the node's mesh address"},
    },
    "required": ["id", "hostname", "status", "last_heartbeat"],
}
MESH_MEMBER: Schema = {
    "type": "object",
    "properties": {
        "node_id": {"type": ["string", "null"], "description": "null: the server"},
        "address": _STR,
        "public_key": {"type": "string", "description": "WireGuard public key"},
        "endpoint": _NULL_STR,
        "latest_handshake": {
            "type": ["string", "null"],
            "description": "with the server's interface",
        },
        "transfer": {
            "type": "object",
            "properties": {"rx_bytes": {"type": "integer"}, "tx_bytes": {"type": "integer"}},
        },
    },
    "required": ["node_id", "address", "public_key", "endpoint"],
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
        "version": {"type": "integer", "description": "the deployment version it runs"},
        "health": {"type": "string", "enum": [h.value for h in Health]},
        "restarts": {"type": "integer", "description": "restarts by Knit"},
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
                "version": {"type": "integer", "description": "the version of the spec shown"},
                "rollout": {
                    "oneOf": [{"$ref": "#/components/schemas/Rollout"}, {"type": "null"}],
                    "description": "the current or last rollout (null before the first)",
                },
                "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}},
            },
            "required": ["id", "version"],
        },
    ]
}
ROLLOUT: Schema = {
    "type": "object",
    "description": "written by the deployment's actor",
    "properties": {
        "version": {"type": "integer", "description": "the version rolled out"},
        "state": {"type": "string", "enum": [s.value for s in RolloutState]},
        "desired": {"type": "integer"},
        "updated": {"type": "integer"},
        "healthy": {"type": "integer"},
        "message": {"type": "string", "description": "what happened last (why it paused)"},
        "started_at": {"type": "number", "description": "seconds since the epoch"},
        "failed_version": {
            "type": ["integer", "null"],
            "description": "after an automatic rollback: the version that failed",
        },
    },
}
DEPLOYMENT_VERSION: Schema = {
    "type": "object",
    "properties": {
        "version": {"type": "integer"},
        "spec": {
            "type": "object",
            "description": "as submitted, every default filled; secret_env: the names only",
        },
        "created_at": _STR,
        "stable": {"type": "boolean", "description": "its rollout completed"},
    },
    "required": ["version", "spec", "created_at", "stable"],
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
SERVER: Schema = {
    "type": "object",
    "properties": {
        "id": _STR,
        "role": {"type": "string", "enum": ["leader", "follower"]},
        "status": {"type": "string", "enum": ["alive", "gone"]},
        "api_url": _NULL_STR,
        "version": _STR,
        "started_at": _STR,
        "last_seen": _STR,
        "this": {"type": "boolean"},
    },
}
TOKEN: Schema = {
    "type": "object",
    "properties": {
        "id": _STR,
        "name": _STR,
        "role": {"type": "string", "enum": [r.value for r in Role]},
        "created_at": _STR,
        "expires_at": _NULL_STR,
        "expired": {"type": "boolean"},
    },
    "required": ["id", "name", "role", "expires_at"],
}
NEW_TOKEN: Schema = {
    "allOf": [
        {"$ref": "#/components/schemas/Token"},
        {
            "type": "object",
            "properties": {"token": {"type": "string", "description": "shown only here"}},
            "required": ["token"],
        },
    ]
}
JOIN_TOKEN: Schema = {
    "type": "object",
    "properties": {
        "id": _STR,
        "uses": {"type": "integer"},
        "used": {"type": "integer"},
        "created_at": _STR,
        "expires_at": _STR,
        "revoked": {"type": "boolean"},
    },
    "required": ["id", "uses", "expires_at"],
}
NEW_JOIN_TOKEN: Schema = {
    "type": "object",
    "properties": {
        "id": _STR,
        "token": {"type": "string", "description": "shown only here"},
        "expires_at": _STR,
        "uses": {"type": "integer"},
    },
    "required": ["id", "token", "expires_at", "uses"],
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


JOIN_GRANT: Schema = {
    "type": "object",
    "description": "What a joining node receives; no secret (its keys never leave it)",
    "properties": {
        "node_id": _STR,
        "nats_urls": {"type": "array", "items": _STR},
        "nats_jwt": {"type": ["string", "null"], "description": "its NATS user JWT"},
        "server_key": {**_STR, "description": "the server's X25519 public key (base64)"},
        "task_key": {**_STR, "description": "the server's Ed25519 task key (base64)"},
        "insecure_bus": {"type": "boolean"},
    },
    "required": ["node_id", "nats_urls", "nats_jwt", "server_key", "task_key"],
}


BUS_CREDENTIAL: Schema = {
    "type": "object",
    "properties": {
        "name": _STR,
        "nats_urls": {"type": "array", "items": _STR},
        "nats_jwt": {**_STR, "description": "its user JWT; the tool signs with its own key"},
        "expires_at": _STR,
    },
    "required": ["name", "nats_urls", "nats_jwt", "expires_at"],
}


__all__ = [
    "BUS_CREDENTIAL",
    "DEPLOYMENT",
    "DEPLOYMENT_VERSION",
    "ERROR",
    "EVENT",
    "INSTANCE",
    "JOIN_GRANT",
    "JOIN_TOKEN",
    "MESH_MEMBER",
    "NETWORK",
    "NEW_JOIN_TOKEN",
    "NEW_TOKEN",
    "NODE",
    "REGISTRY",
    "ROLLOUT",
    "SERVER",
    "TOKEN",
    "Schema",
]
