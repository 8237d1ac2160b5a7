"""What every actor of the agent shares: identity, adapters and settings.

Layer: agent. Adapters (bus, runtime) are passed in, never imported by the actors, so the
simulation harness can give the real agent code a simulated runtime and a shared bus.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from knit.agent.files import TemplateFiles
from knit.agent.metrics import AgentMetrics
from knit.agent.trust import AgentTrust
from knit.bus import Bus
from knit.runtime.base import ContainerRuntime
from knit.secrets import NodeKeyPair
from knit.wire.messages import DeployTask, InstanceReport, StopTask

if TYPE_CHECKING:
    from knit.agent.mesh import MeshNode

AGENT_VERSION = "0.1.0"

LABEL_DEPLOYMENT = "knit.deployment"
LABEL_NODE = "knit.node"
LABEL_INSTANCE = "knit.instance"
LABEL_INDEX = "knit.index"
LABEL_DEPLOYMENT_NAME = "knit.deployment-name"

CAUSED_BY: dict[str, frozenset[str]] = {
    "deploy": frozenset({"create", "start"}),
    "restart": frozenset({"kill", "die", "stop", "start"}),
    "stop": frozenset({"die", "destroy"}),
}
"""Container events a running task of each kind causes itself (its TaskStatus tells them);
``restart`` is a deploy task that restarts a running container (``DeployTask.restart``)."""

Refresh = Callable[[str, str | None, str | None, bool | None], Awaitable[InstanceReport | None]]
"""``AgentContext.refresh``: (instance id, container id, deployment id, has a health check)."""


@dataclass
class AgentContext:
    """The agent's identity and adapters.

    Attributes:
        node_id: this node's id (stable across restarts).
        hostname: the name reported to the server.
        labels: node labels (matched by deployments' ``node_selector``).
        bus: the NATS adapter.
        runtime: the container runtime (Docker, or the simulated one).
        keys: the node's X25519 key pair (credentials are sealed to it).
        files: where rendered templates go.
        heartbeat_interval: seconds between heartbeats.
        task_timeout: the longest a single task may run (pulls included).
        allow_host_network: whether deployments on ``host`` networks may run here
            (``knit agent --allow-host-network``); advertised in every heartbeat.
        on_change: called (without awaiting) when the report of this node's instances
            changed; the heartbeat then reports soon instead of at its next beat.
        refresh: brings the report of one instance up to date with what a task did to it
            (instance id; the container it started, or None once removed; the deployment
            id if known; whether the container has a health check, None: not known) and
            returns it (None: the instance has no container); a task awaits it before it
            reports its result.
        in_flight: instance id → the task of this agent running on it (the latest, if
            several). The container events such a task causes itself are reported by its own
            TaskStatus, so they do not call ``on_change`` (see :data:`CAUSED_BY`).
        trust: the keys this node proves its messages and checks its tasks with (None: an
            open bus, ``--insecure-bus``: nothing is proved or checked).
        mesh: this node as a member of the mesh, its interface up (None: not a member;
            ``knit agent --mesh-endpoint``).
    """

    node_id: str
    hostname: str
    labels: dict[str, str]
    bus: Bus
    runtime: ContainerRuntime
    keys: NodeKeyPair
    files: TemplateFiles
    heartbeat_interval: float = 5.0
    task_timeout: float = 600.0
    allow_host_network: bool = False
    data_dir: Path = field(default_factory=lambda: Path(".knit/agent"))
    on_change: Callable[[], None] | None = None
    refresh: Refresh | None = None
    in_flight: dict[str, DeployTask | StopTask] = field(default_factory=dict)
    trust: AgentTrust | None = None
    mesh: MeshNode | None = None
    metrics: AgentMetrics = field(default_factory=AgentMetrics)

    @property
    def mesh_address(self) -> str | None:
        """The node's mesh address (None: not a member)."""
        return self.mesh.address if self.mesh is not None else None

    async def publish(self, subject: str, payload: bytes) -> None:
        """Publish on the bus, proved to come from this node when it joined.

        Raises:
            BusError: as ``Bus.publish``.
        """
        trust = self.trust
        await self.bus.publish(subject, trust.prove(subject, payload) if trust else payload)

    def container_labels(
        self, deployment_id: str, instance_id: str, index: int, name: str
    ) -> dict[str, str]:
        """The labels Knit puts on every container it creates."""
        return {
            LABEL_DEPLOYMENT: deployment_id,
            LABEL_NODE: self.node_id,
            LABEL_INSTANCE: instance_id,
            LABEL_INDEX: str(index),
            LABEL_DEPLOYMENT_NAME: name,
        }
