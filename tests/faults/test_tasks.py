"""Tasks that are not taken: a node that heartbeats but never accepts a task, an agent frozen
while its task is re-published, a task that fails.

A TaskActor that gets no acceptance re-publishes the same task id with exponential backoff,
then fails over to another node; the agent runs a task id once however often it arrives; a
task that fails ends ``failed`` with its reason, shown by the API. No task waits forever.
The server runs with ``KNIT_TASK_ACCEPT_TIMEOUT=0.5`` (default 3 s) so that four attempts
take 7.5 s instead of 45 s.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from tests.support.knit_faults import (
    TASK_ACCEPT_ENV,
    FaultEnv,
    MuteNode,
    event_time,
    fault_cluster,
    kinds_of,
    sleeper_spec,
)

pytestmark = pytest.mark.e2e

ACCEPT = 0.5
ATTEMPTS = 4
GIVE_UP = sum(ACCEPT * 2**n for n in range(ATTEMPTS))
"""Seconds from the first publication to giving up: 0.5 + 1 + 2 + 4."""


def scenario_task_failover(env: FaultEnv) -> None:
    """One of three replicas is placed on a node that never accepts: after four attempts it
    is placed on another node and runs there."""
    server_env = {TASK_ACCEPT_ENV: str(ACCEPT)}
    with fault_cluster(env, "task-failover", agents=2, server_env=server_env) as knit:
        with MuteNode(knit.server.api_url, knit.join_token(), {}) as mute:
            knit.api.wait(
                lambda: any(
                    n["id"] == mute.node_id and n["status"] == "healthy" for n in knit.api.nodes()
                ),
                timeout=10,
                what="the mute node healthy",
            )
            created = knit.create_deployment(sleeper_spec("failover", 3))
            deployment_id = created["id"]
            failed = knit.wait_event(
                "task.failed", deployment_id=deployment_id, timeout=GIVE_UP + 10
            )
            assert failed["node_id"] == mute.node_id
            assert f"not accepted after {ATTEMPTS} attempts" in failed["message"]
            instance_id = failed["instance_id"]
            running_at, live = knit.wait_exact(deployment_id, 3, timeout=20, steady=1.0)
            assert mute.node_id not in {c.node_id for c in live}
            events = knit.check_events_explain(deployment_id)
            mine = [e for e in events if e.get("task_id") == failed["task_id"]]
            kinds = kinds_of(reversed(mine))
            assert kinds == [
                "task.published",
                *["task.retried"] * (ATTEMPTS - 1),
                "task.failed",
            ], kinds
            published = event_time(mine[-1])
            gaps = [event_time(b) - event_time(a) for a, b in pairwise(mine[::-1])]
            for gap, want in zip(gaps, [ACCEPT * 2**n for n in range(ATTEMPTS)], strict=True):
                assert want * 0.8 <= gap <= want + 1.5, ("backoff", gaps)
            instance_kinds = [e["kind"] for e in events if e.get("instance_id") == instance_id]
            assert "task.unaccepted" in instance_kinds, instance_kinds
        env.figures.record(
            "task-failover",
            give_up_s=event_time(failed) - published,
            failover_running_s=running_at - event_time(failed),
        )


def scenario_task_redelivery(env: FaultEnv) -> None:
    """A frozen agent gets the same task three times: it runs it once. A task that cannot
    succeed ends failed, with its reason on the instance and in the events."""
    server_env = {TASK_ACCEPT_ENV: str(ACCEPT)}
    with fault_cluster(env, "task-redelivery", agents=2, server_env=server_env, node_ttl=6) as knit:
        frozen = knit.agents[0]
        frozen_at = knit.sigstop(frozen)
        created = knit.create_deployment(sleeper_spec("once", 2))
        deployment_id = created["id"]
        time.sleep(max(0.0, frozen_at + 2.5 - time.time()))  # three publications meanwhile
        knit.sigcont(frozen)
        _, live = knit.wait_exact(deployment_id, 2, timeout=20, steady=1.5)
        assert frozen.node_id in {c.node_id for c in live}
        assert len(knit.seen[deployment_id].containers) == 2, "each task ran once"
        events = knit.check_events_explain(deployment_id)
        on_frozen = [e for e in events if e["kind"] == "task.accepted"]
        task_ids = {e["task_id"] for e in on_frozen if e["node_id"] == frozen.node_id}
        assert len(task_ids) == 1, on_frozen
        (task_id,) = task_ids
        kinds = kinds_of(e for e in events if e.get("task_id") == task_id)
        assert kinds.count("task.retried") >= 2 and kinds.count("task.accepted") == 1, kinds
        assert kinds.count("task.succeeded") == 1, kinds

        spec = sleeper_spec("absent", 1)
        spec["image"] = "127.0.0.1:9/knit/absent:1"  # nothing listens there: the pull fails
        submitted = time.time()
        failing = knit.create_deployment(spec)["id"]
        failed = knit.wait_event("task.failed", deployment_id=failing, timeout=30)
        assert "pull" in failed["message"], failed
        [inst] = knit.api.wait_instances(failing, "error", timeout=10)
        assert inst["error"] and inst["error"].startswith("pull:"), inst
        assert not knit.containers(failing)
        env.figures.record(
            "task-redelivery",
            retries=kinds.count("task.retried"),
            failed_after_s=event_time(failed) - submitted,
        )


def test_a_task_nobody_accepts_fails_over_to_another_node(fault_env: FaultEnv) -> None:
    scenario_task_failover(fault_env)


def test_a_redelivered_task_runs_once_and_a_failing_one_ends_with_its_reason(
    fault_env: FaultEnv,
) -> None:
    scenario_task_redelivery(fault_env)


SCENARIOS = [scenario_task_failover, scenario_task_redelivery]
