"""NodeActor: one node's heartbeat deadline, health and eligibility, and its report.

Layer: server. Each heartbeat moves the node's deadline (an O(1) reset). When the deadline
passes, the node becomes ``unhealthy`` and the deployments are told; a heartbeat after that
makes it ``healthy`` again. After a server restart, every known node first gets
``node_ttl + restart_grace``, so nodes are not declared lost because the server was down.

Most heartbeats carry only the differences of the node's report (``Heartbeat.full`` is
False). One is applied to the report held here when it follows the last heartbeat applied
(``seq`` one more); otherwise (a heartbeat lost on the way, a server restart, a node back
from ``unhealthy``) it only keeps the node alive, and the report waits for the agent's next
full heartbeat (at most ``FULL_EVERY`` beats away, see knit.agent.heartbeat).
"""

from __future__ import annotations

import logging
import time

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
    NodeReport,
    NodeUp,
    SetEligible,
)
from knit.server.records import NodeState
from knit.server.scheduler import UpdateNode
from knit.store import nodes as node_store
from knit.wire import subjects
from knit.wire.messages import Heartbeat, InstanceReport, report_changed

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


class NodeActor(Actor[NodeMessage]):
    """Owns one node."""

    def __init__(self, node_id: str, ctx: ServerContext, known: NodeState | None) -> None:
        self.node_id = node_id
        self.ctx = ctx
        self.node = known
        self.timer: Deadline | None = None
        # The last report forwarded, by instance (None: forward the next one whole), and
        # instances whose reports are forwarded even unchanged until one taken after the
        # given time (agent clock) has been (their task just ended).
        self.last_reports: dict[str, InstanceReport] | None = None
        self.force: dict[str, tuple[float, str]] = {}
        # The seq of the last heartbeat applied to ``last_reports`` (None: none since the
        # report was lost; differences wait for a full heartbeat), and whether the node was
        # declared up before its report was known (see ``heartbeat``).
        self.last_seq: int | None = None
        self.up_unreported = False
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
            allow_host_network=node.allow_host_network,
            mesh_member=node.mesh_member,
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
            after, _ = self.force.get(message.instance_id, (0.0, ""))
            self.force[message.instance_id] = (max(after, message.after), message.deployment_id)
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
        view_changed = (
            node.labels != hb.labels
            or node.hostname != hb.hostname
            or node.allow_host_network != hb.allow_host_network
            or node.mesh_member != (hb.mesh_endpoint is not None)
            or not was_healthy
        )
        stored = _stored_fields(node)
        node.hostname = hb.hostname
        node.labels = dict(hb.labels)
        node.cpus = hb.capacity.cpus
        node.memory_bytes = hb.capacity.memory_bytes
        node.docker_version = hb.docker_version
        node.agent_version = hb.agent_version
        node.public_key = hb.public_key
        self.ctx.public_keys[self.node_id] = hb.public_key
        node.allow_host_network = hb.allow_host_network
        node.mesh_member = hb.mesh_endpoint is not None
        if hb.allow_host_network:  # (in memory: no column for it; said in every heartbeat)
            self.ctx.host_network_nodes.add(self.node_id)
        else:
            self.ctx.host_network_nodes.discard(self.node_id)
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
        last = self.last_reports
        if hb.full:
            # A node back (or new) is told up with its report. One told up earlier on a
            # difference it could not apply is told up again now that its report is known,
            # so the deployments audit their instances there against it.
            if (not was_healthy or self.up_unreported) and node.eligible:
                self.ctx.deployments.tell_nowait(NodeUp(self.node_id))
            self.up_unreported = False
            self.forward(hb, full=not was_healthy)
        elif last is not None and self.last_seq is not None and hb.seq == self.last_seq + 1:
            self.forward_differences(hb, last)
        else:
            # Differences from a heartbeat this actor did not apply (lost on the way, sent
            # before a server restart or while the node was unhealthy): the node is alive,
            # its report unknown until the next full heartbeat. Its stale report is
            # withdrawn from the audits, which would otherwise take an instance placed
            # since for vanished. ``last_reports`` stays: the next full report is compared
            # with what was forwarded last. A node back from unhealthy is up at once
            # (pending instances can be placed on it).
            self.last_seq = None
            self.ctx.node_reports.pop(self.node_id, None)
            if not was_healthy:
                self.up_unreported = True
                if node.eligible:
                    self.ctx.deployments.tell_nowait(NodeUp(self.node_id))

    def forward(self, hb: Heartbeat, *, full: bool) -> None:
        """Keep the node's full report for the audits; forward what changed in it.

        Only the differences from the last report forwarded go to the deployments (at 100
        instances per node from as many deployments, forwarding every report whole was a
        hundred messages per heartbeat): new or changed instances, and those it no longer
        lists. Instances whose task just ended are forwarded until a report taken after
        the result has been. Whatever a difference missed, the audits find in
        ``node_reports``.
        """
        reports = {r.instance_id: r for r in hb.instances}
        last = self.last_reports
        force = self.force
        if full or last is None:
            changed = list(hb.instances)
            gone = [(i, d) for i, (_, d) in force.items() if i not in reports]
        else:
            changed = [
                r
                for r in hb.instances
                if r.instance_id in force or report_changed(last.get(r.instance_id), r)
            ]
            gone = [(i, r.deployment_id) for i, r in last.items() if i not in reports]
            gone += [(i, d) for i, (_, d) in force.items() if i not in reports and i not in last]
        self.keep(hb, reports, changed, gone)

    def forward_differences(self, hb: Heartbeat, last: dict[str, InstanceReport]) -> None:
        """Apply a heartbeat's differences to the last report; forward them.

        What is forwarded is what :meth:`forward` would have forwarded for the same report
        sent whole, found from the differences and the forced instances only.
        """
        reports = dict(last)
        force = self.force
        changed = []
        for report in hb.instances:
            instance_id = report.instance_id
            reports[instance_id] = report
            if instance_id in force or report_changed(last.get(instance_id), report):
                changed.append(report)
        gone = []
        for instance_id in hb.removed:
            before = reports.pop(instance_id, None)
            if before is not None:
                gone.append((instance_id, before.deployment_id))
        if force:
            listed = {r.instance_id for r in hb.instances}
            for instance_id, (_, deployment_id) in force.items():
                present = reports.get(instance_id)
                if present is not None:
                    if instance_id not in listed:
                        changed.append(present)
                elif instance_id not in last:
                    gone.append((instance_id, deployment_id))
        self.keep(hb, reports, changed, gone)

    def keep(
        self,
        hb: Heartbeat,
        reports: dict[str, InstanceReport],
        changed: list[InstanceReport],
        gone: list[tuple[str, str]],
    ) -> None:
        """Hold ``reports`` as the node's report (applied up to ``hb``); forward the changes."""
        self.ctx.node_reports[self.node_id] = NodeReport(hb.sent_at, reports)
        force = self.force
        for instance_id, (after, _) in list(force.items()):
            if hb.sent_at > after:
                del force[instance_id]
        self.last_reports = reports
        self.last_seq = hb.seq
        if changed or gone:
            self.ctx.deployments.tell_nowait(
                InstancesObserved(self.node_id, tuple(changed), hb.sent_at, tuple(gone))
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
        self.last_seq = None
        self.ctx.node_reports.pop(self.node_id, None)
        self.ctx.repo.save_node(node)
        self.ctx.repo.event(
            "node.unhealthy",
            f"node {node.hostname} missed its heartbeat deadline ({self.ctx.node_ttl:g} s)",
            node_id=self.node_id,
        )
        self.ctx.scheduler.tell_nowait(UpdateNode(self.view()))
        self.ctx.deployments.tell_nowait(NodeDown(self.node_id, since=time.time()))
        for listener in self.ctx.node_down_listeners:
            listener(self.node_id)

    async def set_eligible(self, eligible: bool) -> object:
        """Drain or un-drain; answers the node's JSON."""
        node = self.node
        assert node is not None
        if node.eligible != eligible:
            node.eligible = eligible
            # Awaited: the answer, and any read after it, shows the change (a user waits).
            await self.ctx.repo.store.write(node_store.set_eligible(self.node_id, eligible))
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
