"""The agent's view of what runs here: Knit's containers on this node, kept current.

Layer: agent. The Reconciler lists the containers labelled with this node's id at start
(adoption: containers from before a restart are found, never duplicated), follows the
runtime's events, and re-lists periodically as a safety net. The heartbeat reads its
snapshot, which is the agent's periodic full status report to the server.

Events are applied from what they say (``start``: running, ``die``: stopped with its exit
code, ``destroy``: gone), without asking the runtime: the Reconciler answers the heartbeat's
``Snapshot`` between two events, so a burst of events on a busy Engine (tens of containers
created at once) must not queue an inspect each in front of it, or heartbeats stall and the
node is declared lost. A task refreshes its instance's entry (``Reconciler.refresh``, called
directly, not a message) before it reports the result, so any report taken after the result
agrees with it.

A change of the table tells the heartbeat to beat soon (``on_change``), except a change that
a running task of this agent causes itself (``AgentContext.in_flight``: the ``create`` and
``start`` of a deploy's container, the ``die`` and ``destroy`` of a stop's): that task's
TaskStatus reports it, and the next regular heartbeat carries it in the full report.
Unexpected changes (a container exiting on its own, removed by someone else) still reach
the server within tens of milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

from actors import Actor, ActorRef
from knit.agent.context import (
    CAUSED_BY,
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    LABEL_NODE,
    AgentContext,
)
from knit.delivery import deliver
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

EVENT_STATUS = {"create": "pending", "start": "running", "unpause": "running", "die": "stopped"}
"""The instance status a container event implies (other actions change nothing we report)."""
REMEMBERED_REMOVALS = 1024
"""Containers removed by tasks whose late events are still ignored (each is forgotten at its
``destroy``; the bound only matters when that event never comes)."""
REFRESH_TIMEOUT = 10.0
"""Seconds a task's refresh waits for the runtime before it reports without one."""


def instance_status(state: str) -> str:
    """Map a container state to an instance status."""
    if state in ("running", "restarting"):
        return "running"
    if state in ("created",):
        return "pending"
    return "stopped"


def report_of(
    container: ContainerState, known: dict[str, InstanceReport] | None = None
) -> InstanceReport | None:
    """The report of one container, or ``None`` if it lacks Knit's labels.

    An equal report in ``known`` (by instance id) is returned instead of a new one.
    """
    instance_id = container.labels.get(LABEL_INSTANCE)
    deployment_id = container.labels.get(LABEL_DEPLOYMENT)
    if not instance_id or not deployment_id:
        return None
    status = instance_status(container.state)
    previous = known.get(instance_id) if known is not None else None
    return _report(instance_id, deployment_id, container.id, status, container.exit_code, previous)


def _report(
    instance_id: str,
    deployment_id: str,
    container_id: str | None,
    status: str,
    exit_code: int | None,
    known: InstanceReport | None,
) -> InstanceReport:
    """``known`` if it says exactly this, else a new report (most events and re-lists
    change nothing: no model is built for them)."""
    if (
        known is not None
        and known.status == status
        and known.container_id == container_id
        and known.exit_code == exit_code
        and known.deployment_id == deployment_id
        and known.error is None
    ):
        return known
    return InstanceReport(
        instance_id=instance_id,
        deployment_id=deployment_id,
        container_id=container_id,
        status=status,  # type: ignore[arg-type]
        exit_code=exit_code,
    )


