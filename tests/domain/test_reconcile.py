"""The reconciler's rules, one table each: counts, node loss, restarts, drain, adoption and
every rollout case. Pure: no clock, no store, no actors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

import pytest

from knit.domain.plan import (
    Abandon,
    Action,
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
from knit.domain.reconcile import (
    MAX_RESTART_DELAY,
    Desired,
    Restarts,
    node_drained,
    node_lost,
    reconcile,
    restart_wait,
)
from knit.domain.rollout import Rollout, Update, is_healthy
from knit.domain.specs import RolloutState
from knit.domain.update_policy import OnFailure, UpdateOrder
from tests.support.observed import Inst

pytestmark = pytest.mark.unit

A = TypeVar("A", bound=Action)
NOW = 1_000.0
DONE = Rollout(version=1, state=RolloutState.COMPLETE)


def running(n: int, version: int = 1, **kw: object) -> list[Inst]:
    return [Inst(id=f"v{version}-{i}", index=i, version=version, **kw) for i in range(n)]  # type: ignore[arg-type]


def want(replicas: int, **kw: object) -> Desired:
    kw.setdefault("rollout", DONE)
    return Desired(replicas=replicas, **kw)  # type: ignore[arg-type]


def kinds(plan: Plan) -> list[str]:
    return [type(a).__name__ for a in plan.actions]


def of(plan: Plan, kind: type[A]) -> list[A]:
    return [a for a in plan.actions if isinstance(a, kind)]


def run(
    desired: Desired, insts: Sequence[Inst], tasks: dict[str, str] | None = None, now: float = NOW
) -> Plan:
    return reconcile(desired, insts, tasks or {}, now)


# --- counts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "have", "creates", "retires"),
    [
        (3, 3, 0, 0),
        (5, 3, 2, 0),
        (2, 3, 0, 1),
        (0, 3, 0, 3),
        (3, 0, 3, 0),
    ],
)
def test_the_count_creates_or_retires_until_replicas_hold_a_slot(
    replicas: int, have: int, creates: int, retires: int
) -> None:
    plan = run(want(replicas), running(have))
    assert len(of(plan, Create)) == creates
    assert len(of(plan, Retire)) == retires
    assert not of(plan, Restart)


def test_new_instances_take_the_lowest_free_indexes() -> None:
    insts = [Inst("a", index=0), Inst("b", index=2)]
    assert [a.index for a in of(run(want(4), insts), Create)] == [1, 3]


def test_surplus_retires_unplaced_then_not_running_then_the_newest() -> None:
    insts = [
        Inst("old", index=0, created_at=1.0),
        Inst("new", index=1, created_at=5.0),
        Inst("exited", index=2, status="stopped", exit_code=0, created_at=0.5),
        Inst("unplaced", index=3, status="pending", node_id=None, created_at=0.1),
    ]
    retired = [a.instance_id for a in of(run(want(1), insts), Retire)]
    assert retired == ["unplaced", "exited", "new"]


def test_a_surplus_of_older_versions_goes_before_the_current_one() -> None:
    insts = running(2, version=1) + running(2, version=2)
    plan = run(want(2, version=2, rollout=Rollout(2, RolloutState.PAUSED)), insts)
    assert {a.instance_id for a in of(plan, Retire)} == {"v1-0", "v1-1"}


def test_unwanted_instances_are_stopped_or_forgotten() -> None:
    insts = [
        Inst("stop-me", desired=False),
        Inst("stopping", desired=False),
        Inst("never-placed", desired=False, status="pending", node_id=None),
        Inst("lost", desired=False, status="lost"),
    ]
    plan = run(want(0), insts, tasks={"stopping": "stop"})
    assert of(plan, Stop) == [Stop("stop-me")]
    assert [a.instance_id for a in of(plan, Forget)] == ["never-placed"]


def test_a_deleted_deployment_retires_everything_and_is_purged_when_empty() -> None:
    plan = run(want(3, deleted=True), running(2))
    assert [type(a) for a in plan.actions] == [Retire, Retire, Stop, Stop]
    assert not plan.purge
    lost = [Inst("a", status="lost", desired=False), Inst("b", node_id=None, status="pending")]
    assert run(want(3, deleted=True), lost).purge
    assert run(want(3, deleted=True), []).purge


def test_placed_instances_waiting_for_their_task_get_it_and_unplaced_ones_are_placed() -> None:
    insts = [Inst("placed", status="pending"), Inst("unplaced", status="pending", node_id=None)]
    plan = run(want(2), insts)
    assert of(plan, Deploy) == [Deploy("placed")]
    assert plan.place
    assert not run(want(2), insts, tasks={"unplaced": "deploy", "placed": "deploy"}).place


# --- node loss and lost_after ------------------------------------------------------------


@pytest.mark.parametrize(
    ("removed", "lost_after", "expected"),
    [(False, 0.0, Lose), (False, 30.0, MarkUnknown), (True, 30.0, Forget)],
)
def test_a_lost_node_makes_its_instances_unknown_lost_or_forgotten(
    removed: bool, lost_after: float, expected: type
) -> None:
    insts = [Inst("here"), Inst("elsewhere", node_id="n2")]
    plan = node_lost(insts, {}, "n1", removed=removed, lost_after=lost_after, now=NOW)
    assert [type(a) for a in plan.actions] == [expected]
    assert not isinstance(plan.actions[0], Create) and plan.actions[0].instance_id == "here"
    assert plan.wake_at == (NOW + lost_after if expected is MarkUnknown else None)


def test_a_lost_node_abandons_its_tasks_and_forgets_instances_being_stopped() -> None:
    insts = [Inst("deploying", status="pending"), Inst("stopping", desired=False)]
    plan = node_lost(
        insts,
        {"deploying": "deploy", "stopping": "stop"},
        "n1",
        removed=False,
        lost_after=0,
        now=NOW,
    )
    assert kinds(plan) == ["Abandon", "Lose", "Abandon", "Forget"]
    assert isinstance(plan.actions[0], Abandon) and "lost" in plan.actions[0].reason


def test_an_instance_already_lost_stays_so_unless_its_node_is_removed() -> None:
    insts = [Inst("a", status="lost", desired=False)]
    assert node_lost(insts, {}, "n1", removed=False, lost_after=0, now=NOW).actions == []
    assert kinds(node_lost(insts, {}, "n1", removed=True, lost_after=0, now=NOW)) == ["Forget"]


@pytest.mark.parametrize(
    ("unknown_for", "lost"), [(10.0, False), (29.9, False), (30.0, True), (100.0, True)]
)
def test_unknown_instances_are_lost_after_lost_after_and_replaced(
    unknown_for: float, lost: bool
) -> None:
    insts = [Inst("u", status="unknown", unknown_since=NOW - unknown_for), Inst("b", index=1)]
    plan = run(want(2, lost_after=30.0), insts)
    assert bool(of(plan, Lose)) == lost
    assert len(of(plan, Create)) == (1 if lost else 0)
    if not lost:
        assert plan.wake_at == NOW - unknown_for + 30.0


def test_a_drained_node_retires_its_wanted_instances() -> None:
    insts = [Inst("a"), Inst("b", node_id="n2"), Inst("c", desired=False)]
    plan = node_drained(insts, "n1")
    assert plan.actions == [Retire("a", "instance.draining", "instance 0 leaves drained node")]


def test_after_a_drain_the_count_replaces_and_stops() -> None:
    insts = [Inst("a", desired=False), Inst("b", index=1, node_id="n2")]
    plan = run(want(2), insts)
    assert kinds(plan) == ["Create", "Stop"]


def test_adoption_a_lost_instance_back_with_its_node_is_counted_and_the_surplus_retired() -> None:
    # After its node came back, the original is running and wanted again (recovered): the
    # replacement made meanwhile (newest) is the surplus.
    insts = [Inst("original", created_at=1.0), Inst("replacement", created_at=50.0, node_id="n2")]
    plan = run(want(1), insts)
    assert of(plan, Retire)[0].instance_id == "replacement"


# --- restart policies --------------------------------------------------------------------


def test_the_wait_doubles_from_the_backoff_and_is_capped() -> None:
    policy = Restarts(mode="always", backoff=2.0)
    exited = Inst("a", status="stopped", exit_code=1, stopped_at=100.0)
    assert restart_wait(exited, policy, 100.0, failed=True) == 2.0
    three = dataclasses.replace(exited, restarts=3)
    assert restart_wait(three, policy, 100.0, failed=True) == 16.0
    many = dataclasses.replace(exited, restarts=20)
    assert restart_wait(many, policy, 100.0, failed=True) == MAX_RESTART_DELAY
    assert restart_wait(exited, policy, 103.0, failed=True) == -1.0


@pytest.mark.parametrize(
    ("mode", "status", "code", "restarts", "limit", "expected"),
    [
        ("always", "stopped", 0, 0, None, "Restart"),
        ("always", "stopped", 1, 0, None, "Restart"),
        ("on-failure", "stopped", 0, 0, None, None),
        ("on-failure", "stopped", 2, 0, None, "Restart"),
        ("on-failure", "error", None, 0, None, "Restart"),
        ("never", "stopped", 1, 0, None, None),
        ("never", "error", None, 0, None, None),
        ("always", "stopped", 1, 3, 3, None),
        ("always", "stopped", 1, 2, 3, "Restart"),
    ],
)
def test_exited_and_failed_instances_restart_as_the_policy_says(
    mode: str,
    status: str,
    code: int | None,
    restarts: int,
    limit: int | None,
    expected: str | None,
) -> None:
    inst = Inst("a", status=status, exit_code=code, restarts=restarts, stopped_at=NOW - 500)
    plan = run(want(1, restarts=Restarts(mode=mode, backoff=1.0, max_restarts=limit)), [inst])
    assert ("Restart" in kinds(plan)) == (expected == "Restart")
    assert not of(plan, Create)  # it holds its slot either way


def test_a_restart_waits_for_its_backoff_and_notes_when_it_stopped() -> None:
    inst = Inst("a", status="stopped", exit_code=1, restarts=1)
    plan = run(want(1, restarts=Restarts(backoff=5.0)), [inst])
    assert plan.actions == [NoteStopped("a")]
    assert plan.wake_at == NOW + 10.0


def test_an_instance_with_a_task_in_flight_is_not_restarted() -> None:
    inst = Inst("a", status="error", stopped_at=1.0)
    assert not of(run(want(1), [inst], tasks={"a": "deploy"}), Restart)


def test_an_unhealthy_instance_is_restarted_in_place_after_its_rollout() -> None:
    inst = Inst("a", health="unhealthy", stopped_at=NOW - 10)
    plan = run(want(1, checked=True), [inst])
    assert of(plan, Restart) == [Restart("a", "instance 0: restart 1 (unhealthy)", running=True)]
    never = run(want(1, checked=True, restarts=Restarts(mode="never")), [inst])
    assert not of(never, Restart)


def test_the_batch_a_rollout_waits_for_is_not_restarted_when_unhealthy() -> None:
    inst = Inst("a", version=2, health="unhealthy", ever_healthy=False, created_at=NOW - 5)
    rollout = Rollout(2, RolloutState.RUNNING, started_at=NOW - 5)
    plan = run(want(1, version=2, checked=True, rollout=rollout), [inst, *running(1)])
    assert not of(plan, Restart)


# --- health ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "health", "checked", "running_for", "healthy"),
    [
        ("running", "none", False, 9.0, False),
        ("running", "none", False, 10.0, True),
        ("running", "none", True, 100.0, False),  # a check's first result is awaited
        ("running", "starting", False, 100.0, False),  # the image's own check
        ("running", "healthy", True, 0.0, True),
        ("running", "unhealthy", True, 100.0, False),
        ("pending", "none", False, 100.0, False),
        ("stopped", "healthy", True, 100.0, False),
    ],
)
def test_healthy_means_running_and_passing_or_running_for_min_healthy_time(
    status: str, health: str, checked: bool, running_for: float, healthy: bool
) -> None:
    inst = Inst("a", status=status, health=health, running_since=NOW - running_for)
    assert is_healthy(inst, checked, 10.0, NOW) == healthy


# --- rollouts ----------------------------------------------------------------------------


def rolling(version: int = 2, **update: object) -> Desired:
    policy = Update(min_healthy_time=10.0, **update)  # type: ignore[arg-type]
    return Desired(
        replicas=3,
        version=version,
        update=policy,
        rollout=Rollout(version, RolloutState.RUNNING, started_at=NOW - 100),
        stable=frozenset({1}),
    )


def new(index: int, *, healthy: bool, version: int = 2, **kw: object) -> Inst:
    return Inst(
        f"new-{index}",
        index=index,
        version=version,
        running_since=NOW - (60.0 if healthy else 1.0),
        created_at=NOW - 1.0,
        ever_healthy=healthy,
        **kw,  # type: ignore[arg-type]
    )


def test_a_new_version_starts_a_rollout() -> None:
    desired = want(3, version=2)
    plan = run(desired, running(3))
    assert plan.rollout is not None
    assert (plan.rollout.version, plan.rollout.state) == (2, RolloutState.RUNNING)
    assert ("deployment.rollout", "rolling out version 2") in plan.events


def test_a_new_deployment_rolls_out_version_1_and_completes_when_healthy() -> None:
    first = run(Desired(replicas=2), [])
    assert first.rollout is not None and first.rollout.state == RolloutState.RUNNING
    assert len(of(first, Create)) == 2
    rollout = Rollout(1, RolloutState.RUNNING, started_at=NOW - 30)
    insts = running(2, running_since=NOW - 20, created_at=NOW - 30)
    done = run(Desired(replicas=2, rollout=rollout, update=Update(min_healthy_time=10)), insts)
    assert done.rollout is not None and done.rollout.state == RolloutState.COMPLETE
    assert done.stable == 1


def test_stop_first_retires_one_old_instance_and_creates_its_replacement_once_it_is_gone() -> None:
    plan = run(rolling(), running(3))
    assert kinds(plan) == ["Retire", "Stop"]
    assert of(plan, Retire)[0].instance_id == "v1-0"
    stopping = [Inst("v1-0", desired=False), *running(3)[1:]]
    # While it stops, nothing more: it holds its slot and counts in the batch.
    assert kinds(run(rolling(), stopping, tasks={"v1-0": "stop"})) == []
    gone = running(3)[1:]
    plan = run(rolling(), gone)
    assert kinds(plan) == ["Create"] and of(plan, Create) == [Create(0, 2)]
    assert plan.place


def test_stop_first_waits_for_the_batch_to_be_healthy_before_the_next() -> None:
    starting = [new(0, healthy=False), *running(3)[1:]]
    assert not of(run(rolling(), starting), Retire)
    ready = [new(0, healthy=True), *running(3)[1:]]
    assert [a.instance_id for a in of(run(rolling(), ready), Retire)] == ["v1-1"]


def test_max_parallel_sets_the_batch() -> None:
    plan = run(rolling(max_parallel=2), running(3))
    assert len(of(plan, Retire)) == 2
    plan = run(rolling(max_parallel=5), running(3))
    assert len(of(plan, Retire)) == 3


def test_start_first_creates_first_and_retires_once_the_new_one_is_healthy() -> None:
    desired = rolling(order=UpdateOrder.START_FIRST)
    plan = run(desired, running(3))
    assert kinds(plan) == ["Create"] and of(plan, Create) == [Create(0, 2)]
    starting = [new(0, healthy=False), *running(3)]
    assert kinds(run(desired, starting)) == []  # 4 hold slots; the batch is not healthy yet
    ready = [new(0, healthy=True), *running(3)]
    plan = run(desired, ready)
    assert [a.instance_id for a in of(plan, Retire)] == ["v1-0"]
    assert not of(plan, Create)  # the next one once v1-0 is gone: a surge of 1 at most


def test_start_first_surges_by_max_parallel_at_most() -> None:
    desired = rolling(order=UpdateOrder.START_FIRST)
    # new-0 is healthy and v1-0 is being stopped: the next batch waits until it is gone.
    stopping = [new(0, healthy=True), Inst("v1-0", desired=False), *running(3)[1:]]
    plan = run(desired, stopping, tasks={"v1-0": "stop"})
    assert not of(plan, Create) and not of(plan, Retire)
    gone = [new(0, healthy=True), *running(3)[1:]]
    assert of(run(desired, gone), Create) == [Create(1, 2)]


def test_start_first_fills_a_slot_an_old_instance_lost() -> None:
    desired = rolling(order=UpdateOrder.START_FIRST)
    starting = [new(0, healthy=False), *running(3)[1:]]  # v1-0 gone meanwhile
    assert len(of(run(desired, starting), Create)) == 0  # 3 hold slots, batch of 1 in flight
    lost = [new(0, healthy=False), running(3)[2]]  # and v1-1
    assert len(of(run(desired, lost), Create)) == 1


def test_a_rollout_completes_when_every_instance_runs_the_version_healthy() -> None:
    insts = [new(i, healthy=True) for i in range(3)]
    plan = run(rolling(), insts)
    assert plan.rollout is not None and plan.rollout.state == RolloutState.COMPLETE
    assert (plan.rollout.updated, plan.rollout.healthy, plan.rollout.desired) == (3, 3, 3)
    assert plan.stable == 2
    stopping = [*insts, Inst("v1-2", index=2, desired=False)]
    waiting = run(rolling(), stopping, tasks={"v1-2": "stop"})
    assert waiting.stable is None  # not complete while an old instance is still stopping
    assert waiting.rollout is None or waiting.rollout.state == RolloutState.RUNNING


def test_the_rollout_counts_are_kept_current() -> None:
    insts = [new(0, healthy=True), new(1, healthy=False), running(3)[2]]
    plan = run(rolling(), insts)
    assert plan.rollout is not None
    assert (plan.rollout.desired, plan.rollout.updated, plan.rollout.healthy) == (3, 2, 1)


@pytest.mark.parametrize(
    ("on_failure", "stable", "state", "revert_to"),
    [
        (OnFailure.PAUSE, {1}, RolloutState.PAUSED, None),
        (OnFailure.ROLLBACK, {1}, RolloutState.ROLLING_BACK, 1),
        (OnFailure.ROLLBACK, set(), RolloutState.PAUSED, None),
    ],
)
def test_a_batch_not_healthy_within_the_deadline_pauses_or_rolls_back(
    on_failure: OnFailure, stable: set[int], state: RolloutState, revert_to: int | None
) -> None:
    desired = dataclasses.replace(
        rolling(on_failure=on_failure, healthy_deadline=30.0), stable=frozenset(stable)
    )
    late = Inst("new-0", version=2, health="unhealthy", created_at=NOW - 31, ever_healthy=False)
    insts = [late, *running(3)[1:]]
    plan = run(desired, insts)
    assert plan.rollout is not None and plan.rollout.state == state
    assert plan.revert_to == revert_to
    assert "not healthy within 30 s (unhealthy)" in plan.rollout.message
    assert not of(plan, Create) and not of(plan, Retire)
    in_time = [dataclasses.replace(late, created_at=NOW - 29), *running(3)[1:]]
    plan = run(desired, in_time)
    assert plan.rollout is None or plan.rollout.state == RolloutState.RUNNING
    assert plan.wake_at == pytest.approx(NOW + 1, abs=0.01)


def test_rolling_back_replaces_the_failed_version_and_ends_rolled_back() -> None:
    rollout = Rollout(
        1, RolloutState.ROLLING_BACK, started_at=NOW - 60, failed_version=2, reason="why"
    )
    desired = Desired(replicas=3, version=1, rollout=rollout, stable=frozenset({1}))
    failed = Inst("bad", index=0, version=2, health="unhealthy", ever_healthy=False)
    plan = run(desired, [failed, *running(3)[1:]])
    assert [a.instance_id for a in of(plan, Retire)] == ["bad"]
    plan = run(desired, running(3, running_since=NOW - 60))
    assert plan.rollout is not None and plan.rollout.state == RolloutState.ROLLED_BACK
    assert plan.rollout.message == "rolled back to version 1 (3 healthy) after: why"


def test_a_failed_rollback_pauses() -> None:
    rollout = Rollout(1, RolloutState.ROLLING_BACK, started_at=NOW - 400, failed_version=2)
    desired = Desired(
        replicas=1,
        version=1,
        rollout=rollout,
        stable=frozenset({1}),
        update=Update(on_failure=OnFailure.ROLLBACK, healthy_deadline=30),
    )
    plan = run(desired, [Inst("a", status="pending", ever_healthy=False, created_at=NOW - 40)])
    assert plan.rollout is not None and plan.rollout.state == RolloutState.PAUSED


def test_a_paused_rollout_replaces_nothing_but_scale_adds_the_current_version() -> None:
    paused = Rollout(2, RolloutState.PAUSED, message="x")
    insts = [new(0, healthy=False), *running(3)[1:]]
    assert run(Desired(replicas=3, version=2, rollout=paused), insts).actions == []
    plan = run(Desired(replicas=5, version=2, rollout=paused), insts)
    assert [a.version for a in of(plan, Create)] == [2, 2]


def test_scaling_down_during_a_rollout_retires_old_instances_first() -> None:
    desired = dataclasses.replace(rolling(), replicas=2)
    insts = [new(0, healthy=True), *running(3)[1:]]
    retired = [a.instance_id for a in of(run(desired, insts), Retire)]
    assert retired[0] == "v1-1"


def test_old_instances_restart_with_their_version_during_a_paused_rollout() -> None:
    paused = Rollout(2, RolloutState.PAUSED)
    old = Inst("v1-1", index=1, status="stopped", exit_code=1, stopped_at=NOW - 60)
    plan = run(Desired(replicas=2, version=2, rollout=paused), [new(0, healthy=True), old])
    assert of(plan, Restart) == [Restart("v1-1", "instance 1: restart 1 after an exit")]


def test_the_reconciler_does_not_change_its_inputs() -> None:
    insts = running(3)
    snapshot = list(insts)
    run(rolling(), insts)
    assert insts == snapshot
