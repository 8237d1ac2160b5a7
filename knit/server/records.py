"""The server actors' in-memory records, and their JSON form for the API.

Layer: server. Plain mutable dataclasses (an actor owns each one; nobody shares them),
converted to and from the store's rows by ``knit.server.repo``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from knit.store.records import DeploymentRecord

if TYPE_CHECKING:
    from knit.server.tasks import TaskRun


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC string (``None`` stays ``None``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@dataclass
class NodeState:
    """One node, as its NodeActor holds it."""

    id: str
    hostname: str
    registered_at: float
    status: str = "healthy"
    eligible: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    cpus: int = 0
    memory_bytes: int = 0
    reserved_cpus: float = 0.0  # what its instances reserve (the Scheduler's, in memory)
    reserved_memory_bytes: int = 0
    docker_version: str = ""
    agent_version: str = ""
    public_key: str = ""
    last_heartbeat: float | None = None
    address: str | None = None
    allow_host_network: bool = False  # from its heartbeats, in memory only
    mesh_member: bool = False  # its heartbeats carry a mesh endpoint (in memory only)

    def to_json(self) -> dict[str, Any]:
        """The API's view (the public key is not secret, but not needed either)."""
        return {
            "id": self.id,
            "hostname": self.hostname,
            "status": self.status,
            "eligible": self.eligible,
            "last_heartbeat": iso(self.last_heartbeat),
            "labels": dict(self.labels),
            "cpus": self.cpus,
            "memory_bytes": self.memory_bytes,
            "reserved_cpus": round(self.reserved_cpus, 6),
            "reserved_memory_bytes": self.reserved_memory_bytes,
            # (negative if its capacity shrank below what its instances reserve)
            "free_cpus": round(self.cpus - self.reserved_cpus, 6),
            "free_memory_bytes": self.memory_bytes - self.reserved_memory_bytes,
            "docker_version": self.docker_version,
            "agent_version": self.agent_version,
            "address": self.address,
            "registered_at": iso(self.registered_at),
            "allow_host_network": self.allow_host_network,
        }


@dataclass(slots=True)
class InstanceState:
    """One container instance, as its DeploymentActor holds it.

    ``avoid`` (nodes that never accepted its task), ``stopped_at``, ``unknown_since``,
    ``running_since`` (the server's clock when it learned the instance runs: for
    ``min_healthy_time``), ``ever_healthy``, ``result_at`` (when, on its node's clock, the
    agent reported the last task's result: reports taken before that are stale) and ``cpu``
    and ``memory_bytes`` (what it reserves on its node, given back when it leaves) live in
    memory only; ``version``, ``health`` and ``restarts`` are stored.
    """

    id: str
    deployment_id: str
    index: int
    status: str
    created_at: float
    node_id: str | None = None
    container_id: str | None = None
    error: str | None = None
    exit_code: int | None = None
    desired: bool = True
    updated_at: float = 0.0
    avoid: frozenset[str] = frozenset()  # (immutable: nothing for the collector per instance)
    restarts: int = 0
    stopped_at: float = 0.0
    unknown_since: float = 0.0
    result_at: float = 0.0
    version: int = 1
    health: str = "none"
    running_since: float = 0.0
    ever_healthy: bool = False
    cpu: float = 0.0  # reserved on its node (in memory: rebuilt from the spec at a start)
    memory_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        """The API's view: ``id`` is Docker's container id (spec 4), ``instance_id`` Knit's."""
        return {
            "id": self.container_id,
            "instance_id": self.id,
            "container_id": self.container_id,
            "deployment_id": self.deployment_id,
            "node_id": self.node_id,
            "index": self.index,
            "status": self.status,
            "error": self.error,
            "exit_code": self.exit_code,
            "desired": self.desired,
            "created_at": iso(self.created_at),
            "version": self.version,
            "health": self.health,
            "restarts": self.restarts,
        }


@dataclass(slots=True)
class Inflight:
    """A task a DeploymentActor waits for."""

    run: TaskRun
    task_id: str
    kind: str


@dataclass
class DeploymentState:
    """What a DeploymentActor holds in memory (a cache of the store)."""

    record: DeploymentRecord
    instances: dict[str, InstanceState] = field(default_factory=dict)
    tasks: dict[str, Inflight] = field(default_factory=dict)  # by instance id
    host_network: bool | None = None  # on a host network (None: not looked up yet)
