"""Resources through a whole server (real NATS, SQLite, HTTP; agents on SimRuntime): what
deployments reserve fills nodes, a deployment that does not fit waits with the reason, a
deletion frees room, ``GET /nodes/{id}`` shows reserved and free, spread vs binpack."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from simulations.profile import SimProfile
from simulations.runtime import SimRuntime
from tests.support.cluster import Cluster, SimAgent, open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMAGE = "knit-test/app:1"
MiB = 2**20
GiB = 2**30


async def deploy(cluster: Cluster, name: str, **spec: Any) -> str:
    body = {"name": name, "image": IMAGE, **spec}
    response = await cluster.api.post("/deployments", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def sized_agents(cluster: Cluster, count: int, cpus: int, memory: int) -> list[SimAgent]:
    profile = SimProfile(cpus=cpus, memory_bytes=memory)
    agents = []
    for i in range(count):
        runtime = SimRuntime(profile, name=f"sized-{i}")
        agents.append(await cluster.add_agent(runtime=runtime))

    async def healthy() -> bool:
        nodes = await cluster.get("/nodes")
        return bool(sum(n["status"] == "healthy" for n in nodes) >= count)

    await cluster.wait_for(healthy, what=f"{count} healthy nodes")
    return agents


async def all_running(cluster: Cluster, deployment_id: str, count: int) -> list[dict[str, Any]]:
    async def running() -> list[dict[str, Any]] | None:
        found = await cluster.running(deployment_id)
        return found if len(found) == count else None

    result: list[dict[str, Any]] = await cluster.wait_for(running, what=f"{count} running")
    return result


async def test_three_deployments_fill_two_nodes_a_fourth_waits_with_the_reason(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        a, b = await sized_agents(cluster, 2, cpus=2, memory=GiB)
        web = await deploy(cluster, "web", replicas=2, resources={"cpu": 1, "memory": "512MiB"})
        api = await deploy(cluster, "api", replicas=2, resources={"cpu": 0.5, "memory": "256MiB"})
        db = await deploy(cluster, "db", replicas=2, resources={"cpu": 0.5, "memory": "256M"})
        for deployment_id in (web, api, db):
            placed = await all_running(cluster, deployment_id, 2)
            assert {i["node_id"] for i in placed} == {a.node_id, b.node_id}  # spread
        for agent in (a, b):
            node = await cluster.get(f"/nodes/{agent.node_id}")
            assert (node["reserved_cpus"], node["reserved_memory_bytes"]) == (2.0, GiB)
            assert (node["free_cpus"], node["free_memory_bytes"]) == (0.0, 0)

        cache = await deploy(cluster, "cache", resources={"cpu": 0.25, "memory": "64MiB"})

        async def waiting() -> str | None:
            data = await cluster.deployment(cache)
            return data["pending_reason"] if data["status"] == "pending" else None

        reason = await cluster.wait_for(waiting, what="cache pending")
        assert reason == "1 instance(s) not placed: insufficient cpu and memory on 2 nodes"
        assert await cluster.running(cache) == []

        # Deleting a deployment gives its room back: the fourth is placed.
        assert (await cluster.api.delete(f"/deployments/{api}")).status_code == 200
        await all_running(cluster, cache, 1)
        assert (await cluster.deployment(cache))["pending_reason"] is None

        async def released() -> bool:
            nodes = [await cluster.get(f"/nodes/{x.node_id}") for x in (a, b)]
            return bool(sum(n["reserved_memory_bytes"] for n in nodes) == 1536 * MiB + 64 * MiB)

        await cluster.wait_for(released, what="api's reservations released")


async def test_binpack_fills_one_node_spread_uses_them_all(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        agents = await sized_agents(cluster, 3, cpus=4, memory=4 * GiB)
        ask = {"cpu": 1, "memory": "1GiB"}
        packed = await deploy(cluster, "packed", replicas=4, resources=ask, strategy="binpack")
        by_node = Counter(i["node_id"] for i in await all_running(cluster, packed, 4))
        assert sorted(by_node.values()) == [4]  # one node, full
        full = next(iter(by_node))
        spread = await deploy(cluster, "spread", replicas=2, resources=ask)
        nodes = {i["node_id"] for i in await all_running(cluster, spread, 2)}
        assert nodes == {x.node_id for x in agents} - {full}
        shown = await cluster.get(f"/deployments/{packed}")
        assert shown["strategy"] == "binpack"
        assert shown["resources"] == {"cpu": 1.0, "memory": GiB}
