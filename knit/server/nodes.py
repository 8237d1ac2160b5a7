"""NodeActor: one node's heartbeat deadline, health and eligibility.

Layer: server. Each heartbeat moves the node's deadline (an O(1) reset). When the deadline
passes, the node becomes ``unhealthy`` and the deployments are told; a heartbeat after that
makes it ``healthy`` again. After a server restart, every known node first gets
``node_ttl + restart_grace``, so nodes are not declared lost because the server was down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from actors import Actor, Deadline
from knit.domain.placement import NodeView
from knit.server.context import ServerContext
from knit.server.messages import (
    DeadlineMissed,
    ForwardReports,
    HeartbeatReceived,
    InstancesObserved,
    NodeDown,
    NodeDrained,
    NodeUp,
    SetEligible,
)
from knit.server.records import NodeState
from knit.server.scheduler import UpdateNode
from knit.wire import subjects
from knit.wire.messages import Heartbeat

log = logging.getLogger(__name__)

NodeMessage = HeartbeatReceived | DeadlineMissed | SetEligible | ForwardReports
HEARTBEAT_SAVE_EVERY = 30.0
"""Seconds between two writes of an unchanged node's row (its heartbeat time)."""
BEHIND_RECHECK = 1.0
"""Seconds before a missed deadline is looked at again while the server is behind."""


def _stored_fields(node: NodeState) -> tuple[object, ...]:
    """What a heartbeat may change in a node's row, its time aside."""
    return (
        node.hostname,
        dict(node.labels),
        node.cpus,
        node.memory_bytes,
        node.docker_version,
        node.agent_version,
        node.public_key,
        node.status,
    )


@dataclass(frozen=True)
class _Changed:
    health: bool
    view: bool


