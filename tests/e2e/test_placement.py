"""Placement over several agents: spreading replicas, running a task once, node selectors,
and node health. The agents share this machine's Docker Engine; ``knit.node`` tells their
containers apart.

The module's cluster is a ``knit server --nats URL`` on a nats-server of its own with two
agents; tests that add or stop agents start a cluster of their own.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.knit import SLEEPER, KnitCluster, cluster_for, unique_name
from tests.support.knit_docker import container_ids, inspect_containers
from tests.support.knit_processes import HEARTBEAT_INTERVAL, NODE_TTL
from tests.support.knit_wire import SubjectRecorder
from tests.support.nats import NatsServer
from tests.support.waiting import holds_for

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"


@pytest.fixture(scope="module")
def cluster(
    e2e_docker: str, nats_server_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnitCluster]:
    """An external nats-server, a server using it, two unlabelled agents."""
    workdir = tmp_path_factory.mktemp("knit-placement")
    nats = NatsServer(nats_server_binary, workdir)
    nats.start()
    try:
        with cluster_for(workdir, e2e_docker, agents=[{}, {}], external_nats=nats.url) as c:
            yield c
    finally:
        nats.stop()


@pytest.mark.parametrize(("replicas", "per_node"), [(2, [1, 1]), (3, [1, 2])])
def test_replicas_spread_evenly_over_the_healthy_nodes(
    knit: KnitCluster, e2e_docker: str, replicas: int, per_node: list[int]
) -> None:
    node_ids = {agent.node_id for agent in knit.agents}
    assert len(node_ids) == 2
    created = knit.create_deployment(
        {"name": unique_name("spread"), "image": BUSYBOX, "replicas": replicas, "command": SLEEPER}
    )
    instances = knit.api.wait_instances(created["id"], "running", count=replicas, timeout=60)
    placed = Counter(i["node_id"] for i in instances)
    assert set(placed) == node_ids and sorted(placed.values()) == per_node

    containers = inspect_containers(e2e_docker, {"knit.deployment": created["id"]})
    assert Counter(c["Config"]["Labels"]["knit.node"] for c in containers) == placed
    for instance in instances:
        [container] = [c for c in containers if c["Id"].startswith(instance["id"])]
        assert container["Config"]["Labels"]["knit.node"] == instance["node_id"]


def test_one_replica_runs_exactly_once_with_one_acceptance_per_task(
    knit: KnitCluster, e2e_docker: str
) -> None:
    labels: dict[str, str] = {}
    with SubjectRecorder(knit.nats_url, "knit.task.status") as status:
        created = knit.create_deployment(
            {"name": unique_name("once"), "image": BUSYBOX, "replicas": 1, "command": SLEEPER}
        )
        labels = {"knit.deployment": created["id"]}
        [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
        holds_for(
            lambda: len(container_ids(e2e_docker, labels)) == 1,
            duration=4 * HEARTBEAT_INTERVAL,
            what="exactly one container for a one-replica deployment",
            watch=knit.watch,
        )

    [container] = inspect_containers(e2e_docker, labels)
    assert container["Config"]["Labels"]["knit.node"] == instance["node_id"]
    ours = [
        m
        for m in status.json_messages()
        if m.get("instance_id") in (instance.get("instance_id"), instance["id"])
        or m.get("container_id") == container["Id"]
    ]
    accepted = Counter(m.get("task_id") for m in ours if m.get("state") == "accepted")
    assert accepted, f"no 'accepted' status seen for this deployment: {json.dumps(ours)}"
    assert all(n == 1 for n in accepted.values()), f"a task was accepted twice: {accepted}"
    nodes = {m.get("node_id") for m in ours if m.get("state") == "accepted"}
    assert nodes == {instance["node_id"]}


def test_node_selector_keeps_a_deployment_pending_with_the_reason_until_a_node_fits(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[{"disk": "hdd"}]) as knit:
        [rejected] = [a.node_id for a in knit.agents]
        assert rejected is not None
        value = unique_name("ssd")
        created = knit.create_deployment(
            {
                "name": unique_name("selective"),
                "image": BUSYBOX,
                "node_selector": {"disk": value},
                "command": SLEEPER,
            }
        )

        def reason_shown() -> str | None:
            deployment = knit.api.deployment(created["id"])
            pending = all(i.get("status") == "pending" for i in deployment["instances"])
            deployment.pop("node_selector")  # the reason must name the label by itself
            text = json.dumps(deployment)
            return text if pending and rejected in text and "disk" in text else None

        shown = knit.api.wait(
            reason_shown,
            timeout=15,
            what="the pending deployment naming the rejected node and the label",
        )
        assert container_ids(e2e_docker, {"knit.deployment": created["id"]}) == [], shown

        fitting = knit.add_agent({"disk": value})
        [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
        assert instance["node_id"] == fitting.node_id
        [container] = inspect_containers(e2e_docker, {"knit.deployment": created["id"]})
        assert container["Config"]["Labels"]["knit.node"] == fitting.node_id


def test_a_stopped_agent_turns_unhealthy_and_gets_no_new_instances(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[{}, {}]) as knit:
        stopped, alive = knit.agents
        [node] = [n for n in knit.api.nodes() if n["id"] == stopped.node_id]
        assert node["status"] == "healthy" and node.get("last_heartbeat")
        assert node.get("hostname")

        def heartbeat_of(node_id: str | None) -> str:
            [now] = [n for n in knit.api.nodes() if n["id"] == node_id]
            return str(now["last_heartbeat"])

        knit.api.wait(
            lambda: heartbeat_of(stopped.node_id) != node["last_heartbeat"],
            timeout=5,
            what="last_heartbeat moving on",
        )
        knit.stop_agent(stopped)

        def unhealthy() -> bool:
            [now] = [n for n in knit.api.nodes() if n["id"] == stopped.node_id]
            return bool(now["status"] == "unhealthy")

        knit.api.wait(unhealthy, timeout=2 * NODE_TTL + 2, what="the stopped agent unhealthy")
        created = knit.create_deployment(
            {"name": unique_name("healthy"), "image": BUSYBOX, "replicas": 2, "command": SLEEPER}
        )
        instances = knit.api.wait_instances(created["id"], "running", count=2, timeout=60)
        assert {i["node_id"] for i in instances} == {alive.node_id}


def test_deleting_a_pending_deployment_removes_it(knit: KnitCluster) -> None:
    created = knit.create_deployment(
        {
            "name": unique_name("never"),
            "image": BUSYBOX,
            "node_selector": {"nowhere": "true"},
            "command": SLEEPER,
        }
    )
    knit.api.wait(
        lambda: knit.api.deployment(created["id"]).get("instances") is not None,
        what="the pending deployment readable",
    )
    response = knit.api.delete(f"/deployments/{created['id']}")
    assert response.status_code in (200, 202, 204), response.text
    knit.api.wait_gone(created["id"])
    assert created["id"] not in [d["id"] for d in knit.api.listing("/deployments")]


def test_server_and_agent_stop_cleanly_on_sigterm(e2e_docker: str, tmp_path: Path) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[{}]) as knit:
        [agent] = knit.agents
        code = knit.stop_agent(agent)
        assert (code, agent.killed) == (0, False), f"agent: exit {code}{agent.logs()}"
        knit.watch.processes.remove(knit.server)
        code = knit.server.stop()
        assert (code, knit.server.killed) == (0, False), f"server: exit {code}{knit.logs()}"
        for process in (agent, knit.server):
            assert "Traceback" not in process.log.read_text(), process.logs()


def test_a_deployment_without_any_node_is_placed_when_the_first_agent_joins(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[]) as knit:
        created = knit.create_deployment(
            {"name": unique_name("early"), "image": BUSYBOX, "replicas": 2, "command": SLEEPER}
        )

        def pending_with_a_reason() -> bool:
            deployment = knit.api.deployment(created["id"])
            pending = all(i.get("status") == "pending" for i in deployment["instances"])
            reasons = [v for k, v in deployment.items() if "reason" in k and v]
            reasons += [i.get("error") for i in deployment["instances"] if i.get("error")]
            return pending and bool(reasons)

        knit.api.wait(pending_with_a_reason, timeout=10, what="pending with a reason, no nodes")
        agent = knit.add_agent({})
        instances = knit.api.wait_instances(created["id"], "running", count=2, timeout=60)
        assert {i["node_id"] for i in instances} == {agent.node_id}
