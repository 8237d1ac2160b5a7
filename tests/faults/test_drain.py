"""Drain: ``POST /nodes/{id}/drain`` moves the node's instances to the other nodes and nothing
new is placed there; ``POST /nodes/{id}/eligible`` undoes it (nothing moves back, new work may
go there again).
"""

from __future__ import annotations

import time

import pytest

from tests.support.knit_faults import (
    FaultEnv,
    fault_cluster,
    kinds_of,
    sleeper_spec,
)

pytestmark = pytest.mark.e2e

REPLICAS = 4


def scenario_drain(env: FaultEnv) -> None:
    """Drain the node holding most instances, deploy more, make it eligible again."""
    with fault_cluster(env, "drain", agents=3) as knit:
        deployment_id = knit.create_deployment(sleeper_spec("drain", REPLICAS))["id"]
        _, before = knit.wait_exact(deployment_id, REPLICAS, timeout=60)
        drained = before[0].node_id
        moved = {c.id for c in before if c.node_id == drained}

        drained_at = time.time()
        node = knit.api.ok(knit.api.post(f"/nodes/{drained}/drain", {}), 200)
        assert node["eligible"] is False
        moved_at, live = knit.wait_exact(deployment_id, REPLICAS, timeout=30, steady=1.0)
        assert drained not in {c.node_id for c in live}
        assert not moved & {c.id for c in live}
        more = knit.create_deployment(sleeper_spec("more", 3))["id"]
        _, extra = knit.wait_exact(more, 3, timeout=60)
        assert drained not in {c.node_id for c in extra}, "nothing new on a drained node"
        kinds = kinds_of(knit.check_events_explain(deployment_id))
        assert kinds.count("instance.draining") == len(moved), kinds
        assert "node.drained" in kinds_of(knit.events(node_id=drained))

        node = knit.api.ok(knit.api.post(f"/nodes/{drained}/eligible", {}), 200)
        assert node["eligible"] is True
        holds_for_ids = sorted(c.id for c in live)
        _, still = knit.wait_exact(deployment_id, REPLICAS, timeout=10, steady=1.0)
        assert sorted(c.id for c in still) == holds_for_ids, "nothing moves back"
        back = knit.create_deployment(sleeper_spec("back", 1))["id"]
        _, [placed] = knit.wait_exact(back, 1, timeout=60)
        assert placed.node_id == drained, "the emptiest node is eligible again"
        assert "node.eligible" in kinds_of(knit.events(node_id=drained))
        env.figures.record("drain", moved=len(moved), drain_s=moved_at - drained_at)


def test_drain_moves_instances_away_and_eligible_undoes_it(fault_env: FaultEnv) -> None:
    scenario_drain(fault_env)


SCENARIOS = [scenario_drain]
