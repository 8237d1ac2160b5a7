"""The agent's view of what runs here: Knit's containers on this node, kept current.

Layer: agent. The Reconciler lists the containers labelled with this node's id at start
(adoption: containers from before a restart are found, never duplicated), follows the
runtime's events, and re-lists periodically as a safety net. The heartbeat reads its
snapshot, which is the agent's periodic full status report to the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

from actors import Actor, ActorRef
from knit.agent.context import LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_NODE, AgentContext
from knit.errors import KnitError
from knit.runtime.base import ContainerState, RuntimeEvent
from knit.wire.messages import InstanceReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resync:
    """List the runtime's containers again."""


@dataclass(frozen=True)
class ContainerChanged:
    """The runtime reported an event about one of our containers."""

    event: RuntimeEvent


@dataclass(frozen=True)
class Snapshot:
    """Ask for the reports of every instance on this node."""


ReconcilerMessage = Resync | ContainerChanged | Snapshot


def instance_status(state: str) -> str:
    """Map a container state to an instance status."""
    if state in ("running", "restarting"):
        return "running"
    if state in ("created",):
        return "pending"
    return "stopped"


def report_of(container: ContainerState) -> InstanceReport | None:
    """The report of one container, or ``None`` if it lacks Knit's labels."""
    instance_id = container.labels.get(LABEL_INSTANCE)
    deployment_id = container.labels.get(LABEL_DEPLOYMENT)
    if not instance_id or not deployment_id:
        return None
    return InstanceReport(
        instance_id=instance_id,
        deployment_id=deployment_id,
        container_id=container.id,
        status=instance_status(container.state),  # type: ignore[arg-type]
        exit_code=container.exit_code,
    )


class Reconciler(Actor[ReconcilerMessage]):
    """Owns the table of this node's instances."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.instances: dict[str, InstanceReport] = {}
        self.synced = False

    async def started(self) -> None:
        """Adopt what already runs, then re-list every few heartbeats."""
        await self.resync()
        self.every(max(self.ctx.heartbeat_interval * 3, 1.0), Resync())

    async def resync(self) -> None:
        """Replace the table with what the runtime lists (keeps it if the runtime is down)."""
        try:
            containers = await self.ctx.runtime.list({LABEL_NODE: self.ctx.node_id})
        except KnitError as exc:
            log.warning("cannot list containers: %s", exc)
            return
        table = {}
        for container in containers:
            report = report_of(container)
            if report is not None:
                table[report.instance_id] = report
        self.instances = table
        self.synced = True
        removed = await self.ctx.files.remove_stale(set(table))
        if removed:
            log.info("removed the files of %d instance(s) whose containers are gone", len(removed))

    async def handle(self, message: ReconcilerMessage) -> object:
        """Apply one message; ``Snapshot`` answers with the list of reports."""
        if isinstance(message, Snapshot):
            return list(self.instances.values())
        if isinstance(message, Resync):
            await self.resync()
            return None
        event = message.event
        instance_id = event.labels.get(LABEL_INSTANCE)
        if instance_id is None:
            return None
        if event.action == "destroy":
            self.instances.pop(instance_id, None)
            return None
        try:
            container = await self.ctx.runtime.inspect(event.container_id)
        except KnitError:
            return None
        if container is None:
            self.instances.pop(instance_id, None)
            return None
        report = report_of(container)
        if report is not None:
            self.instances[instance_id] = report
        return None


async def pump_events(ctx: AgentContext, reconciler: ActorRef[ReconcilerMessage]) -> None:
    """Forward the runtime's container events to the Reconciler, forever.

    When the event stream breaks (the Docker Engine restarted), wait with capped backoff,
    reconnect, and ask for a full re-list. Cancellation ends it.
    """
    backoff = 0.2
    while True:
        try:
            async with ctx.runtime.open_events({LABEL_NODE: ctx.node_id}) as events:
                # Subscribed first, listed second: nothing falls in between.
                await reconciler.tell(Resync())
                async for event in events:
                    backoff = 0.2
                    await reconciler.tell(ContainerChanged(event))
        except KnitError as exc:
            log.warning("runtime event stream broke: %s", exc)
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
