"""A node's Docker Engine restarted under its agent: a ``dockerd`` of the test's own (its own
data root, in its own network namespace) stopped with SIGTERM, as a service manager does (it
stops its containers), and started again.

The agent's event stream breaks; it reconnects with backoff, lists its containers again and
reports them exited; the restart policy (``always``) starts the very same containers again.
The node stays healthy throughout: its heartbeats never depended on the Engine.
"""

from __future__ import annotations

import time

import pytest

from tests.support import require
from tests.support.knit_faults import (
    FaultEnv,
    PrivateEngine,
    fault_cluster,
    kinds_of,
    private_engine,
    sleeper_spec,
    started_at,
)

pytestmark = pytest.mark.e2e

REPLICAS = 2


def scenario_engine_restart(env: FaultEnv) -> None:
    """Restart the Engine of the node running the deployment; time the recovery."""
    with (
        private_engine() as engine,
        fault_cluster(env, "engine-restart", agents=1) as knit,
    ):
        agent = knit.add_agent_on(engine.docker_host, {"engine": "private"})
        created = knit.create_deployment(
            sleeper_spec(
                "engine",
                REPLICAS,
                node_selector={"engine": "private"},
                restart_policy={"mode": "always", "backoff": 0.2},
            )
        )
        deployment_id = created["id"]
        _, before = knit.wait_exact(deployment_id, REPLICAS, timeout=60)
        assert {c.engine for c in before} == {engine.docker_host}
        starts = {c.id: started_at(c.engine, c.id) for c in before}

        down_at = time.time()
        engine.stop()
        stopped_at = time.time()
        engine.start()
        up_at = time.time()
        recovered_at, after = knit.wait_exact(deployment_id, REPLICAS, timeout=30, steady=1.5)
        assert sorted(c.id for c in after) == sorted(starts), "the same containers"
        assert all(started_at(c.engine, c.id) != starts[c.id] for c in after), "started again"
        kinds = kinds_of(knit.check_events_explain(deployment_id))
        # Restarts asked while the Engine was shutting down fail and are tried again.
        assert kinds.count("instance.exited") == REPLICAS, kinds
        assert kinds.count("instance.restarting") >= REPLICAS, kinds
        assert "node.unhealthy" not in kinds_of(knit.events(node_id=agent.node_id))
        env.figures.record(
            "engine-restart",
            engine_down_s=up_at - down_at,
            engine_stop_s=stopped_at - down_at,
            recover_s=recovered_at - up_at,
        )


def test_an_engine_restart_is_reconciled(fault_env: FaultEnv) -> None:
    problem = PrivateEngine.problem()
    require(problem is None, f"cannot run a private Docker Engine: {problem}")
    scenario_engine_restart(fault_env)


SCENARIOS = [scenario_engine_restart]
