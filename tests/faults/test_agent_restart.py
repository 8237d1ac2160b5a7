"""Agent restarts: stopped (SIGTERM) or killed (SIGKILL) and started again with the same data
dir, within the node TTL. On start the agent lists the containers labelled with its node id,
reports them and resumes them: no container is created twice, none the server wants is
stopped, and one that exited while the agent was away is started again by its policy.
"""

from __future__ import annotations

import time

import pytest

from tests.support.docker import docker
from tests.support.knit_faults import (
    FaultEnv,
    fault_cluster,
    kinds_of,
    sleeper_spec,
    started_at,
)

pytestmark = pytest.mark.e2e

REPLICAS = 4
TTL = 6.0
"""Longer than an agent's start-up, so the node stays healthy through the restart."""


def scenario_agent_restart(env: FaultEnv) -> None:
    """SIGTERM then SIGKILL the same agent, restarting it each time; while it is down after
    the SIGKILL, one of its containers is killed behind its back."""
    with fault_cluster(env, "agent-restart", agents=2, node_ttl=TTL) as knit:
        created = knit.create_deployment(
            sleeper_spec("resume", REPLICAS, restart_policy={"mode": "always", "backoff": 0.2})
        )
        deployment_id = created["id"]
        _, before = knit.wait_exact(deployment_id, REPLICAS, timeout=60)
        ids = sorted(c.id for c in before)
        victim = before[0].node_id
        agent = knit.agent_of(victim)

        stopped_at = time.time()
        knit.unwatch(agent)
        assert agent.stop() == 0
        knit.restart(agent)
        resumed_at, after = knit.wait_exact(deployment_id, REPLICAS, timeout=20, steady=1.0)
        assert sorted(c.id for c in after) == ids, "the same containers after a SIGTERM"
        term_s = resumed_at - stopped_at

        mine = next(c for c in after if c.node_id == victim)
        first_start = started_at(mine.engine, mine.id)
        killed_at = knit.sigkill(agent)
        docker("kill", mine.id, docker_host=mine.engine)
        knit.restart(agent)
        resumed_at, after = knit.wait_exact(deployment_id, REPLICAS, timeout=20, steady=1.5)
        assert sorted(c.id for c in after) == ids, "the same containers after a SIGKILL"
        assert started_at(mine.engine, mine.id) != first_start, "the exited one started again"

        assert ids == sorted(knit.seen[deployment_id].containers), "no container ever added"
        kinds = kinds_of(knit.check_events_explain(deployment_id))
        assert "instance.exited" in kinds and "instance.restarting" in kinds, kinds
        assert not {"instance.lost", "instance.unknown", "instance.removed"} & set(kinds), kinds
        assert "node.unhealthy" not in kinds_of(knit.events(node_id=victim))
        env.figures.record(
            "agent-restart",
            sigterm_resume_s=term_s,
            sigkill_resume_s=resumed_at - killed_at,
        )


def test_a_restarted_agent_resumes_its_containers(fault_env: FaultEnv) -> None:
    scenario_agent_restart(fault_env)


SCENARIOS = [scenario_agent_restart]
