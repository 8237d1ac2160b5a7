"""DeploymentActor: one deployment, reconciled until desired equals actual.

Layer: server. The actor compares the deployment's ``replicas`` with its live instances and
asks for tasks until they match: it places missing instances through the Scheduler, stops
surplus ones, and keeps pending ones (with the reason) until a node fits. It never sends
once and forgets: a periodic ``Reconcile`` and every cluster fact re-run the comparison.
After a restart it rebuilds everything from the store.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field

from actors import Actor, ActorRef, Restart
from knit.domain.placement import PlacementRequest, Plan
from knit.server.context import ServerContext
from knit.server.messages import (
    DeleteDeployment,
    DeploymentGone,
    InstancesObserved,
    NodeDown,
    NodeDrained,
    NodeUp,
    Reconcile,
    StatusReceived,
    TaskEnded,
)
from knit.server.records import InstanceState
from knit.server.repo import Repo
from knit.server.tasks import TaskActor, TaskMessage
from knit.store.records import DeploymentRecord
from knit.wire.messages import InstanceReport

log = logging.getLogger(__name__)

DeploymentMessage = (
    Reconcile | TaskEnded | InstancesObserved | NodeUp | NodeDown | NodeDrained | DeleteDeployment
)
LIVE = ("pending", "running", "unknown", "error")
RECONCILE_EVERY = 10.0


@dataclass
class Inflight:
    """A task this deployment waits for."""

    ref: ActorRef[TaskMessage]
    kind: str
    node_id: str | None


@dataclass
class DeploymentState:
    """What the actor holds in memory (a cache of the store)."""

    record: DeploymentRecord
    instances: dict[str, InstanceState] = field(default_factory=dict)
    tasks: dict[str, Inflight] = field(default_factory=dict)  # by instance id


class DeploymentActor(Actor[DeploymentMessage]):
    """Owns one deployment."""

    def __init__(self, deployment_id: str, rt: ServerContext) -> None:
        self.deployment_id = deployment_id
        self.rt = rt
        self.repo: Repo = rt.repo
        self.state: DeploymentState | None = None
        self.pending_reason: str | None = None

    async def started(self) -> None:
        """Load the deployment and its instances, then reconcile now and periodically."""
        record = await self.repo.get_deployment_record(self.deployment_id)
        if record is None:
            return
        instances = await self.repo.instances_of(self.deployment_id)
        self.state = DeploymentState(record=record, instances={i.id: i for i in instances})
        await self.reconcile()
        self.every(RECONCILE_EVERY, Reconcile())

    async def handle(self, message: DeploymentMessage) -> object:
        """Apply a fact or command, then reconcile."""
        state = self.state
        if state is None:
            return None
        if isinstance(message, TaskEnded):
            await self.task_ended(state, message)
        elif isinstance(message, InstancesObserved):
            self.observed(state, message.node_id, message.reports)
        elif isinstance(message, NodeDown):
            self.node_down(state, message.node_id)
        elif isinstance(message, NodeDrained):
            self.node_drained(state, message.node_id)
        elif isinstance(message, DeleteDeployment):
            state.record = dataclasses.replace(state.record, deleted=True)
            self.repo.event(
                "deployment.deleted",
                f"deployment {state.record.name} deleted",
                deployment_id=self.deployment_id,
            )
        await self.reconcile()
        return None

    # --- facts -----------------------------------------------------------------------------

    async def task_ended(self, state: DeploymentState, ended: TaskEnded) -> None:
        inflight = state.tasks.get(ended.instance_id)
        if inflight is not None and inflight.ref.name == f"task/{ended.task_id}":
            del state.tasks[ended.instance_id]
            await self.system.stop(inflight.ref)
        inst = state.instances.get(ended.instance_id)
        if inst is None:
            return
        if ended.kind == "stop":
            if ended.succeeded:
                inst.status = "stopped"
                self.save(inst, "instance.stopped", f"instance {inst.index} stopped")
                if not inst.desired:
                    self.forget(state, inst)
            return
        if ended.succeeded:
            inst.status, inst.container_id, inst.error = "running", ended.container_id, None
            inst.node_id = ended.node_id or inst.node_id
            self.save(inst, "instance.running", f"instance {inst.index} running")
        elif ended.unaccepted:
            # The node never answered: place the instance again, avoiding that node.
            if inst.node_id:
                inst.avoid.add(inst.node_id)
            self.rt.release(inst.node_id)
            inst.node_id, inst.status = None, "pending"
            inst.error = ended.error
            self.save(inst, "task.unaccepted", f"instance {inst.index}: {ended.error}")
        else:
            inst.status, inst.error = "error", ended.error
            self.save(inst, "instance.error", f"instance {inst.index} failed: {ended.error}")

    def observed(
        self, state: DeploymentState, node_id: str, reports: tuple[InstanceReport, ...]
    ) -> None:
        for report in reports:
            inst = state.instances.get(report.instance_id)
            if inst is None or (state.record.deleted and inst.status == "stopped"):
                continue
            if report.instance_id in state.tasks:
                continue  # a task is changing it: its result will tell
            if report.container_id and inst.container_id != report.container_id:
                inst.container_id = report.container_id
            if inst.status in ("unknown", "lost", "pending") and report.status == "running":
                inst.node_id = node_id
                inst.status = "running"
                self.save(inst, "instance.running", f"instance {inst.index} seen running")
            elif inst.status == "running" and report.status != "running":
                inst.status, inst.exit_code = "stopped", report.exit_code
                self.save(
                    inst,
                    "instance.exited",
                    f"instance {inst.index} exited (code {report.exit_code})",
                )

    def node_down(self, state: DeploymentState, node_id: str) -> None:
        for inst in state.instances.values():
            if inst.node_id == node_id and inst.status in ("running", "pending", "unknown"):
                inst.status = "lost"
                self.save(inst, "instance.lost", f"instance {inst.index} lost with node {node_id}")

    def node_drained(self, state: DeploymentState, node_id: str) -> None:
        for inst in state.instances.values():
            if inst.node_id == node_id and inst.desired and inst.status in LIVE:
                inst.desired = False
                self.save(inst, "instance.draining", f"instance {inst.index} leaves drained node")

    # --- reconciliation --------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Ask for the tasks that bring actual to desired."""
        state = self.state
        if state is None:
            return
        record = state.record
        if record.deleted:
            for inst in list(state.instances.values()):
                inst.desired = False
        live = [i for i in state.instances.values() if i.desired and i.status in LIVE]
        missing = 0 if record.deleted else record.replicas - len(live)
        if missing > 0:
            self.add_instances(state, missing)
        elif missing < 0:
            self.retire(state, live, -missing)
        await self.place_pending(state)
        await self.stop_unwanted(state)
        if record.deleted and not state.instances:
            await self.repo.purge_deployment(self.deployment_id)
            self.repo.event(
                "deployment.purged",
                f"deployment {record.name} removed",
                deployment_id=self.deployment_id,
            )
            self.state = None
            self.rt.deployments.tell_nowait(DeploymentGone(self.deployment_id))

    def add_instances(self, state: DeploymentState, count: int) -> None:
        used = {i.index for i in state.instances.values() if i.desired}
        index = 0
        for _ in range(count):
            while index in used:
                index += 1
            used.add(index)
            inst = InstanceState(
                id=uuid.uuid4().hex,
                deployment_id=self.deployment_id,
                index=index,
                status="pending",
                created_at=time.time(),
            )
            state.instances[inst.id] = inst
            self.save(inst, "instance.created", f"instance {index} created")

    def retire(self, state: DeploymentState, live: list[InstanceState], count: int) -> None:
        # Newest and unplaced instances go first; the originals stay.
        live.sort(key=lambda i: (i.status == "running", -i.created_at), reverse=False)
        for inst in live[:count]:
            inst.desired = False
            self.save(inst, "instance.surplus", f"instance {inst.index} is surplus")

    async def place_pending(self, state: DeploymentState) -> None:
        unplaced = [
            i
            for i in state.instances.values()
            if i.desired and i.status == "pending" and i.node_id is None and i.id not in state.tasks
        ]
        if not unplaced:
            self.set_pending_reason(None)
            return
        plan = await self.rt.place(
            PlacementRequest(
                deployment_id=self.deployment_id,
                count=len(unplaced),
                node_selector=dict(state.record.node_selector),
                avoid_nodes=frozenset(n for i in unplaced for n in i.avoid),
                existing=self.placed_counts(state),
            )
        )
        for inst, node_id in zip(unplaced, plan.placements, strict=False):
            inst.node_id = node_id
            inst.error = None
            self.save(inst, "instance.placed", f"instance {inst.index} placed on {node_id}")
            await self.start_task(state, inst, "deploy")
        self.set_pending_reason(describe_unplaced(plan) if plan.unplaced else None)

    async def stop_unwanted(self, state: DeploymentState) -> None:
        for inst in list(state.instances.values()):
            if inst.desired:
                continue
            task = state.tasks.get(inst.id)
            if task is not None and task.kind == "stop":
                continue
            if inst.node_id is None or inst.status == "stopped":
                self.forget(state, inst)
                continue
            if inst.status == "lost":
                continue  # nobody can stop it now; the node will report it when back
            await self.start_task(state, inst, "stop")

    async def start_task(self, state: DeploymentState, inst: InstanceState, kind: str) -> None:
        previous = state.tasks.pop(inst.id, None)
        if previous is not None:
            await self.system.stop(previous.ref)
        task = await self.rt.build_task(state.record, inst, kind)
        me = self.ref
        ref = await self.system.spawn(
            lambda: TaskActor(
                task=task,
                node_id=inst.node_id,
                deployment_id=self.deployment_id,
                report=me.tell_nowait,
                bus=self.rt.bus,
                repo=self.repo,
                timing=self.rt.timing,
            ),
            name=f"task/{task.task_id}",
            supervisor=self.rt.tasks_supervisor,
            restart=Restart.TEMPORARY,
            mailbox_size=64,
        )
        state.tasks[inst.id] = Inflight(ref=ref, kind=kind, node_id=inst.node_id)

    # --- helpers ---------------------------------------------------------------------------

    def placed_counts(self, state: DeploymentState) -> dict[str, int]:
        """How many of this deployment's live instances each node holds (for spreading)."""
        counts: dict[str, int] = {}
        for inst in state.instances.values():
            if inst.node_id is not None and inst.desired and inst.status in LIVE:
                counts[inst.node_id] = counts.get(inst.node_id, 0) + 1
        return counts

    def forget(self, state: DeploymentState, inst: InstanceState) -> None:
        state.instances.pop(inst.id, None)
        self.rt.release(inst.node_id)
        self.repo.delete_instance(inst.id)

    def save(self, inst: InstanceState, kind: str, message: str) -> None:
        self.repo.save_instance(inst)
        self.repo.event(
            kind,
            message,
            deployment_id=self.deployment_id,
            instance_id=inst.id,
            node_id=inst.node_id,
        )

    def set_pending_reason(self, reason: str | None) -> None:
        if reason != self.pending_reason:
            self.pending_reason = reason
            self.repo.deployment_status(self.deployment_id, reason)
            if reason:
                self.repo.event("deployment.pending", reason, deployment_id=self.deployment_id)


def describe_unplaced(plan: Plan) -> str:
    """A readable reason why some instances could not be placed."""
    if not plan.rejections:
        return f"{plan.unplaced} instance(s) not placed: no nodes registered"
    reasons = "; ".join(f"{node}: {why}" for node, why in sorted(plan.rejections.items()))
    return f"{plan.unplaced} instance(s) not placed: {reasons}"


__all__ = ["DeploymentActor", "DeploymentMessage", "StatusReceived"]
