"""What a DeploymentActor learns of its instances: task results, node reports, health.

Layer: server. ``InstanceFacts`` is the part of ``DeploymentActor`` that folds observations
into its table of instances (and writes them to the store): a task's end, a node's report of
the instances it runs (or no longer has), a health check's result. It decides nothing: what
to do about what it learned is the reconciler's (``knit.domain.reconcile``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from knit.domain.rollout import Rollout, Update
from knit.domain.specs import Health
from knit.server.context import ServerContext
from knit.server.messages import TaskEnded
from knit.server.records import DeploymentState, InstanceState
from knit.server.repo import Repo
from knit.wire.messages import InstanceReport

ABSENT_GRACE = 10.0
"""Seconds an instance must have been quiet before its absence from a report counts."""


class InstanceFacts:
    """Folds observations into a deployment's table (a base of ``DeploymentActor``)."""

    deployment_id: str
    ctx: ServerContext
    repo: Repo
    writes: int

    def look_again(self, seconds: float) -> None:
        """Reconcile in ``seconds`` (the actor's timer)."""
        raise NotImplementedError

    def forward_reports(self, node_id: str, after: float, instance_id: str) -> None:
        """Ask the node's actor for its next reports of ``instance_id`` (the actor's)."""
        raise NotImplementedError

    def task_ended(self, state: DeploymentState, ended: TaskEnded) -> None:
        result = "succeeded" if ended.succeeded else "unaccepted" if ended.unaccepted else "failed"
        self.ctx.metrics.task_ended(ended.kind, result)
        inflight = state.tasks.get(ended.instance_id)
        if inflight is None or inflight.task_id != ended.task_id:
            return  # a task that was replaced meanwhile
        del state.tasks[ended.instance_id]
        inst = state.instances.get(ended.instance_id)
        if inst is None:
            return
        # Reports the node took before this result are stale for this instance (the clock
        # is the node's: a result from the server itself, or another node, resets it); make
        # sure the next ones reach us even if they look unchanged.
        inst.result_at = ended.at if ended.at is not None else 0.0
        if ended.at is not None and ended.node_id is not None:
            self.forward_reports(ended.node_id, ended.at, inst.id)
        if ended.kind == "stop":
            if ended.succeeded or ended.unaccepted:
                self.forget(state, inst, f"instance {inst.index} stopped and removed")
            return
        if ended.succeeded:
            inst.status, inst.container_id, inst.error = "running", ended.container_id, None
            inst.node_id = ended.node_id or inst.node_id
            inst.running_since = time.time()
            checked = state.record.health_check is not None
            inst.health = ended.health or (Health.STARTING if checked else Health.NONE)
            self.save(inst, "instance.running", f"instance {inst.index} running")
        elif ended.unaccepted:
            # The node never answered: place the instance again, avoiding that node.
            if inst.node_id:
                inst.avoid = inst.avoid | {inst.node_id}
            self.ctx.release(inst)
            inst.node_id, inst.status, inst.error = None, "pending", ended.error
            self.save(inst, "task.unaccepted", f"instance {inst.index}: {ended.error}")
        else:
            inst.status, inst.error = "error", ended.error
            self.save(inst, "instance.error", f"instance {inst.index} failed: {ended.error}")

    def started_in_rollout(self, state: DeploymentState) -> None:
        """An instance started: while a rollout waits for it to be healthy, look again when
        it can be (a health check's result is a report, which reconciles anyway)."""
        rollout = Rollout.from_json(state.record.rollout)
        if rollout is not None and rollout.active and state.record.health_check is None:
            wait = Update.from_json(state.record.update).min_healthy_time
            self.look_again(wait + 0.01)

    async def audit(self, state: DeploymentState, only_node: str | None = None) -> None:
        """Check every placed instance (or those on ``only_node``) against its node's last
        full report: what a forwarded difference missed is found here."""
        reports = self.ctx.node_reports
        by_node: dict[str, tuple[list[InstanceReport], list[tuple[str, str]]]] = {}
        for inst in state.instances.values():
            node_id = inst.node_id
            if node_id is None or (only_node is not None and node_id != only_node):
                continue
            node_report = reports.get(node_id)
            if node_report is None:
                continue  # unhealthy (its NodeActor tells), or its report awaited
            found = node_report.instances.get(inst.id)
            seen, gone = by_node.setdefault(node_id, ([], []))
            if found is None:
                gone.append((inst.id, self.deployment_id))
            else:
                seen.append(found)
        for node_id, (seen, gone) in by_node.items():
            node_report = reports.get(node_id)
            if node_report is not None:
                await self.observed(state, node_id, tuple(seen), node_report.taken_at, gone)

    async def observed(
        self,
        state: DeploymentState,
        node_id: str,
        reports: tuple[InstanceReport, ...],
        taken_at: float = 0.0,
        gone: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Fold a node's reports of this deployment's instances, and the absence of those in
        ``gone``, into the table.

        A report the node took before the result of an instance's last task (``taken_at``
        older than ``result_at``, both on the node's clock) is stale for that instance and
        is ignored: it would show a restarted container as still exited.
        """
        for report in reports:
            inst = state.instances.get(report.instance_id)
            if inst is None or (inst.node_id not in (node_id, None) and inst.status == "running"):
                # Unknown here, or a duplicate of an instance running elsewhere: remove it.
                await self.ctx.stop_orphan(node_id, report.instance_id)
                continue
            if inst.id in state.tasks:
                continue  # a task is changing it: its result will tell
            if taken_at < inst.result_at or report.status == "pending":
                continue  # stale, or a container being created or started: not an exit
            if report.container_id:
                inst.container_id = report.container_id
            if report.status == "running" and inst.status == "lost" and not state.record.deleted:
                # Its node is back and it never stopped: keep the original, the surplus
                # replacement (newest) is retired by the next reconcile.
                inst.node_id, inst.status, inst.desired, inst.error = node_id, "running", True, None
                self.ctx.reserve(inst, state.record.reserved_cpu, state.record.reserved_memory)
                self.save(
                    inst, "instance.recovered", f"instance {inst.index} is back with its node"
                )
            elif report.status == "running" and inst.status != "running":
                inst.node_id, inst.status, inst.error = node_id, "running", None
                self.ctx.reserve(inst, state.record.reserved_cpu, state.record.reserved_memory)
                inst.running_since, inst.health = time.time(), report.health
                self.save(inst, "instance.running", f"instance {inst.index} seen running")
            elif report.status == "running" and report.health != inst.health:
                inst.health = report.health
                if report.health == Health.UNHEALTHY.value:
                    inst.stopped_at = 0.0  # (its restart's backoff counts from now)
                self.save(
                    inst, f"instance.{report.health}", f"instance {inst.index} is {report.health}"
                )
            elif report.status != "running" and inst.status in ("running", "unknown", "lost"):
                inst.node_id, inst.status, inst.exit_code = node_id, "stopped", report.exit_code
                self.save(
                    inst,
                    "instance.exited",
                    f"instance {inst.index} exited (code {report.exit_code})",
                )
        now = time.time()
        for instance_id, _ in gone:
            inst = state.instances.get(instance_id)
            if inst is None or inst.node_id != node_id or inst.id in state.tasks:
                continue
            if taken_at < inst.result_at or inst.status in ("pending", "error"):
                continue
            # A report taken after the instance's last task result (which the agent had
            # folded into its report before sending it) lacks it for good reason; otherwise
            # wait until the instance has been quiet for a while.
            fresh = 0.0 < inst.result_at <= taken_at
            if not fresh and now - inst.updated_at < ABSENT_GRACE:
                continue
            # The node no longer has its container.
            if inst.desired:
                self.ctx.release(inst)
                inst.node_id, inst.status, inst.container_id = None, "pending", None
                inst.result_at = 0.0
                self.save(inst, "instance.vanished", f"instance {inst.index}: container is gone")
            else:
                self.forget(state, inst, f"instance {inst.index} is gone")

    def abandon(self, state: DeploymentState, inst: InstanceState, reason: str) -> None:
        """End the task in flight for ``inst`` failed with ``reason``: nobody will run it
        (its late report is ignored: no longer in flight)."""
        inflight = state.tasks.pop(inst.id, None)
        if inflight is not None:
            inflight.run.abandon(reason)
            self.ctx.task_owners.pop(inflight.task_id, None)

    def lose(self, inst: InstanceState, message: str) -> None:
        """Mark an instance lost: its slot is free, its container is stopped if it comes back."""
        inst.status, inst.desired = "lost", False
        self.ctx.release(inst)
        self.save(inst, "instance.lost", message)

    # --- bookkeeping -----------------------------------------------------------------------

    def forget(self, state: DeploymentState, inst: InstanceState, message: str) -> None:
        self.writes += 1
        state.instances.pop(inst.id, None)
        if inst.status != "lost":
            self.ctx.release(inst)
        self.repo.delete_instance(inst.id)
        self.ctx.metrics.instance_gone(inst.id)
        self.event("instance.removed", message, instance_id=inst.id, node_id=inst.node_id)

    def save(self, inst: InstanceState, kind: str, message: str) -> None:
        self.writes += 1
        self.repo.save_instance(inst)
        self.ctx.metrics.instance(inst.id, inst.status, inst.deployment_id, inst.health)
        self.event(kind, message, instance_id=inst.id, node_id=inst.node_id)

    def event(
        self, kind: str, message: str, *, instance_id: str | None = None, node_id: str | None = None
    ) -> None:
        self.repo.event(
            kind,
            message,
            deployment_id=self.deployment_id,
            instance_id=instance_id,
            node_id=node_id,
        )
