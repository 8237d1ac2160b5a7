"""Server workflows in process: real NATS, SQLite and HTTP; agents on SimRuntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMAGE = "knit-test/app:1"


async def deploy(cluster: Cluster, **spec: Any) -> str:
    body = {"name": "web", "image": IMAGE, **spec}
    response = await cluster.api.post("/deployments", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def healthy_nodes(cluster: Cluster, count: int) -> None:
    async def enough() -> bool:
        nodes = await cluster.get("/nodes")
        return bool(sum(n["status"] == "healthy" for n in nodes) >= count)

    await cluster.wait_for(enough, what=f"{count} healthy nodes")


async def test_replicas_are_spread_over_healthy_nodes(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        a = await cluster.add_agent()
        b = await cluster.add_agent()
        await healthy_nodes(cluster, 2)
        deployment_id = await deploy(cluster, replicas=4)

        async def four_running() -> bool:
            return len(await cluster.running(deployment_id)) == 4

        await cluster.wait_for(four_running)
        assert a.runtime.count("running") == 2
        assert b.runtime.count("running") == 2
        instances = await cluster.running(deployment_id)
        assert all(i["id"] and i["id"] == i["container_id"] for i in instances)


async def test_node_selector_waits_with_a_reason_then_places(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await cluster.add_agent({"zone": "us"})
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, node_selector={"zone": "eu"})

        async def pending_with_reason() -> str | None:
            data = await cluster.deployment(deployment_id)
            return data["pending_reason"] if data["status"] == "pending" else None

        reason = await cluster.wait_for(pending_with_reason)
        assert "zone" in reason
        eu = await cluster.add_agent({"zone": "eu"})

        async def placed() -> bool:
            return len(await cluster.running(deployment_id)) == 1

        await cluster.wait_for(placed)
        assert eu.runtime.count("running") == 1
        data = await cluster.deployment(deployment_id)
        assert data["status"] == "active" and data["pending_reason"] is None


async def test_a_lost_node_has_its_instances_replaced(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path, node_ttl=1.0) as cluster:
        a = await cluster.add_agent()
        b = await cluster.add_agent()
        await healthy_nodes(cluster, 2)
        deployment_id = await deploy(cluster, replicas=2)

        async def two_running() -> bool:
            return len(await cluster.running(deployment_id)) == 2

        await cluster.wait_for(two_running)
        a.stop()

        async def moved() -> bool:
            running = await cluster.running(deployment_id)
            return len(running) == 2 and all(i["node_id"] == b.node_id for i in running)

        await cluster.wait_for(moved, timeout=15)
        nodes = {n["id"]: n["status"] for n in await cluster.get("/nodes")}
        assert nodes[a.node_id] == "unhealthy"
        kinds = [e["kind"] for e in await cluster.get(f"/events?deployment_id={deployment_id}")]
        assert "instance.lost" in kinds


async def test_exited_container_is_restarted_by_policy(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        agent = await cluster.add_agent()
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, restart_policy={"mode": "always", "backoff": 0.1})

        async def one_running() -> list[dict[str, Any]]:
            return await cluster.running(deployment_id)

        (instance,) = await cluster.wait_for(one_running)
        agent.runtime.crash(instance["container_id"], exit_code=3)

        async def restarted() -> bool:
            kinds = [e["kind"] for e in await cluster.get(f"/events?deployment_id={deployment_id}")]
            return "instance.restarting" in kinds and len(await cluster.running(deployment_id)) == 1

        await cluster.wait_for(restarted)
        assert agent.runtime.count() == 1  # the same container, started again


async def test_never_policy_leaves_an_exited_instance_stopped(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        agent = await cluster.add_agent()
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, restart_policy={"mode": "never"})
        (instance,) = await cluster.wait_for(lambda: cluster.running(deployment_id))
        agent.runtime.crash(instance["container_id"], exit_code=1)

        async def stopped() -> bool:
            data = await cluster.deployment(deployment_id)
            return [i["status"] for i in data["instances"]] == ["stopped"]

        await cluster.wait_for(stopped)
        assert agent.runtime.count() == 1


async def test_delete_removes_every_container_then_the_deployment(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await cluster.add_agent()
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, replicas=3)

        async def three() -> bool:
            return len(await cluster.running(deployment_id)) == 3

        await cluster.wait_for(three)
        response = await cluster.api.delete(f"/deployments/{deployment_id}")
        assert response.status_code == 200
        assert (await cluster.api.get(f"/deployments/{deployment_id}")).status_code == 404
        await cluster.wait_for(
            lambda: cluster.containers("running") == 0 and cluster.containers("exited") == 0
        )

        async def no_instances() -> bool:
            return not await cluster.get("/instances")

        await cluster.wait_for(no_instances)


async def test_zero_replicas_runs_nothing(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await cluster.add_agent()
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, replicas=0)
        data = await cluster.deployment(deployment_id)
        assert data["instances"] == []
        assert cluster.containers() == 0


async def test_server_restart_adopts_and_does_not_duplicate(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        agent = await cluster.add_agent()
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, replicas=2)
        await cluster.wait_for(lambda: cluster.running(deployment_id))
        await cluster.wait_for(lambda: agent.runtime.count("running") == 2)
        runtime, node_id = agent.runtime, agent.node_id
        agent.stop()
    # The same data dir and the same node (its containers kept): nothing is created again.
    async with open_cluster(nats_url, tmp_path) as cluster:
        await cluster.add_agent(node_id=node_id, runtime=runtime)

        async def two_running() -> bool:
            return len(await cluster.running(deployment_id)) == 2

        await cluster.wait_for(two_running, timeout=15)
        assert runtime.count() == 2


async def test_a_node_that_comes_back_keeps_its_original_and_the_copy_goes(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path, node_ttl=1.0) as cluster:
        a = await cluster.add_agent()
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, replicas=1)
        (original,) = await cluster.wait_for(lambda: cluster.running(deployment_id))
        b = await cluster.add_agent()
        await healthy_nodes(cluster, 2)
        a.stop()

        async def replaced_on_b() -> bool:
            return b.runtime.count("running") == 1

        await cluster.wait_for(replaced_on_b, timeout=15)
        await cluster.add_agent(node_id=a.node_id, runtime=a.runtime)  # back, still running

        async def settled() -> bool:
            running = await cluster.running(deployment_id)
            return [i["instance_id"] for i in running] == [
                original["instance_id"]
            ] and b.runtime.count() == 0

        await cluster.wait_for(settled, timeout=15)
        assert a.runtime.count("running") == 1


async def test_lost_after_waits_before_replacing(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path, node_ttl=1.0) as cluster:
        a = await cluster.add_agent()
        await healthy_nodes(cluster, 1)
        deployment_id = await deploy(cluster, lost_after=30.0)
        (original,) = await cluster.wait_for(lambda: cluster.running(deployment_id))
        b = await cluster.add_agent()
        await healthy_nodes(cluster, 2)
        a.stop()

        async def unknown() -> bool:
            data = await cluster.deployment(deployment_id)
            return [i["status"] for i in data["instances"]] == ["unknown"]

        await cluster.wait_for(unknown, timeout=10)
        assert b.runtime.count() == 0
        await cluster.add_agent(node_id=a.node_id, runtime=a.runtime)

        async def running_again() -> bool:
            running = await cluster.running(deployment_id)
            return [i["instance_id"] for i in running] == [original["instance_id"]]

        await cluster.wait_for(running_again)
        assert b.runtime.count() == 0
