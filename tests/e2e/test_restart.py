"""Restarting one part of a running Knit: the server (with its embedded nats-server) while the
agents keep running, or one agent while the server keeps running. The database is the truth,
the containers keep running, and nothing is duplicated.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.knit import (
    SLEEPER,
    KnitCluster,
    cluster_for,
    restart_server_keeping,
    unique_name,
)
from tests.support.knit_docker import container_ids
from tests.support.waiting import holds_for

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"


def deployment_containers(knit: KnitCluster, deployment_id: str) -> list[str]:
    ids = container_ids(knit.docker_host, {"knit.deployment": deployment_id})
    return sorted(ids)


def test_server_restart_keeps_state_and_its_agents_come_back(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[{}]) as knit:
        [agent] = knit.agents
        created = knit.create_deployment(
            {"name": unique_name("survive"), "image": BUSYBOX, "replicas": 2, "command": SLEEPER}
        )
        before = knit.api.wait_instances(created["id"], "running", count=2, timeout=60)
        containers = deployment_containers(knit, created["id"])
        assert len(containers) == 2

        restart_server_keeping(knit, created["id"], agent.node_id, before)
        holds_for(
            lambda: deployment_containers(knit, created["id"]) == containers,
            duration=3.0,
            what="the same two containers, no duplicates, after the server restarted",
            watch=knit.watch,
        )

        fresh = knit.create_deployment(
            {"name": unique_name("after"), "image": BUSYBOX, "command": SLEEPER}
        )
        [instance] = knit.api.wait_instances(fresh["id"], "running", count=1, timeout=60)
        assert instance["node_id"] == agent.node_id


def test_agent_restart_adopts_its_containers_as_the_same_node(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[{}]) as knit:
        [agent] = knit.agents
        node_id = agent.node_id
        created = knit.create_deployment(
            {"name": unique_name("adopt"), "image": BUSYBOX, "replicas": 2, "command": SLEEPER}
        )
        before = knit.api.wait_instances(created["id"], "running", count=2, timeout=60)
        containers = deployment_containers(knit, created["id"])

        knit.stop_agent(agent)
        ids = container_ids(e2e_docker, {"knit.deployment": created["id"]}, include_stopped=False)
        assert sorted(ids) == containers, "containers must outlive their agent"
        agent.start()
        knit.watch.processes.append(agent)
        knit.api.wait(
            lambda: [n["id"] for n in knit.api.nodes() if n["status"] == "healthy"] == [node_id],
            timeout=30,
            what="the restarted agent healthy as the same (only) node",
        )
        after = knit.api.wait_instances(created["id"], "running", count=2, timeout=30)
        assert sorted(i["id"] for i in after) == sorted(i["id"] for i in before)
        holds_for(
            lambda: deployment_containers(knit, created["id"]) == containers,
            duration=3.0,
            what="the same two containers, no duplicates, after the agent restarted",
            watch=knit.watch,
        )
