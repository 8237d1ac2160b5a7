"""Node loss: an agent killed with SIGKILL, then started again.

The dead node's containers keep running in Docker (the Engine is shared and nobody is left to
stop them), so until its agent is back the right count leaves that node out: exactly
``replicas`` containers run on the other nodes. Once the agent is back, the server keeps the
originals and stops the replacements, and Docker holds exactly ``replicas`` containers.
"""

from __future__ import annotations

import time

import pytest

from tests.support.knit_faults import (
    FaultEnv,
    event_time,
    fault_cluster,
    kinds_of,
    sleeper_spec,
)
from tests.support.knit_processes import NODE_TTL

pytestmark = pytest.mark.e2e

REPLICAS = 4


def scenario_agent_sigkill(env: FaultEnv) -> None:
    """SIGKILL an agent: its node is unhealthy within the TTL, its instances are lost and
    replaced on the others at once; when the agent comes back, the originals stay and the
    replacements go."""
    with fault_cluster(env, "agent-sigkill", agents=3) as knit:
        created = knit.create_deployment(sleeper_spec("loss", REPLICAS))
        deployment_id = created["id"]
        _, before = knit.wait_exact(deployment_id, REPLICAS, timeout=60)
        per_node: dict[str, int] = {}
        for container in before:
            per_node[container.node_id] = per_node.get(container.node_id, 0) + 1
        victim = max(per_node, key=lambda n: per_node[n])
        originals = {c.id for c in before if c.node_id == victim}
        agent = knit.agent_of(victim)

        killed_at = knit.sigkill(agent)
        unhealthy = knit.wait_event(
            "node.unhealthy", node_id=victim, after=killed_at, timeout=NODE_TTL + 10
        )
        detected_at = event_time(unhealthy)
        replaced_at, live = knit.wait_exact(
            deployment_id, REPLICAS, stale_nodes=[victim], timeout=30, steady=1.0
        )
        assert not {c.id for c in live} & originals
        assert knit.node_status(victim) == "unhealthy"
        kinds = kinds_of(knit.events(deployment_id=deployment_id))
        assert kinds.count("instance.lost") == len(originals), kinds

        restarted_at = time.time()
        knit.restart(agent)
        settled_at, final = knit.wait_exact(deployment_id, REPLICAS, timeout=30, steady=2.0)
        assert originals <= {c.id for c in final}, "the originals must be kept"
        assert knit.node_status(victim) == "healthy"
        events = knit.check_events_explain(deployment_id)
        kinds = kinds_of(events)
        assert kinds.count("instance.recovered") == len(originals), kinds
        assert kinds.count("instance.surplus") == len(originals), kinds
        node_kinds = kinds_of(knit.events(node_id=victim))
        assert "node.unhealthy" in node_kinds and "node.healthy" in node_kinds, node_kinds

        env.figures.record(
            "agent-sigkill",
            detect_s=detected_at - killed_at,
            replace_s=replaced_at - detected_at,
            lost=len(originals),
            back_settle_s=settled_at - restarted_at,
        )


def scenario_agent_sigkill_mid_deploy(env: FaultEnv) -> None:
    """SIGKILL an agent while it runs its deploy tasks: the tasks it accepted are abandoned
    when its node is declared lost (not left to their 11-minute run deadline), and every
    replica runs on the other node."""
    with fault_cluster(env, "agent-sigkill-mid-deploy", agents=2) as knit:
        replicas = 6
        deployment_id = knit.create_deployment(sleeper_spec("middeploy", replicas))["id"]
        victim, agent = knit.agents[0].node_id, knit.agents[0]
        assert victim is not None
        knit.api.wait(
            lambda: any(c.node_id == victim for c in knit.containers(deployment_id)),
            timeout=30,
            what="a first container on the victim",
        )
        killed_at = knit.sigkill(agent)
        unhealthy = knit.wait_event(
            "node.unhealthy", node_id=victim, after=killed_at, timeout=NODE_TTL + 10
        )
        replaced_at, live = knit.wait_exact(
            deployment_id, replicas, stale_nodes=[victim], timeout=30, steady=1.0
        )
        assert {c.node_id for c in live} == {knit.agents[1].node_id}
        events = knit.events(deployment_id=deployment_id)
        abandoned = [e for e in events if e["kind"] == "task.failed" and "lost" in e["message"]]
        env.figures.record(
            "agent-sigkill-mid-deploy",
            detect_s=event_time(unhealthy) - killed_at,
            replace_s=replaced_at - event_time(unhealthy),
            abandoned_tasks=len(abandoned),
        )


def test_a_killed_agent_is_replaced_and_its_originals_win_when_it_returns(
    fault_env: FaultEnv,
) -> None:
    scenario_agent_sigkill(fault_env)


def test_an_agent_killed_mid_deployment_leaves_no_replica_waiting(fault_env: FaultEnv) -> None:
    scenario_agent_sigkill_mid_deploy(fault_env)


SCENARIOS = [scenario_agent_sigkill, scenario_agent_sigkill_mid_deploy]
