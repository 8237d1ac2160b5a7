"""The reconciler: what to do with one deployment, as a pure function of what is known of it.

Layer: domain. Pure: the standard library and ``knit.domain`` only. No clock, no I/O: the
time is an argument, and the result is a :class:`Plan` that ``DeploymentActor`` applies
(store writes, tasks, placements, timers). Every rule has its table test in
``tests/domain/test_reconcile.py``.

:func:`reconcile` compares a deployment's desired state (:class:`Desired`) with its instances
as last observed, and decides, in this order:

1. a deleted deployment wants none of its instances;
2. an instance ``unknown`` for ``lost_after`` seconds is ``lost`` (its slot is free);
3. the count: instances are created or retired until ``replicas`` hold a slot. While a
   rollout is active, instances of older versions are replaced in batches of
   ``max_parallel``: ``stop_first`` retires an old instance and creates its replacement once
   the old one is gone; ``start_first`` creates the new one and retires an old one once a new
   one is healthy. A batch not healthy within ``healthy_deadline`` pauses the rollout, or
   rolls it back to the last stable version (``on_failure``). The rollout completes when
   every instance runs the version and is healthy: the version becomes stable;
4. instances that exited or failed are restarted as the restart policy says, and so are
   running instances whose health check turned unhealthy (unless they belong to the batch a
   rollout waits for: that one's deadline decides);
5. placed instances that wait for their task get it; unplaced ones are placed;
6. instances no longer wanted are stopped, or forgotten when nothing runs them;
7. a deleted deployment without instances is purged.

:func:`node_lost` and :func:`node_drained` decide what a node's loss or drain means for the
instances on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from knit.domain.plan import (
    Abandon,
    Create,
    Deploy,
    Forget,
    Lose,
    MarkUnknown,
    NoteStopped,
    Plan,
    Restart,
    Retire,
    Stop,
)
from knit.domain.rollout import Observed, Rollout, Update, healthy_at, is_healthy
from knit.domain.specs import Health, InstanceStatus, RolloutState
from knit.domain.update_policy import OnFailure, UpdateOrder

LIVE = frozenset(
    {
        InstanceStatus.PENDING,
        InstanceStatus.RUNNING,
        InstanceStatus.UNKNOWN,
        InstanceStatus.ERROR,
        InstanceStatus.STOPPED,
    }
)
"""Statuses of a desired instance that hold one of the ``replicas`` slots."""
MAX_RESTART_DELAY = 300.0
"""The longest wait before a restart (seconds)."""
STOP = "stop"
"""The kind of a stop task (``tasks`` maps instance ids to ``deploy`` or ``stop``)."""


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Restarts:
    """The restart policy (``knit.domain.specs.RestartPolicy``).

    Modes as in Docker and Nomad: ``always``, ``on-failure`` (not after a clean exit, code
    0), ``never``; ``max_restarts`` bounds the count; the wait doubles from ``backoff`` with
    each restart, up to :data:`MAX_RESTART_DELAY`.
    """

    mode: str = "always"
    backoff: float = 1.0
    max_restarts: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> Restarts:
        """The policy stored as ``data``."""
        data = data or {}
        limit = data.get("max_restarts")
        backoff = data.get("backoff", 1.0)
        return cls(
            mode=str(data.get("mode", "always")),
            backoff=float(backoff) if isinstance(backoff, int | float) else 1.0,
            max_restarts=limit if isinstance(limit, int) else None,
        )


@dataclass(frozen=True, slots=True)
class Desired:
    """What is wanted of a deployment, from its record.

    Attributes:
        version: the current version of its spec.
        checked: its spec has a health check.
        rollout: the current (or last) rollout; None before the first one.
        stable: the versions that are stable (candidates of an automatic rollback).
    """

    replicas: int
    version: int = 1
    deleted: bool = False
    lost_after: float = 0.0
    restarts: Restarts = field(default_factory=Restarts)
    update: Update = field(default_factory=Update)
    checked: bool = False
    rollout: Rollout | None = None
    stable: frozenset[int] = frozenset()


# --- the reconciler ----------------------------------------------------------------------


@dataclass(slots=True)
class _Table:
    """The instances as this reconciliation changes them (the inputs are not touched)."""

    instances: list[Observed]
    tasks: Mapping[str, str]
    wanted: dict[str, bool]
    status: dict[str, str]
    plan: Plan

    def live(self) -> list[Observed]:
        return [i for i in self.instances if self.wanted[i.id] and self.status[i.id] in LIVE]

    def retire(self, inst: Observed, kind: str, message: str) -> None:
        self.wanted[inst.id] = False
        self.plan.actions.append(Retire(inst.id, kind, message))


def reconcile(
    desired: Desired,
    instances: Iterable[Observed],
    tasks: Mapping[str, str],
    now: float,
) -> Plan:
    """Decide what brings ``instances`` to ``desired`` (see the module's docstring).

    Args:
        desired: the deployment's record.
        instances: its instances as last observed (not modified).
        tasks: the kind of the task in flight (``deploy`` or ``stop``) by instance id.
        now: the server's clock.
    """
    insts = list(instances)
    plan = Plan()
    table = _Table(
        instances=insts,
        tasks=tasks,
        wanted={i.id: i.desired for i in insts},
        status={i.id: i.status for i in insts},
        plan=plan,
    )
    if desired.deleted:
        for inst in insts:
            if inst.desired:
                table.retire(
                    inst, "instance.unwanted", f"instance {inst.index}: deployment deleted"
                )
    for inst in insts:
        if inst.status != InstanceStatus.UNKNOWN:
            continue
        if now - inst.unknown_since >= desired.lost_after:
            table.wanted[inst.id] = False
            table.status[inst.id] = InstanceStatus.LOST
            plan.actions.append(
                Lose(inst.id, f"instance {inst.index} lost after {desired.lost_after:g} s")
            )
        else:
            plan.wake(inst.unknown_since + desired.lost_after)
    created: list[Create] = []
    if not desired.deleted:
        created = _count(desired, table, now)
    _restart(desired, table, now)
    _place(table, created)
    forgotten = _stop_unwanted(desired, table)
    if desired.deleted and forgotten == len(insts):
        plan.purge = True
    return plan


# --- 3. the count, and rollouts ----------------------------------------------------------


def _count(desired: Desired, table: _Table, now: float) -> list[Create]:
    """Create or retire instances until ``replicas`` hold a slot, a rollout's batch at a time."""
    plan = table.plan
    rollout = desired.rollout
    if rollout is None or rollout.version != desired.version:
        rollout = Rollout(
            version=desired.version,
            state=RolloutState.RUNNING,
            started_at=now,
            message=f"rolling out version {desired.version}",
        )
        plan.rollout = rollout
        plan.events.append(("deployment.rollout", rollout.message))
    if rollout.active:
        return _roll(desired, rollout, table, now)
    live = table.live()
    missing = desired.replicas - len(live)
    if missing > 0:
        return _create(desired, table, missing)
    if missing < 0:
        # Older versions first; then unplaced and not-yet-running ones, then the newest:
        # originals stay.
        live.sort(
            key=lambda i: (
                i.version == desired.version,
                i.status == InstanceStatus.RUNNING,
                i.node_id is not None,
                -i.created_at,
            )
        )
        for inst in live[:-missing]:
            table.retire(inst, "instance.surplus", f"instance {inst.index} is surplus")
    return []


def _roll(desired: Desired, rollout: Rollout, table: _Table, now: float) -> list[Create]:
    """One step of an active rollout: retire and create within the batch, then judge it."""
    plan, update, version, replicas = table.plan, desired.update, desired.version, desired.replicas
    live = table.live()
    current = [i for i in live if i.version == version]
    old = [i for i in live if i.version != version]
    unready = _unready(desired, current, now)
    # Scaled down meanwhile: old ones first, then new ones not ready. (With start_first, old
    # ones beyond ``replicas`` are the surge: they are retired as new ones become healthy.)
    if update.order == UpdateOrder.START_FIRST:
        surplus = len(current) - replicas
    else:
        surplus = len(current) + len(old) - replicas
    if surplus > 0:
        ready_ids = {i.id for i in current} - {i.id for i in unready}
        old.sort(key=_old_order)
        current.sort(key=lambda i: (i.id in ready_ids, -i.created_at))
        for inst in (old + current)[:surplus]:
            table.retire(inst, "instance.surplus", f"instance {inst.index} is surplus")
        live = table.live()
        current = [i for i in live if i.version == version]
        old = [i for i in live if i.version != version]
        unready = _unready(desired, current, now)
    unready_ids = {i.id for i in unready}
    healthy = [i for i in current if i.id not in unready_ids]
    since = rollout.started_at
    failing = [
        i
        for i in unready
        if not i.ever_healthy and now - max(i.created_at, since) > update.healthy_deadline
    ]
    if failing:
        _fail(desired, rollout, failing[0], plan)
        return []
    created: list[Create] = []
    if update.order == UpdateOrder.STOP_FIRST:
        # An old instance being stopped holds its slot until it is gone (its replacement
        # starts after), and counts in the batch.
        stopping = sum(1 for i in table.instances if _stopping(table, i, version))
        # The batch in flight: new ones not healthy yet, old ones being stopped, and the
        # replacements of those already gone (created below).
        gaps = max(0, replicas - len(current) - len(old) - stopping)
        room = max(0, update.max_parallel - len(unready) - stopping - gaps)
        old.sort(key=_old_order)
        for inst in old[:room]:
            table.retire(inst, "instance.replaced", _replaced(inst, version))
        stopping = sum(1 for i in table.instances if _stopping(table, i, version))
        left = len(old) - min(room, len(old))
        created = _create(desired, table, replicas - len(current) - left - stopping)
    else:
        # The surge is at most ``max_parallel``: new ones not healthy yet and old ones still
        # stopping.
        done = {i.index for i in healthy}
        old.sort(key=lambda i: (i.index not in done, *_old_order(i)))
        retiring = max(0, min(len(old), len(healthy) + len(old) - replicas))
        for inst in old[:retiring]:
            table.retire(inst, "instance.replaced", _replaced(inst, version))
        stopping = sum(1 for i in table.instances if _stopping(table, i, version))
        room = max(0, update.max_parallel - len(unready) - stopping)
        left = len(old) - retiring
        missing = max(min(room, replicas - len(current)), replicas - len(current) - left)
        created = _create(desired, table, missing)
    for inst in unready:
        if not inst.ever_healthy:
            plan.wake(max(inst.created_at, since) + update.healthy_deadline + 0.001)
        at = healthy_at(inst, desired.checked, update.min_healthy_time)
        if at is not None:
            plan.wake(at)
    updated = len(current) + len(created)
    remaining = any(
        i.version != version and table.status[i.id] != InstanceStatus.LOST for i in table.instances
    )
    if not created and not remaining and len(healthy) == replicas:
        state = (
            RolloutState.ROLLED_BACK
            if rollout.state == RolloutState.ROLLING_BACK
            else RolloutState.COMPLETE
        )
        message = (
            f"rolled back to version {version} ({replicas} healthy) after: {rollout.reason}"
            if state == RolloutState.ROLLED_BACK
            else f"version {version} is running: {replicas} healthy"
        )
        plan.rollout = dataclasses.replace(
            rollout,
            state=state,
            message=message,
            desired=replicas,
            updated=updated,
            healthy=len(healthy),
        )
        plan.stable = version
        plan.events.append((f"deployment.{state}", message))
        return created
    counted = rollout.with_counts(replicas, updated, len(healthy))
    if counted is not rollout or plan.rollout is not None:
        plan.rollout = counted
    return created


def _unready(desired: Desired, current: list[Observed], now: float) -> list[Observed]:
    """The instances of ``current`` that are not healthy (yet)."""
    checked, min_time = desired.checked, desired.update.min_healthy_time
    return [i for i in current if not is_healthy(i, checked, min_time, now)]


def _fail(desired: Desired, rollout: Rollout, inst: Observed, plan: Plan) -> None:
    """A batch missed its deadline: pause, or roll back to the last stable version."""
    version, update = desired.version, desired.update
    detail = inst.health if inst.health != Health.NONE else inst.status
    why = (
        f"instance {inst.index} of version {version} not healthy within "
        f"{update.healthy_deadline:g} s ({detail})"
    )
    target = max((v for v in desired.stable if v != version), default=None)
    if (
        update.on_failure == OnFailure.ROLLBACK
        and rollout.state == RolloutState.RUNNING
        and target is not None
    ):
        message = f"{why}: rolling back to version {target}"
        plan.revert_to = target
        plan.rollout = Rollout(
            version=target,
            state=RolloutState.ROLLING_BACK,
            desired=desired.replicas,
            message=message,
            started_at=rollout.started_at,
            failed_version=version,
            reason=why,
        )
        plan.events.append(("deployment.rolling_back", message))
        return
    if update.on_failure == OnFailure.ROLLBACK and rollout.state == RolloutState.RUNNING:
        why = f"{why}; no stable version to roll back to"
    plan.rollout = dataclasses.replace(rollout, state=RolloutState.PAUSED, message=why, reason=why)
    plan.events.append(("deployment.paused", f"rollout paused: {why}"))


def _stopping(table: _Table, inst: Observed, version: int) -> bool:
    """Whether ``inst`` is an instance of an older version on its way out (a stop to come or
    in flight), rather than one forgotten at once."""
    status = table.status[inst.id]
    return (
        not table.wanted[inst.id]
        and inst.version != version
        and status != InstanceStatus.LOST
        and inst.node_id is not None
        and not (status == InstanceStatus.PENDING and inst.id not in table.tasks)
    )


def _old_order(inst: Observed) -> tuple[bool, int]:
    """Old instances not running go first, then by index."""
    return (inst.status == InstanceStatus.RUNNING, inst.index)


def _replaced(inst: Observed, version: int) -> str:
    return f"instance {inst.index} (version {inst.version}) is replaced by version {version}"


def _create(desired: Desired, table: _Table, count: int) -> list[Create]:
    """``count`` new instances of the current version, at the indexes they replace first."""
    if count <= 0:
        return []
    version = desired.version
    taken = {i.index for i in table.instances if table.wanted[i.id] and i.version == version}
    held = sorted(
        {i.index for i in table.instances if table.wanted[i.id] and i.version != version} - taken
    )
    held_set = set(held)
    held.reverse()  # (popped from the end: lowest first)
    created = []
    scan = 0  # every index below is taken or held (both only grow here)
    for _ in range(count):
        while scan in taken or scan in held_set:
            scan += 1
        # A free index within the replicas first (the one a stopped instance left); else
        # the index of an old instance this one replaces; else the next free one.
        index = held.pop() if scan >= desired.replicas and held else scan
        taken.add(index)
        created.append(Create(index, version))
    table.plan.actions.extend(created)
    return created


# --- 4. restarts -------------------------------------------------------------------------


def restart_wait(inst: Observed, policy: Restarts, now: float, *, failed: bool) -> float | None:
    """Seconds until ``inst`` is due to start again (0 or less: now; None: never).

    ``failed``: it failed (an error, an exit with a non-zero code, an unhealthy check);
    ``on-failure`` restarts only those. The backoff counts from ``stopped_at`` (``now`` when
    not noted yet).
    """
    if policy.mode == "never" or (policy.mode == "on-failure" and not failed):
        return None
    if policy.max_restarts is not None and inst.restarts >= policy.max_restarts:
        return None
    since = inst.stopped_at or now
    return since + min(policy.backoff * 2.0**inst.restarts, MAX_RESTART_DELAY) - now


def _restart(desired: Desired, table: _Table, now: float) -> None:
    plan = table.plan
    rollout = plan.rollout or desired.rollout
    waited_for = rollout is not None and rollout.active
    for inst in table.instances:
        if not table.wanted[inst.id] or inst.id in table.tasks:
            continue
        status = table.status[inst.id]
        if status in (InstanceStatus.STOPPED, InstanceStatus.ERROR):
            failed = status == InstanceStatus.ERROR or inst.exit_code != 0
            why = "after an error" if status == InstanceStatus.ERROR else "after an exit"
            running = False
        elif status == InstanceStatus.RUNNING and inst.health == Health.UNHEALTHY:
            if waited_for and inst.version == desired.version and not inst.ever_healthy:
                continue  # the batch a rollout waits for: its deadline decides
            failed, why, running = True, "(unhealthy)", True
        else:
            continue
        wait = restart_wait(inst, desired.restarts, now, failed=failed)
        if wait is None:
            continue
        if inst.stopped_at == 0.0:
            plan.actions.append(NoteStopped(inst.id))
        if wait > 0:
            plan.wake(now + wait)
            continue
        message = f"instance {inst.index}: restart {inst.restarts + 1} {why}"
        plan.actions.append(Restart(inst.id, message, running=running))


# --- 5, 6. placement and stops -----------------------------------------------------------


def _place(table: _Table, created: Sequence[Create]) -> None:
    plan = table.plan
    for inst in table.instances:
        if (
            table.wanted[inst.id]
            and table.status[inst.id] == InstanceStatus.PENDING
            and inst.id not in table.tasks
        ):
            if inst.node_id is not None:
                plan.actions.append(Deploy(inst.id))  # placed before a server restart
            else:
                plan.place = True
    plan.place = plan.place or bool(created)


def _stop_unwanted(desired: Desired, table: _Table) -> int:
    """Stop or forget what is not wanted; the count forgotten."""
    forgotten = 0
    for inst in table.instances:
        if table.wanted[inst.id]:
            continue
        status = table.status[inst.id]
        task = table.tasks.get(inst.id)
        if task == STOP:
            continue
        if inst.node_id is None or (status == InstanceStatus.PENDING and task is None):
            table.plan.actions.append(Forget(inst.id, f"instance {inst.index} removed"))
        elif status == InstanceStatus.LOST and not desired.deleted:
            continue  # nobody can stop it now; its node will report it when back
        elif status == InstanceStatus.LOST:
            table.plan.actions.append(
                Forget(inst.id, f"instance {inst.index} forgotten (node lost)")
            )
        else:
            table.plan.actions.append(Stop(inst.id))
            continue
        forgotten += 1
    return forgotten


# --- nodes -------------------------------------------------------------------------------


def node_lost(
    instances: Iterable[Observed],
    tasks: Mapping[str, str],
    node_id: str,
    *,
    removed: bool,
    lost_after: float,
    now: float,
) -> Plan:
    """What a node's loss (or removal) means for the instances on it.

    A task in flight there is abandoned (nobody will run it); a stop's instance is
    forgotten. A removed node's instances are forgotten at once (it will not come back nor
    report them). Otherwise a wanted instance is ``unknown`` for ``lost_after`` seconds (0:
    ``lost`` at once); an instance already lost stays so.
    """
    plan = Plan()
    for inst in instances:
        if inst.node_id != node_id or (inst.status == InstanceStatus.LOST and not removed):
            continue
        task = tasks.get(inst.id)
        if task is not None:
            plan.actions.append(
                Abandon(inst.id, f"node {node_id} was {'removed' if removed else 'lost'}")
            )
            if task == STOP:
                plan.actions.append(
                    Forget(inst.id, f"instance {inst.index} left with node {node_id}")
                )
                continue
        if removed:
            plan.actions.append(
                Forget(inst.id, f"instance {inst.index} lost: node {node_id} was removed")
            )
        elif lost_after > 0 and inst.desired:
            plan.actions.append(
                MarkUnknown(
                    inst.id,
                    f"instance {inst.index}: node {node_id} unreachable, waiting {lost_after:g} s",
                )
            )
            plan.wake(now + lost_after)
        else:
            plan.actions.append(Lose(inst.id, f"instance {inst.index} lost with node {node_id}"))
    return plan


def node_drained(instances: Iterable[Observed], node_id: str) -> Plan:
    """A drained node's wanted instances are retired (the count then places them elsewhere)."""
    plan = Plan()
    for inst in instances:
        if inst.node_id == node_id and inst.desired:
            plan.actions.append(
                Retire(inst.id, "instance.draining", f"instance {inst.index} leaves drained node")
            )
    return plan


__all__ = [
    "LIVE",
    "Desired",
    "Restarts",
    "node_drained",
    "node_lost",
    "reconcile",
    "restart_wait",
]
