"""DeploymentActor: one deployment, reconciled until desired equals actual.

Layer: server. The actor holds the deployment's record and its instances, folds what it
learns into them (``knit.server.instance_facts``), and after every burst of facts asks the
pure reconciler (``knit.domain.reconcile``) for a plan: instances to create, retire, lose,
restart, deploy, stop or forget, and the rollout's progress. It applies the plan: store
writes, tasks (``TaskRun``), placements through the Scheduler, timers. It never sends once and
forgets: a periodic ``Audit`` and every cluster fact re-run the comparison. After a restart it
rebuilds everything from the store (tasks that were in flight are sent again: agents run a
task's instance idempotently), a rollout included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time

from actors import Actor, ActorError, Deadline
from knit.domain.mesh import MESH_HOST_IP
from knit.domain.placement import PlacementRequest
from knit.domain.plan import (
    Abandon,
    Create,
    Deploy,
    Lose,
    MarkUnknown,
    NoteStopped,
    Plan,
    Restart,
    Retire,
    Stop,
)
from knit.domain.reconcile import LIVE, Desired, Restarts, node_drained, node_lost, reconcile
from knit.domain.rollout import Rollout, Update, is_healthy
from knit.domain.specs import NetworkDriver
from knit.errors import KnitError
from knit.server.context import ServerContext
from knit.server.instance_facts import InstanceFacts
from knit.server.messages import (
    Audit,
    DeleteDeployment,
    DeploymentGone,
    DeploymentUpdated,
    ForwardReports,
    InstancesObserved,
    NodeDown,
    NodeDrained,
    NodeUp,
    Reconcile,
    StatusReceived,
    TaskDeadline,
    TaskEnded,
)
from knit.server.records import DeploymentState, Inflight, InstanceState
from knit.server.repo import record_at_version
from knit.server.tasks import TaskRun
from knit.store.records import (
    RESERVING_STATUSES,
    DeploymentRecord,
    DeploymentVersionRecord,
    new_id,
)
from knit.wire.messages import DeployTask

log = logging.getLogger(__name__)

DeploymentMessage = (
    Reconcile
    | Audit
    | StatusReceived
    | TaskDeadline
    | InstancesObserved
    | NodeUp
    | NodeDown
    | NodeDrained
    | DeleteDeployment
    | DeploymentUpdated
)
RECONCILE_EVERY = 10.0
"""Seconds between two audits (each deployment's first one at a random point of the first
interval, so that deployments loaded together do not audit together)."""
AUDIT = Audit()
RESERVING = frozenset(RESERVING_STATUSES)
"""Statuses whose instances hold their reservation on their node."""


class DeploymentActor(InstanceFacts, Actor[DeploymentMessage]):
    """Owns one deployment."""

    def __init__(
        self, deployment_id: str, ctx: ServerContext, created: DeploymentRecord | None = None
    ) -> None:
        self.deployment_id = deployment_id
        self.created = created
        self.ctx = ctx
        self.repo = ctx.repo
        self.state: DeploymentState | None = None
        self.pending_reason: str | None = None
        self.dirty = False
        self.writes = 0
        self.loaded = False
        self.unsaved: list[str] = []
        self.auditing = False
        self.stable: set[int] = set()
        # Older versions' specs and secret variables at rest, for their instances' tasks.
        self.versions: dict[int, tuple[DeploymentRecord, str | None]] = {}

    async def started(self) -> None:
        """Ask for a reconciliation now and periodically.

        The deployment is loaded, and its instances placed, when that first message is
        handled, in this actor's own turn: the DeploymentDirectory that spawns it does not
        wait for the store and the placements (it serialises every creation).
        """
        self.ref.tell_nowait(Reconcile())
        self.after(random.uniform(0.5, 1.0) * RECONCILE_EVERY, AUDIT)

    async def load(self) -> None:
        """Load the deployment and its instances from the store (the truth)."""
        self.loaded = True
        if self.created is not None:  # just created: stored as given, no instances yet
            created, self.created = self.created, None
            self.state = DeploymentState(record=created)
            self.pending_reason = created.pending_reason
            self.dirty = True
            return
        record = await self.repo.get_deployment_record(self.deployment_id)
        if record is None:
            return
        instances = await self.repo.instances_of(self.deployment_id)
        self.state = DeploymentState(record=record, instances={i.id: i for i in instances})
        self.stable = {v.version for v in await self.versions_of() if v.stable}
        # An instance still unknown was so since its last save. Its node gets the restart
        # grace to be heard again before the instance can be lost, like any node deadline.
        not_before = time.time() + self.ctx.node_ttl + self.ctx.restart_grace
        loaded_at = time.time()
        cpu, memory = record.reserved_cpu, record.reserved_memory
        for inst in instances:
            if inst.node_id is not None and inst.status in RESERVING:
                # What the Scheduler's rebuild counted for it (knit.store.instances).
                inst.cpu, inst.memory_bytes = cpu, memory
            self.ctx.metrics.instance(inst.id, inst.status, inst.deployment_id, inst.health)
            inst.running_since = loaded_at  # (not stored: min_healthy_time counts again)
            if inst.status == "unknown":
                inst.unknown_since = max(inst.updated_at, not_before - record.lost_after)
                self.after(inst.unknown_since + record.lost_after - time.time(), Reconcile())
        self.pending_reason = record.pending_reason
        self.dirty = True

    async def handle(self, message: DeploymentMessage) -> object:
        """Apply a fact or command, then reconcile.

        A burst of facts is reconciled once, after its last one (the comparison reads the
        whole table). Facts that leave nothing to do need no reconciliation: a node report
        that changed nothing (at 100 instances per node, heartbeats alone would otherwise
        cost a full comparison per node and deployment every few seconds), and a deploy
        task that succeeded (its instance runs: no count, placement or stop changes).
        """
        if not self.loaded:
            await self.load()
        state = self.state
        if state is None:
            return None
        if isinstance(message, StatusReceived | TaskDeadline):
            ended = await self.follow_task(state, message)
            if ended is None:
                return None
            started = ended.kind == "deploy" and ended.succeeded
            self.dirty |= not started
            self.task_ended(state, ended)
            if started:
                self.started_in_rollout(state)
        elif isinstance(message, InstancesObserved):
            writes = self.writes
            await self.observed(
                state, message.node_id, message.reports, message.taken_at, message.gone
            )
            self.dirty |= self.writes != writes
        elif isinstance(message, Audit):
            if not self.auditing:  # the first one, at a random time: then a steady beat
                self.auditing = True
                self.every(RECONCILE_EVERY, AUDIT)
            await self.audit(state)
            self.dirty = True
        else:
            self.dirty = True
        if isinstance(message, NodeDown):
            tasks = {i: inflight.kind for i, inflight in state.tasks.items()}
            plan = node_lost(
                state.instances.values(),
                tasks,
                message.node_id,
                removed=message.removed,
                lost_after=state.record.lost_after,
                now=time.time(),
            )
            await self.apply(state, plan, time.time())
        elif isinstance(message, NodeDrained):
            await self.apply(state, node_drained(state.instances.values(), message.node_id), 0.0)
        elif isinstance(message, DeploymentUpdated):
            state.record = dataclasses.replace(message.record, rollout=state.record.rollout)
            state.host_network = None
            self.ctx.forget_secret_env(self.deployment_id)
        elif isinstance(message, NodeUp):
            await self.audit(state, message.node_id)
        elif isinstance(message, DeleteDeployment):
            state.record = dataclasses.replace(state.record, deleted=True)
            self.event("deployment.deleted", f"deployment {state.record.name} deleted")
        if self.dirty and self.ref.mailbox_depth == 0:
            await self.reconcile()
        if isinstance(message, DeploymentUpdated) and self.state is not None:
            return self.state.record.rollout  # (the rollout the change started, if any)
        return None

    # --- tasks -----------------------------------------------------------------------------

    async def follow_task(
        self, state: DeploymentState, message: StatusReceived | TaskDeadline
    ) -> TaskEnded | None:
        """Hand a status or a deadline to its task; the task's end, if this was it.

        A status or deadline of a task that was replaced or has ended is ignored (the node's
        reports carry the same truth).
        """
        if isinstance(message, StatusReceived):
            task_id, instance_id = message.status.task_id, message.status.instance_id
        else:
            task_id, instance_id = message.task_id, message.instance_id
        inflight = state.tasks.get(instance_id)
        if inflight is None or inflight.task_id != task_id:
            return None
        if isinstance(message, StatusReceived):
            ended = inflight.run.status(message.status)
        else:
            ended = await inflight.run.deadline_passed()
        if ended is not None:
            self.ctx.task_owners.pop(task_id, None)
        return ended

    async def stopping(self) -> None:
        """Statuses of this actor's tasks find no owner any more."""
        if self.state is not None:
            for inflight in self.state.tasks.values():
                inflight.run.cancel()
                self.ctx.task_owners.pop(inflight.task_id, None)

    def look_again(self, seconds: float) -> None:
        self.after(seconds, Reconcile())

    def forward_reports(self, node_id: str, after: float, instance_id: str) -> None:
        """Ask ``node_id``'s NodeActor for its reports of ``instance_id`` until one taken
        after ``after`` (agent clock)."""
        ref = self.system.lookup(f"node/{node_id}")
        if ref is not None:
            with contextlib.suppress(ActorError):
                ref.tell_nowait(ForwardReports(after, instance_id, self.deployment_id))

    # --- reconciliation --------------------------------------------------------------------

    def desired(self, state: DeploymentState) -> Desired:
        """What the pure reconciler reads of the deployment's record."""
        record = state.record
        return Desired(
            replicas=record.replicas,
            version=record.version,
            deleted=record.deleted,
            lost_after=record.lost_after,
            restarts=Restarts.from_json(record.restart_policy),
            update=Update.from_json(record.update),
            checked=record.health_check is not None,
            rollout=Rollout.from_json(record.rollout),
            stable=frozenset(self.stable),
        )

    async def reconcile(self) -> None:
        """Ask ``knit.domain.reconcile`` what brings actual to desired, and do it."""
        state = self.state
        if state is None:
            return
        self.dirty = False
        now = time.time()
        desired = self.desired(state)
        update = desired.update
        for inst in state.instances.values():
            if not inst.ever_healthy and is_healthy(
                inst, desired.checked, update.min_healthy_time, now
            ):
                inst.ever_healthy = True
        tasks = {instance_id: inflight.kind for instance_id, inflight in state.tasks.items()}
        plan = reconcile(desired, state.instances.values(), tasks, now)
        await self.apply(state, plan, now)
        if plan.revert_to is not None and self.state is not None:
            record = await self.repo.revert(self.deployment_id, plan.revert_to)
            state.record = dataclasses.replace(record, rollout=state.record.rollout)
            state.host_network = None
            self.dirty = True
        if plan.purge:
            await self.repo.purge_deployment(self.deployment_id)
            self.event("deployment.purged", f"deployment {state.record.name} removed")
            await self.stopping()
            self.state = None
            self.ctx.deployments.tell_nowait(DeploymentGone(self.deployment_id))
        elif self.dirty and self.ref.mailbox_depth == 0:
            await self.reconcile()  # (a revert: the rolled back spec is the desired state now)

    async def apply(self, state: DeploymentState, plan: Plan, now: float) -> None:
        """Do what ``plan`` says, in its order."""
        retired = False
        for action in plan.actions:
            if isinstance(action, Create):
                self.add_instance(state, action, now)
                continue
            inst = state.instances.get(action.instance_id)
            if inst is None:
                continue
            if isinstance(action, Retire):
                inst.desired = False
                self.save(inst, action.kind, action.message)
                retired = True
            elif isinstance(action, Lose):
                self.lose(inst, action.message)
            elif isinstance(action, MarkUnknown):
                inst.status, inst.unknown_since = "unknown", now
                self.save(inst, "instance.unknown", action.message)
            elif isinstance(action, Abandon):
                self.abandon(state, inst, action.reason)
            elif isinstance(action, NoteStopped):
                inst.stopped_at = now
            elif isinstance(action, Restart):
                inst.restarts += 1
                inst.stopped_at = 0.0
                inst.ever_healthy = False
                self.save(inst, "instance.restarting", action.message)
                await self.start_task(state, inst, "deploy", restart=action.running)
            elif isinstance(action, Deploy):
                await self.start_task(state, inst, "deploy")
            elif isinstance(action, Stop):
                if retired:
                    # Stored before its container stops: nobody reads a retired instance
                    # as still wanted (and serving) while it is being stopped.
                    await self.repo.written()
                    retired = False
                await self.start_task(state, inst, "stop")
            else:
                self.forget(state, inst, action.message)
        if plan.place:
            await self.place_pending(state)
        else:
            self.save_created(state)
            self.set_pending_reason(None)
        if plan.wake_at is not None:
            self.after(max(0.0, plan.wake_at - now), Reconcile())
        for kind, message in plan.events:
            self.event(kind, message)
        if plan.stable is not None and plan.stable not in self.stable:
            self.stable.add(plan.stable)
            self.repo.mark_stable(self.deployment_id, plan.stable)
        if plan.rollout is not None:
            rollout = plan.rollout.to_json()
            state.record = dataclasses.replace(state.record, rollout=rollout)
            self.repo.set_rollout(self.deployment_id, rollout)

    def add_instance(self, state: DeploymentState, create: Create, now: float) -> None:
        inst = InstanceState(
            id=new_id(),
            deployment_id=self.deployment_id,
            index=create.index,
            status="pending",
            created_at=now,
            version=create.version,
        )
        state.instances[inst.id] = inst
        self.unsaved.append(inst.id)  # saved once placed (or found unplaceable)

    async def place_pending(self, state: DeploymentState) -> None:
        waiting = [
            i
            for i in state.instances.values()
            if i.desired and i.status == "pending" and i.id not in state.tasks
        ]
        unplaced = [i for i in waiting if i.node_id is None]
        if not unplaced:
            self.save_created(state)
            self.set_pending_reason(None)
            return
        if state.host_network is None:
            state.host_network = await self.on_host_network(state.record)
        # Every instance placed here reserves what the current spec asks (an instance of an
        # older version placed again during a rollout too: its limits are its version's).
        cpu, memory = state.record.reserved_cpu, state.record.reserved_memory
        plan = await self.ctx.place(
            PlacementRequest(
                deployment_id=self.deployment_id,
                count=len(unplaced),
                node_selector=dict(state.record.node_selector),
                avoid_nodes=frozenset(n for i in unplaced for n in i.avoid),
                existing=self.placed_counts(state),
                host_network=state.host_network,
                mesh=any(p.get("host_ip") == MESH_HOST_IP for p in state.record.ports),
                cpu=cpu,
                memory_bytes=memory,
                strategy=state.record.strategy,
            )
        )
        for inst, node_id in zip(unplaced, plan.placements, strict=False):
            inst.node_id, inst.error = node_id, None
            inst.cpu, inst.memory_bytes = cpu, memory
            self.save(inst, "instance.placed", f"instance {inst.index} placed on {node_id}")
            await self.start_task(state, inst, "deploy")
        self.save_created(state)
        self.set_pending_reason(plan.describe_unplaced() if plan.unplaced else None)

    async def on_host_network(self, record: DeploymentRecord) -> bool:
        """Whether the deployment is attached to a ``host`` network (placed only on nodes
        that allow it). A deployment without networks reads nothing."""
        if not record.network_attachments:
            return False
        networks = await self.repo.networks_named(record.network_attachments)
        return any(n.driver == NetworkDriver.HOST for n in networks)

    async def start_task(
        self, state: DeploymentState, inst: InstanceState, kind: str, *, restart: bool = False
    ) -> None:
        previous = state.tasks.pop(inst.id, None)
        if previous is not None:
            previous.run.cancel()
            self.ctx.task_owners.pop(previous.task_id, None)
        try:
            record, secret_env = await self.spec_of(state, inst)
            task = await self.ctx.build_task(record, inst, kind, secret_env)
            if restart and isinstance(task, DeployTask):
                task = task.model_copy(update={"restart": True})
            message = self.ctx.task_message(inst.node_id, task)
        except KnitError as exc:
            inst.status, inst.error = "error", str(exc)
            self.save(inst, "instance.error", f"instance {inst.index}: {exc}")
            return
        task_id, instance_id = task.task_id, inst.id

        def arm(seconds: float) -> Deadline:
            return self.deadline(seconds, TaskDeadline(task_id, instance_id))

        run = TaskRun(
            task=task,
            node_id=inst.node_id,
            message=message,
            bus=self.ctx.bus,
            repo=self.repo,
            timing=self.ctx.timing,
            arm=arm,
            deployment_id=self.deployment_id,
        )
        state.tasks[inst.id] = Inflight(run=run, task_id=task_id, kind=kind)
        self.ctx.task_owners[task_id] = self.ref
        await run.start()

    async def spec_of(
        self, state: DeploymentState, inst: InstanceState
    ) -> tuple[DeploymentRecord, str | None]:
        """The record of the version ``inst`` runs, and that version's secret variables at
        rest: the deployment's (None: the current ones), or an older version's spec on it (an
        old instance restarted during a rollout keeps its version)."""
        record = state.record
        if inst.version == record.version:
            return record, None
        older = self.versions.get(inst.version)
        if older is None or older[0].generation != record.generation:
            found = await self.repo.get_version(self.deployment_id, inst.version)
            if found is None:
                return record, None  # (a version that was never stored: the current spec)
            older = record_at_version(record, found), found.secrets_encrypted
            self.versions[inst.version] = older
        return older

    async def versions_of(self) -> list[DeploymentVersionRecord]:
        """The deployment's stored versions (none once it is being deleted)."""
        try:
            return await self.repo.deployment_versions(self.deployment_id)
        except KnitError:
            return []

    # --- helpers ---------------------------------------------------------------------------

    def save_created(self, state: DeploymentState) -> None:
        """Save the instances created by this reconciliation that were not placed."""
        for instance_id in self.unsaved:
            inst = state.instances.get(instance_id)
            if inst is not None and inst.node_id is None and inst.updated_at == 0.0:
                self.save(inst, "instance.created", f"instance {inst.index} created")
        self.unsaved.clear()

    def placed_counts(self, state: DeploymentState) -> dict[str, int]:
        """How many of this deployment's live instances each node holds (for spreading)."""
        counts: dict[str, int] = {}
        for inst in state.instances.values():
            if inst.node_id is not None and inst.desired and inst.status in LIVE:
                counts[inst.node_id] = counts.get(inst.node_id, 0) + 1
        return counts

    def set_pending_reason(self, reason: str | None) -> None:
        if reason != self.pending_reason:
            self.pending_reason = reason
            self.repo.deployment_status(self.deployment_id, reason)
            if reason:
                self.event("deployment.pending", reason)
