"""A ControlPlane over plain lists, for dashboard tests that need no cluster (and big ones)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from knit.api.sessions import COOKIE_NAME, Sessions
from knit.domain.auth import Principal, Role
from knit.domain.join import BusCredentialSpec, JoinRequest
from knit.errors import NotFound

JSONDict = dict[str, Any]
ISO = "2024-05-01T12:00:00Z"
ADMIN_TOKEN = "knit_fake-admin-token"
READ_TOKEN = "knit_fake-read-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
"""Headers that let a test client in as admin."""
ORIGIN = {"Origin": "http://localhost"}
"""The Origin of a page of Quart's test client's server (``http://localhost``)."""


SESSIONS = Sessions(b"fake session key, 32 bytes long!")
"""The session keeper tests hand to ``create_app`` and ``Dashboard``, so that
:data:`SIGNED_IN` lets a test client in without signing in."""


def session_headers(
    sessions: Sessions = SESSIONS, principal: Principal | None = None
) -> dict[str, str]:
    """A ``Cookie`` header of a session of ``principal`` (the fake admin by default)."""
    value, _ = sessions.issue(principal or fake_tokens()[ADMIN_TOKEN], time.time())
    return {"Cookie": f"{COOKIE_NAME}={value}"}


def fake_tokens() -> dict[str, Principal]:
    return {
        ADMIN_TOKEN: Principal("t-admin", "admin", Role.ADMIN),
        READ_TOKEN: Principal("t-read", "viewer", Role.READ),
    }


@dataclass
class FakeControl:
    """Reads answer from the lists; ``reads`` counts list calls; ``fail`` raises instead."""

    nodes: list[JSONDict] = field(default_factory=list)
    deployments: list[JSONDict] = field(default_factory=list)
    instances: list[JSONDict] = field(default_factory=list)
    events: list[JSONDict] = field(default_factory=list)
    versions: dict[str, list[JSONDict]] = field(default_factory=dict)
    """Each deployment's versions, newest first (by deployment id)."""
    reads: int = 0
    fail: Exception | None = None
    tokens: dict[str, Principal] = field(default_factory=fake_tokens)

    def _check(self) -> None:
        self.reads += 1
        if self.fail is not None:
            raise self.fail

    async def list_nodes(self) -> list[JSONDict]:
        self._check()
        return [dict(n) for n in self.nodes]

    async def get_node(self, node_id: str) -> JSONDict:
        for n in self.nodes:
            if n["id"] == node_id:
                return dict(n)
        raise NotFound("node", node_id)

    async def mesh_members(self) -> list[JSONDict]:
        raise NotFound("mesh", "no mesh")

    async def list_deployments(self) -> list[JSONDict]:
        self._check()
        return [dict(d) for d in self.deployments]

    async def get_deployment(self, deployment_id: str) -> JSONDict:
        for d in self.deployments:
            if d["id"] == deployment_id:
                mine = [i for i in self.instances if i["deployment_id"] == deployment_id]
                return {**d, "instances": mine}
        raise NotFound("deployment", deployment_id)

    async def deployment_versions(self, deployment_id: str) -> list[JSONDict]:
        self._check()
        if not any(d["id"] == deployment_id for d in self.deployments):
            raise NotFound("deployment", deployment_id)
        return [dict(v) for v in self.versions.get(deployment_id, [])]

    async def list_instances(self) -> list[JSONDict]:
        self._check()
        return [dict(i) for i in self.instances]

    async def list_events(
        self, *, deployment_id: str | None, node_id: str | None, limit: int
    ) -> list[JSONDict]:
        self._check()
        found = [
            e
            for e in self.events
            if (deployment_id is None or e.get("deployment_id") == deployment_id)
            and (node_id is None or e.get("node_id") == node_id)
        ]
        return found[:limit]

    def status(self) -> JSONDict:
        return {}

    async def list_servers(self) -> list[JSONDict]:
        return []

    def authenticate(self, secret: str) -> Principal | None:
        return self.tokens.get(secret)

    def token_principal(self, token_id: str) -> Principal | None:
        return next((p for p in self.tokens.values() if p.token_id == token_id), None)

    # Writes: tests/dashboard/test_actions.py (ActingControl) fakes those the actions call.
    async def set_node_eligible(self, node_id: str, eligible: bool) -> JSONDict:
        raise NotImplementedError

    async def create_registry(self, spec: Any) -> JSONDict:
        raise NotImplementedError

    async def list_registries(self) -> list[JSONDict]:
        return []

    async def delete_registry(self, registry_id: str) -> None:
        raise NotImplementedError

    async def create_network(self, spec: Any) -> JSONDict:
        raise NotImplementedError

    async def list_networks(self) -> list[JSONDict]:
        return []

    async def delete_network(self, network_id: str) -> None:
        raise NotImplementedError

    async def create_deployment(self, spec: Any) -> JSONDict:
        raise NotImplementedError

    async def delete_deployment(self, deployment_id: str) -> JSONDict:
        raise NotImplementedError

    async def update_deployment(self, deployment_id: str, spec: Any) -> JSONDict:
        raise NotImplementedError

    async def scale_deployment(self, deployment_id: str, replicas: int) -> JSONDict:
        raise NotImplementedError

    async def rollback_deployment(self, deployment_id: str, version: int | None) -> JSONDict:
        raise NotImplementedError

    async def create_token(self, spec: Any) -> JSONDict:
        raise NotImplementedError

    async def list_tokens(self) -> list[JSONDict]:
        return []

    async def delete_token(self, token_id: str) -> None:
        raise NotImplementedError

    async def create_join_token(self, spec: Any) -> JSONDict:
        raise NotImplementedError

    async def list_join_tokens(self) -> list[JSONDict]:
        return []

    async def delete_join_token(self, token_id: str) -> JSONDict:
        raise NotImplementedError

    async def consume_join_token(self, secret: str) -> str:
        raise NotImplementedError

    async def join_node(
        self, join_token: str, request: JoinRequest, api_host: str | None
    ) -> JSONDict:
        raise NotImplementedError

    async def issue_bus_credential(self, spec: BusCredentialSpec, api_host: str | None) -> JSONDict:
        raise NotImplementedError

    async def remove_node(self, node_id: str) -> JSONDict:
        raise NotImplementedError


async def sign_in(client: Any, token: str = ADMIN_TOKEN) -> None:
    """Sign a Quart test client in to the dashboard (it keeps the session cookie)."""
    response = await client.post("/ui/sign-in", form={"token": token}, headers=ORIGIN)
    assert response.status_code == 303, await response.get_data(as_text=True)


def node(index: int, status: str = "healthy", **extra: Any) -> JSONDict:
    """A node as ``GET /nodes`` shows it."""
    return {
        "id": uuid.uuid4().hex,
        "hostname": f"host-{index:05d}",
        "status": status,
        "eligible": True,
        "last_heartbeat": ISO,
        "labels": {"zone": f"z{index % 3}"},
        "cpus": 8,
        "memory_bytes": 16 << 30,
        "docker_version": "27.0",
        "agent_version": "0.1.0",
        "address": None,
        "registered_at": ISO,
        **extra,
    }


def deployment(name: str, replicas: int, **extra: Any) -> JSONDict:
    """A deployment as ``GET /deployments`` shows it."""
    return {
        "id": uuid.uuid4().hex,
        "name": name,
        "image": "registry.example:5000/app:1",
        "registry_credentials_id": None,
        "network_attachments": [],
        "templates": [],
        "env": {},
        "command": None,
        "replicas": replicas,
        "ports": [],
        "node_selector": {},
        "lost_after": 0.0,
        "restart_policy": {"mode": "always", "backoff": 1.0, "max_restarts": None},
        "update": {
            "max_parallel": 1,
            "order": "stop_first",
            "min_healthy_time": 10.0,
            "healthy_deadline": 300.0,
            "on_failure": "pause",
        },
        "health_check": None,
        "version": 1,
        "rollout": None,
        "status": "active",
        "pending_reason": None,
        "created_at": ISO,
        "updated_at": ISO,
        **extra,
    }


def instance(
    deployment_id: str, node_id: str, index: int, status: str = "running", **extra: Any
) -> JSONDict:
    """An instance as ``GET /instances`` shows it."""
    container = uuid.uuid4().hex * 2
    return {
        "id": container,
        "instance_id": uuid.uuid4().hex,
        "container_id": container,
        "deployment_id": deployment_id,
        "node_id": node_id,
        "index": index,
        "status": status,
        "error": None,
        "exit_code": None,
        "desired": True,
        "created_at": ISO,
        "version": 1,
        "health": "none",
        "restarts": 0,
        **extra,
    }


def version(number: int, spec: JSONDict, stable: bool = True) -> JSONDict:
    """A version as ``GET /deployments/{id}/versions`` lists it."""
    return {"version": number, "spec": spec, "created_at": ISO, "stable": stable}


def big_cluster(nodes: int = 1000, deployments: int = 100, replicas: int = 100) -> FakeControl:
    """``nodes`` nodes and ``deployments * replicas`` instances spread over them."""
    control = FakeControl()
    control.nodes = [node(i, "unhealthy" if i % 97 == 0 else "healthy") for i in range(nodes)]
    for d in range(deployments):
        dep = deployment(f"app-{d:03d}", replicas)
        control.deployments.append(dep)
        for r in range(replicas):
            host = control.nodes[(d * replicas + r) % nodes]
            control.instances.append(instance(dep["id"], host["id"], r))
    return control


SIGNED_IN = session_headers()
"""Headers of a dashboard request signed in as the fake admin (with :data:`SESSIONS`)."""
