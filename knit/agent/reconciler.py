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

Every report carries the instance's health: ``starting`` from a start until the first
check's result, then ``healthy`` or ``unhealthy`` from Docker's ``health_status`` events;
``none`` for a container without a health check (neither its spec's nor its image's) and for
one that does not run. A start event does not say whether the container has a check, so the
table remembers which containers have one (``checked``): from the deploy task, which knows
its spec's and asks the runtime once otherwise (``refresh``), from re-lists and from their
health events.

A change of the table tells the heartbeat to beat soon (``on_change``), except a change that
a running task of this agent causes itself (``AgentContext.in_flight``: the ``create`` and
``start`` of a deploy's container, the stop and start of a restart's, the ``die`` and
``destroy`` of a stop's): that task's TaskStatus reports it, and the next regular heartbeat
carries it in the full report. Unexpected changes (a container exiting on its own, removed
by someone else, its health changing) still reach the server within tens of milliseconds.
"""

from __future__ import annotations

import contextlib
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
from knit.errors import KnitError, RuntimeUnavailable
from knit.runtime.base import HEALTH_NONE, HEALTH_STATUSES, ContainerState, RuntimeEvent
from knit.wire.messages import DeployTask, InstanceReport

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
AHEAD_TIMEOUT = 10.0
"""Seconds the events of a restarted container are ignored until its ``start`` comes (see
``Reconciler.refresh``): it comes within milliseconds unless the event stream broke."""


def instance_status(state: str) -> str:
    """Map a container state to an instance status."""
    if state in ("running", "restarting"):
        return "running"
    if state in ("created",):
        return "pending"
    return "stopped"


def health_after(action: str, detail: str, running: str | None, checked: bool) -> str | None:
    """The health an instance shows after an event of its container (None: the event says
    nothing of it).

    Args:
        action: the event's action.
        detail: the event's detail (the new status of a ``health_status`` event).
        running: the health the instance shows if its entry is this container running
            (None otherwise): a late ``start`` of that run changes nothing.
        checked: whether the container is known to have a health check.
    """
    if action == "health_status":
        return detail if detail in HEALTH_STATUSES else None
    if action in ("start", "unpause"):
        if running is not None:
            return running
        return "starting" if checked else HEALTH_NONE  # Docker starts every run "starting"
    if action in ("create", "die"):
        return HEALTH_NONE
    return None


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
    return _report(
        instance_id,
        deployment_id,
        container.id,
        status,
        container.exit_code,
        previous,
        container.health,
    )


def _report(
    instance_id: str,
    deployment_id: str,
    container_id: str | None,
    status: str,
    exit_code: int | None,
    known: InstanceReport | None,
    health: str = HEALTH_NONE,
) -> InstanceReport:
    """``known`` if it says exactly this, else a new report (most events and re-lists
    change nothing: no model is built for them)."""
    if (
        known is not None
        and known.status == status
        and known.container_id == container_id
        and known.exit_code == exit_code
        and known.deployment_id == deployment_id
        and known.health == health
        and known.error is None
    ):
        return known
    return InstanceReport(
        instance_id=instance_id,
        deployment_id=deployment_id,
        container_id=container_id,
        status=status,  # type: ignore[arg-type]
        exit_code=exit_code,
        health=health,  # type: ignore[arg-type]
    )


def _running_health(known: InstanceReport | None, container_id: str) -> str | None:
    """The health ``known`` shows if it is ``container_id`` running, else None."""
    if known is None or known.container_id != container_id or known.status != "running":
        return None
    return known.health


def _stopped(known: InstanceReport | None, container_id: str) -> bool:
    return known is not None and known.container_id == container_id and known.status == "stopped"


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
        # The containers in the table known to have a health check (theirs or their image's).
        self.checked: dict[str, None] = {}
        # Restart tasks in flight whose container's start was applied: instance id →
        # (task id, container id).
        self.restarted: dict[str, tuple[str, str]] = {}
        # Containers a restart's refresh entered ahead of their events: their events up to
        # their next start (the restart's own stop) are ignored until the deadline.
        self.ahead: dict[str, float] = {}

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
                    self.learn(container)
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
        kept = {report.container_id for report in table.values()}
        self.checked = {c: None for c in self.checked if c in kept}
        self.restarted = {i: r for i, r in self.restarted.items() if i in table}
        now = anyio.current_time()
        self.ahead = {c: t for c, t in self.ahead.items() if c in kept and t > now}
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
            if container is None or report is None:
                table.pop(instance_id, None)
            else:
                table[instance_id] = report
                self.learn(container)

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
        if container_id in self.ahead:
            if (
                action not in ("start", "destroy")
                and self.ahead[container_id] > anyio.current_time()
            ):
                return  # the restart's own stop, older than what its refresh entered
            del self.ahead[container_id]
        known = self.instances.get(instance_id)
        if known is not None and known.container_id not in (None, container_id):
            if action not in ("create", "start"):
                return  # about an older container of the same instance
        elif known is not None and action == "create":
            return  # a late event: the container has been created, maybe started since
        if action == "destroy":
            self.checked.pop(container_id, None)
            self.restarted.pop(instance_id, None)
            if known is not None:
                del self.instances[instance_id]
                self.changed(instance_id, action)
            return
        status = EVENT_STATUS.get(action)
        running = _running_health(known, container_id)
        if action == "health_status":
            if event.detail in HEALTH_STATUSES:
                self.checked[container_id] = None
            if running is None:
                return  # a late one, or a container not listed yet (the next re-list adds it)
            status = "running"
        if status is None:
            return
        health = health_after(action, event.detail, running, container_id in self.checked)
        if health is None:
            return
        exit_code = event.exit_code if status == "stopped" else None
        report = _report(instance_id, deployment_id, container_id, status, exit_code, known, health)
        if action == "start":
            task = self.ctx.in_flight.get(instance_id)
            if isinstance(task, DeployTask) and task.restart:
                self.restarted[instance_id] = (task.task_id, container_id)
        if report is not known:
            self.instances[instance_id] = report
            self.changed(instance_id, action)

    def changed(self, instance_id: str, action: str) -> None:
        """An event changed the table: notify, unless a running task of this agent caused it
        (its own TaskStatus tells the server; the heartbeat would only repeat it)."""
        task = self.ctx.in_flight.get(instance_id)
        if task is not None:
            kind = "restart" if isinstance(task, DeployTask) and task.restart else task.kind
            if action in CAUSED_BY[kind]:
                return
        self.notify()

    def learn(self, container: ContainerState) -> None:
        """Remember that ``container`` has a health check if its state shows one."""
        if container.health != HEALTH_NONE:
            self.checked[container.id] = None

    async def refresh(
        self,
        instance_id: str,
        container_id: str | None,
        deployment_id: str | None = None,
        has_check: bool | None = None,
    ) -> InstanceReport | None:
        """Make one instance's entry show what a task just did to it; return the entry.

        Called by the task, in its own context rather than as a message, and the table is
        updated in one step, which a resync running meanwhile keeps. ``container_id`` None:
        the task removed the container (its late events are then ignored). Else the task
        started it: with ``deployment_id`` it is entered as running without asking the
        runtime, since any event still on its way is newer and changes the entry when it
        comes (a late ``create`` or ``start`` changes nothing); its health is ``starting``
        if it has a health check. ``has_check`` says whether it has one (a task knows when
        its spec has one); None: unless the table knows, the runtime is asked, since the
        image may have one. The runtime is asked as well when the table already shows that
        container stopped, which may be an exit before or after the start, or without
        ``deployment_id``. The runtime gets at most ``REFRESH_TIMEOUT`` seconds, else the
        table stays as it is (and a container is taken to have no check). Cancellation
        leaves the table as it was.

        Returns:
            The instance's entry afterwards (None: it has none).
        """
        known = self.instances.get(instance_id)
        if container_id is not None and deployment_id is not None:
            task = self.ctx.in_flight.get(instance_id)
            restart = task.task_id if isinstance(task, DeployTask) and task.restart else None
            if restart is not None or not _stopped(known, container_id):
                return await self.enter_started(
                    instance_id, container_id, deployment_id, has_check, restart
                )
        container = None
        if container_id is not None:
            try:
                container = await self.inspect(container_id)
            except KnitError:
                return known
        report = report_of(container, self.instances) if container is not None else None
        if self.refreshed is not None:
            self.refreshed[instance_id] = report
        if container is None or report is None:
            gone = self.instances.pop(instance_id, None)
            if gone is not None and gone.container_id is not None:
                self.checked.pop(gone.container_id, None)
                self.removed[gone.container_id] = None
                while len(self.removed) > REMEMBERED_REMOVALS:
                    del self.removed[next(iter(self.removed))]
        else:
            self.instances[report.instance_id] = report
            self.learn(container)
        return report

    async def enter_started(
        self,
        instance_id: str,
        container_id: str,
        deployment_id: str,
        has_check: bool | None,
        restart: str | None,
    ) -> InstanceReport | None:
        """Enter a container a task started as running (see ``refresh``); return the entry.

        ``restart``: the id of the restart task in flight on the instance (None: none). A
        restart's events (the stop's ``die``, then the ``start``) may still be on their way:
        until its start is applied, the entry shows the run before the restart, so it is
        replaced, and the container is held ``ahead`` of its events until that start.
        """
        observed = HEALTH_NONE  # its health as the runtime shows it, if asked
        if has_check is None and container_id in self.checked:
            has_check = True
        elif has_check is None:
            with contextlib.suppress(KnitError):
                container = await self.inspect(container_id)
                if container is not None and container.state == "running":
                    observed = container.health
            has_check = observed != HEALTH_NONE
        known = self.instances.get(instance_id)  # events may have come meanwhile
        seen = self.restarted.pop(instance_id, None)
        fresh = restart is not None and seen != (restart, container_id)
        if not fresh and _stopped(known, container_id):
            return known  # it exited since the start
        if has_check:
            self.checked[container_id] = None
        else:
            self.checked.pop(container_id, None)
        running = None if fresh else _running_health(known, container_id)
        if not has_check:
            health = HEALTH_NONE
        elif running is not None and running != HEALTH_NONE:
            health = running  # the events of this run are ahead of the task
        elif observed != HEALTH_NONE:
            health = observed
        else:
            health = "starting"
        if fresh:
            self.ahead[container_id] = anyio.current_time() + AHEAD_TIMEOUT
        entry = _report(instance_id, deployment_id, container_id, "running", None, known, health)
        if self.refreshed is not None:
            self.refreshed[instance_id] = entry
        self.instances[instance_id] = entry
        return entry

    async def inspect(self, container_id: str) -> ContainerState | None:
        """Ask the runtime for one container, at most ``REFRESH_TIMEOUT`` seconds.

        Raises:
            KnitError: the runtime failed or did not answer in time (logged here).
        """
        with anyio.move_on_after(REFRESH_TIMEOUT):
            try:
                return await self.ctx.runtime.inspect(container_id)
            except KnitError as exc:
                log.warning("cannot inspect container %s: %s", container_id[:12], exc)
                raise
        log.warning("cannot inspect container %s: no answer in time", container_id[:12])
        raise RuntimeUnavailable(f"no answer about container {container_id[:12]} in time")

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