class NodeActor(Actor[NodeMessage]):
    """Owns one node."""

    def __init__(self, node_id: str, ctx: ServerContext, known: NodeState | None) -> None:
        self.node_id = node_id
        self.ctx = ctx
        self.node = known
        self.timer: Deadline | None = None
        self.last_reports: tuple[object, ...] | None = None
        self.last_forward = 0.0
        self.forward_until: float | None = None
        self.last_saved = 0.0

    async def started(self) -> None:
        """Arm the deadline of a node known from the store (with the restart grace)."""
        if self.node is not None:
            self.ctx.metrics.node(self.node_id, self.node.status)
        if self.node is not None and self.node.status == "healthy":
            grace = self.ctx.node_ttl + self.ctx.restart_grace
            self.timer = self.deadline(grace, DeadlineMissed())
            self.ctx.scheduler.tell_nowait(UpdateNode(self.view()))

    def view(self) -> NodeView:
        """This node as the scheduler sees it."""
        node = self.node
        assert node is not None
        return NodeView(
            id=node.id,
            hostname=node.hostname,
            status=node.status,
            eligible=node.eligible,
            labels=dict(node.labels),
            cpus=node.cpus,
            memory_bytes=node.memory_bytes,
            instance_count=0,
        )

    async def handle(self, message: NodeMessage) -> object:
        """Apply a heartbeat, a missed deadline, or a drain."""
        if isinstance(message, HeartbeatReceived):
            await self.heartbeat(message.heartbeat, message.received_at)
            return None
        if isinstance(message, DeadlineMissed):
            await self.missed()
            return None
        if isinstance(message, ForwardReports):
            self.forward_until = max(self.forward_until or 0.0, message.after)
            return None
        return await self.set_eligible(message.eligible)

    async def heartbeat(self, hb: Heartbeat, now: float) -> None:
        """Move the deadline; record what changed; forward the instance report."""
        node = self.node
        first_sight = node is None
        if node is None:
            node = NodeState(id=self.node_id, hostname=hb.hostname, registered_at=now)
            self.node = node
        was_healthy = node.status == "healthy" and not first_sight
        view_changed = node.labels != hb.labels or node.hostname != hb.hostname or not was_healthy
        stored = _stored_fields(node)
        node.hostname = hb.hostname
        node.labels = dict(hb.labels)
        node.cpus = hb.capacity.cpus
        node.memory_bytes = hb.capacity.memory_bytes
        node.docker_version = hb.docker_version
        node.agent_version = hb.agent_version
        node.public_key = hb.public_key
        self.ctx.public_keys[self.node_id] = hb.public_key
        node.last_heartbeat = now
        node.status = "healthy"
        self.ctx.metrics.node(self.node_id, "healthy")
        self.ctx.metrics.heartbeat(time.time() - hb.sent_at)
        ttl = self.ctx.node_ttl
        if self.timer is None:
            self.timer = self.deadline(ttl, DeadlineMissed())
        else:
            self.timer.reset(ttl)
        # Heartbeats are coalesced in memory: the row is written when something in it
        # changes, and otherwise every HEARTBEAT_SAVE_EVERY s (10,000 nodes would write
        # 2,000 rows/s). The API shows the heartbeat time held here.
        self.ctx.last_heartbeats[self.node_id] = now
        if (
            not was_healthy
            or stored != _stored_fields(node)
            or now - self.last_saved >= HEARTBEAT_SAVE_EVERY
        ):
            self.last_saved = now
            self.ctx.repo.save_node(node)
        if first_sight:
            self.ctx.repo.event(
                "node.registered", f"node {hb.hostname} registered", node_id=self.node_id
            )
        elif not was_healthy:
            self.ctx.repo.event(
                "node.healthy", f"node {hb.hostname} is healthy again", node_id=self.node_id
            )
        if view_changed:
            self.ctx.scheduler.tell_nowait(UpdateNode(self.view()))
        if not was_healthy and node.eligible:
            self.ctx.deployments.tell_nowait(NodeUp(self.node_id))
        reports = tuple(hb.instances)
        # Unchanged reports are forwarded now and then too: absences only count after a grace.
        # After a task ended here they are forwarded until one taken after its result is.
        forced = self.forward_until is not None
        if self.forward_until is not None and hb.sent_at > self.forward_until:
            self.forward_until = None
        if (
            forced
            or reports != self.last_reports
            or not was_healthy
            or now - self.last_forward > 5.0
        ):
            self.last_reports = reports
            self.last_forward = now
            self.ctx.deployments.tell_nowait(
                InstancesObserved(self.node_id, reports, taken_at=hb.sent_at)
            )

    async def missed(self) -> None:
        """The node went silent: mark it unhealthy and tell the deployments."""
        node = self.node
        if node is None or node.status == "unhealthy":
            return
        bus = self.ctx.bus
        if not bus.connected or time.monotonic() - bus.stats.last_reconnect < self.ctx.node_ttl:
            # The server, not the node, lost NATS: give the node a fresh TTL to be heard.
            if self.timer is not None:
                self.timer.reset(self.ctx.node_ttl)
            return
        if self.ref.mailbox_depth or bus.pending(subjects.HEARTBEAT):
            # The server, not the node, is behind: heartbeats it received wait to be read
            # (an overloaded server declared live nodes lost). Look again once it caught up.
            if self.timer is not None:
                self.timer.reset(BEHIND_RECHECK)
            return
        node.status = "unhealthy"
        self.ctx.metrics.node(self.node_id, "unhealthy")
        self.last_reports = None
        self.ctx.repo.save_node(node)
        self.ctx.repo.event(
            "node.unhealthy",
            f"node {node.hostname} missed its heartbeat deadline ({self.ctx.node_ttl:g} s)",
            node_id=self.node_id,
        )
        self.ctx.scheduler.tell_nowait(UpdateNode(self.view()))
        self.ctx.deployments.tell_nowait(NodeDown(self.node_id, since=time.time()))

    async def set_eligible(self, eligible: bool) -> object:
        """Drain or un-drain; answers the node's JSON."""
        node = self.node
        assert node is not None
        if node.eligible != eligible:
            node.eligible = eligible
            self.ctx.repo.save_node(node)
            kind = "node.eligible" if eligible else "node.drained"
            self.ctx.repo.event(
                kind, f"node {node.hostname}: {kind.split('.')[1]}", node_id=self.node_id
            )
            self.ctx.scheduler.tell_nowait(UpdateNode(self.view()))
            if eligible:
                self.ctx.deployments.tell_nowait(NodeUp(self.node_id))
            else:
                self.ctx.deployments.tell_nowait(NodeDrained(self.node_id))
        return node.to_json()