class Reconciler(Actor[ReconcilerMessage]):
    """Owns the table of this node's instances."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.instances: dict[str, InstanceReport] = {}
        self.synced = False
        # Containers a refresh took out of the table; their own late events are ignored.
        self.removed: dict[str, None] = {}
        # While a resync runs: what refreshes found meanwhile (newer than its listing).
        self.refreshed: dict[str, InstanceReport | None] | None = None

    async def started(self) -> None:
        """Adopt what already runs, then re-list every few heartbeats."""
        await self.resync()
        self.every(max(self.ctx.heartbeat_interval * 3, 1.0), Resync())

    async def resync(self) -> None:
        """Replace the table with what the runtime lists (keeps it if the runtime is down)."""
        self.refreshed = {}
        try:
            try:
                containers = await self.ctx.runtime.list({LABEL_NODE: self.ctx.node_id})
            except KnitError as exc:
                log.warning("cannot list containers: %s", exc)
                return
            table = {}
            known = self.instances
            for container in containers:
                report = report_of(container, known)
                if report is not None:
                    table[report.instance_id] = report
            if self.synced:
                await self.settle_disagreements(table)
        finally:
            refreshed, self.refreshed = self.refreshed, None
        for instance_id, found in refreshed.items():  # newer than the listing
            if found is None:
                table.pop(instance_id, None)
            else:
                table[instance_id] = found
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
            report = report_of(container, self.instances) if container is not None else None
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
        self.apply(message.event)
        return None

    def apply(self, event: RuntimeEvent) -> None:
        """Fold one container event into the table (no I/O)."""
        labels = event.labels
        instance_id = labels.get(LABEL_INSTANCE)
        deployment_id = labels.get(LABEL_DEPLOYMENT)
        if not instance_id or not deployment_id:
            return
        action = event.action
        container_id = event.container_id
        if container_id in self.removed:
            if action == "destroy":  # its last event
                del self.removed[container_id]
            return  # a late event of a container a task removed (refresh): nothing to add
        known = self.instances.get(instance_id)
        if known is not None and known.container_id not in (None, container_id):
            if action not in ("create", "start"):
                return  # about an older container of the same instance
        elif known is not None and action == "create":
            return  # a late event: the container has been created, maybe started since
        if action == "destroy":
            if known is not None:
                del self.instances[instance_id]
                self.changed(instance_id, action)
            return
        status = EVENT_STATUS.get(action)
        if status is None:
            return
        exit_code = event.exit_code if status == "stopped" else None
        report = _report(instance_id, deployment_id, container_id, status, exit_code, known)
        if report is not known:
            self.instances[instance_id] = report
            self.changed(instance_id, action)

    def changed(self, instance_id: str, action: str) -> None:
        """An event changed the table: notify, unless a running task of this agent caused it
        (its own TaskStatus tells the server; the heartbeat would only repeat it)."""
        task = self.ctx.in_flight.get(instance_id)
        if task is not None and action in CAUSED_BY[task.kind]:
            return
        self.notify()

    async def refresh(
        self, instance_id: str, container_id: str | None, deployment_id: str | None = None
    ) -> None:
        """Make one instance's entry show what a task just did to it.

        Called by the task, in its own context rather than as a message, and the table is
        updated in one step, which a resync running meanwhile keeps. ``container_id`` None:
        the task removed the container (its late events are then ignored). Else the task
        started it: with ``deployment_id`` it is entered as running without asking the
        runtime, since any event still on its way is newer and changes the entry when it
        comes (a late ``create`` or ``start`` changes nothing). The runtime is asked (at most
        ``REFRESH_TIMEOUT`` seconds, else the table stays as it is) when the table already
        shows that container stopped, which may be an exit before or after the start, or
        without ``deployment_id``. Cancellation leaves the table as it was.
        """
        known = self.instances.get(instance_id)
        if (
            container_id is not None
            and deployment_id is not None
            and (known is None or known.container_id != container_id or known.status != "stopped")
        ):
            started = _report(instance_id, deployment_id, container_id, "running", None, known)
            if self.refreshed is not None:
                self.refreshed[instance_id] = started
            self.instances[instance_id] = started
            return
        container = None
        if container_id is not None:
            with anyio.move_on_after(REFRESH_TIMEOUT) as scope:
                try:
                    container = await self.ctx.runtime.inspect(container_id)
                except KnitError as exc:
                    log.warning("cannot inspect container %s: %s", container_id[:12], exc)
                    return
            if scope.cancelled_caught:
                log.warning("cannot inspect container %s: no answer in time", container_id[:12])
                return
        report = report_of(container, self.instances) if container is not None else None
        if self.refreshed is not None:
            self.refreshed[instance_id] = report
        if report is None:
            gone = self.instances.pop(instance_id, None)
            if gone is not None and gone.container_id is not None:
                self.removed[gone.container_id] = None
                while len(self.removed) > REMEMBERED_REMOVALS:
                    del self.removed[next(iter(self.removed))]
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
                    await deliver(reconciler, ContainerChanged(event))
        except KnitError as exc:
            log.warning("runtime event stream broke: %s", exc)
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)
