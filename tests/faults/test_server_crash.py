"""The server killed with SIGKILL in the middle of a deployment of 10 replicas, then started
again on the same database.

Every actor is rebuilt from SQLite; nodes get a grace period before their deadlines count, so
none is declared lost because the server was away; the accepted deployment converges to
exactly 10 containers. Containers the server never learnt about (their rows were not written
when it died) are removed as orphans, the rest are adopted: none is duplicated.
"""

from __future__ import annotations

import time

import pytest

from tests.support.knit_faults import (
    FaultEnv,
    fault_cluster,
    kinds_of,
    measure,
    sleeper_spec,
)

pytestmark = pytest.mark.e2e

REPLICAS = 10


def scenario_server_sigkill(env: FaultEnv) -> None:
    """SIGKILL the server as soon as the deployment's first container exists."""
    with fault_cluster(env, "server-sigkill", agents=2) as knit:
        created = knit.create_deployment(sleeper_spec("crash", REPLICAS))
        deployment_id = created["id"]
        _, started = measure(
            lambda: knit.containers(deployment_id), timeout=30, what="a first container"
        )
        knit.sigkill(knit.server)
        running_at_kill = sum(c.running for c in knit.containers(deployment_id))
        assert running_at_kill < REPLICAS, "the kill came too late to be mid-deployment"
        time.sleep(1.0)  # the agents go on alone: their tasks finish, nobody hears
        restarted_at = time.time()
        knit.restart(knit.server)
        api_at = time.time()
        converged_at, _ = knit.wait_exact(deployment_id, REPLICAS, timeout=60, steady=2.0)
        assert "node.unhealthy" not in kinds_of(knit.events()), "no node blamed for the crash"
        knit.check_events_explain(deployment_id)
        env.figures.record(
            "server-sigkill",
            containers_at_kill=len(started),
            running_at_kill=running_at_kill,
            api_up_s=api_at - restarted_at,
            converge_s=converged_at - api_at,
            containers_seen=len(knit.seen[deployment_id].containers),
        )


def test_a_server_killed_mid_deployment_converges_after_restart(fault_env: FaultEnv) -> None:
    scenario_server_sigkill(fault_env)


SCENARIOS = [scenario_server_sigkill]
