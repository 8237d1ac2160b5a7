"""The agent's view of what runs here: Knit's containers on this node, kept current.

Layer: agent. The Reconciler lists the containers labelled with this node's id at start
(adoption: containers from before a restart are found, never duplicated), follows the
runtime's events, and re-lists periodically as a safety net. The heartbeat reads its
snapshot, which is the agent's periodic full status report to the server.

Events are applied from what they say (``start``: running, ``die``: stopped with its exit
code, ``destroy``: gone), without asking the runtime: the Reconciler answers the heartbeat's
``Snapshot`` between two events, so a burst of events on a busy Engine (tens of containers
created at once) must not queue an inspect each in front of it, or heartbeats stall and the
node is declared lost. A task's executor asks for a ``Refresh`` of its instance before it
reports the result, so any report taken after the result agrees with it.
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


@dataclass(frozen=True)
class Refresh:
    """Look at one instance's container now (a task just changed it); answers None.

    ``container_id`` None means the task removed it.
    """

    instance_id: str
    container_id: str | None


ReconcilerMessage = Resync | ContainerChanged | Snapshot | Refresh

EVENT_STATUS = {"create": "pending", "start": "running", "unpause": "running", "die": "stopped"}
"""The instance status a container event implies (other actions change nothing we report)."""


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
        if self.synced:
            await self.settle_disagreements(table)
        changed = table != self.instances
        self.instances = table
        self.synced = True
        if changed:
            self.notify()
        removed = await self.ctx.files.remove_stale(set(table))
        if removed:
            log.info("removed the files of %d instance(s) whose containers are gone", len(removed))

    async def settle_disagreements(self, table: dict[str, InstanceReport]) -> None:
        """Where a listing disagrees with the events already applied, ask the container.

        Docker's container list is a view that may lag its events by a few milliseconds: a
        container whose ``die`` was just applied can still be listed running, one just
        created not listed yet. Taken as is, the list would undo what the events said (the
        server would see an exited container running again, or a new one vanished).
        Inspecting reads the container itself.
        """
        for instance_id in set(table) | set(self.instances):
            listed, known = table.get(instance_id), self.instances.get(instance_id)
            source = known if known is not None else listed
            if listed == known or source is None or source.container_id is None:
                continue
            container_id = source.container_id
            if listed is not None and listed.container_id != container_id:
                continue  # another container of the instance: the list is newer
            try:
                container = await self.ctx.runtime.inspect(container_id)
            except KnitError:
                continue  # keep what the list says; the next re-list looks again
            report = report_of(container) if container is not None else None
            if report is None:
                table.pop(instance_id, None)
            else:
                table[instance_id] = report

    async def handle(self, message: ReconcilerMessage) -> object:
        """Apply one message; ``Snapshot`` answers with the list of reports."""
        if isinstance(message, Snapshot):
            return list(self.instances.values())
        if isinstance(message, Resync):
            await self.resync()
            return None
        if isinstance(message, Refresh):
            await self.refresh(message.instance_id, message.container_id)
            return None
        self.apply(message.event)
        return None

    def apply(self, event: RuntimeEvent) -> None:
        """Fold one container event into the table (no I/O)."""
        instance_id = event.labels.get(LABEL_INSTANCE)
        deployment_id = event.labels.get(LABEL_DEPLOYMENT)
        if not instance_id or not deployment_id:
            return
        known = self.instances.get(instance_id)
        if (
            known is not None
            and known.container_id not in (None, event.container_id)
            and event.action not in ("create", "start")
        ):
            return  # about an older container of the same instance
        if event.action == "destroy":
            if known is not None:
                del self.instances[instance_id]
                self.notify()
            return
        status = EVENT_STATUS.get(event.action)
        if status is None:
            return
        exit_code = event.exit_code if status == "stopped" else None
        report = InstanceReport(
            instance_id=instance_id,
            deployment_id=deployment_id,
            container_id=event.container_id,
            status=status,  # type: ignore[arg-type]
            exit_code=exit_code,
        )
        if report != known:
            self.instances[instance_id] = report
            self.notify()

    async def refresh(self, instance_id: str, container_id: str | None) -> None:
        """Replace one instance's entry with what the runtime says of its container now."""
        container = None
        if container_id is not None:
            try:
                container = await self.ctx.runtime.inspect(container_id)
            except KnitError as exc:
                log.warning("cannot inspect container %s: %s", container_id[:12], exc)
                return
        report = report_of(container) if container is not None else None
        if report is None:
            self.instances.pop(instance_id, None)
        else:
            self.instances[report.instance_id] = report

    def notify(self) -> None:
        """Tell whoever listens (the heartbeat) that the report changed."""
        if self.ctx.on_change is not None:
            self.ctx.on_change()


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
