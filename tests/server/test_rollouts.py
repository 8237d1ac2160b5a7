"""Deployment lifecycle in process: updates, rollouts, scale, versions and rollback, with
real NATS, SQLite and HTTP and agents on SimRuntime (no health checks here: instances are
healthy after ``min_healthy_time``; health checks are tested on Docker in tests/e2e)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMAGE = "knit-test/app:1"
FAST = {"min_healthy_time": 0.3, "max_parallel": 1}


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "web", "image": IMAGE, "replicas": 3, "update": dict(FAST), **fields}


async def started(cluster: Cluster, nodes: int = 2) -> None:
    for _ in range(nodes):
        await cluster.add_agent()

    async def enough() -> bool:
        found = await cluster.get("/nodes")
        return bool(sum(n["status"] == "healthy" for n in found) >= nodes)

    await cluster.wait_for(enough, what=f"{nodes} healthy nodes")


async def create(cluster: Cluster, body: dict[str, Any]) -> str:
    response = await cluster.api.post("/deployments", json=body)
    assert response.status_code == 201, response.text
    deployment_id = str(response.json()["id"])
    await settled(cluster, deployment_id, "complete")
    return deployment_id


async def put(cluster: Cluster, deployment_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await cluster.api.put(f"/deployments/{deployment_id}", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def settled(
    cluster: Cluster, deployment_id: str, state: str, timeout: float = 20.0
) -> dict[str, Any]:
    """The deployment once its rollout reached ``state``."""

    async def reached() -> dict[str, Any] | None:
        data = await cluster.deployment(deployment_id)
        rollout = data.get("rollout") or {}
        current = rollout.get("version") == data["version"]
        return data if current and rollout.get("state") == state else None

    found: dict[str, Any] = await cluster.wait_for(reached, timeout, what=f"rollout {state}")
    return found


def wanted(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in data["instances"] if i["desired"]]


async def test_an_update_rolls_out_a_new_version_and_both_become_stable(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await started(cluster)
        deployment_id = await create(cluster, spec(env={"V": "1"}))
        first = await cluster.deployment(deployment_id)
        assert first["version"] == 1
        updated = await put(cluster, deployment_id, spec(env={"V": "2"}))
        assert updated["version"] == 2
        done = await settled(cluster, deployment_id, "complete")
        assert done["rollout"]["version"] == 2
        assert done["rollout"]["updated"] == done["rollout"]["healthy"] == 3
        instances = wanted(done)
        assert len(instances) == 3 and {i["version"] for i in instances} == {2}
        assert sorted(i["index"] for i in instances) == [0, 1, 2]
        assert cluster.containers() == 3
        versions = await cluster.get(f"/deployments/{deployment_id}/versions")
        assert [(v["version"], v["stable"]) for v in versions] == [(2, True), (1, True)]
        assert versions[0]["spec"]["env"] == {"V": "2"}


async def test_start_first_never_has_fewer_than_replicas_running(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await started(cluster)
        body = spec(update={**FAST, "order": "start_first"})
        deployment_id = await create(cluster, body)
        await put(cluster, deployment_id, {**body, "env": {"V": "2"}})
        fewest = 99

        async def complete() -> bool:
            nonlocal fewest
            fewest = min(fewest, cluster.containers())
            data = await cluster.deployment(deployment_id)
            rollout = data.get("rollout") or {}
            return bool(rollout.get("state") == "complete" and rollout.get("version") == 2)

        await cluster.wait_for(complete, timeout=20)
        assert fewest >= 3
        assert cluster.containers() == 3


async def test_an_identical_spec_changes_nothing_and_scale_restarts_nothing(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await started(cluster)
        body = spec()
        deployment_id = await create(cluster, body)
        before = {i["instance_id"] for i in wanted(await cluster.deployment(deployment_id))}
        same = await put(cluster, deployment_id, body)
        assert same["version"] == 1
        response = await cluster.api.post(
            f"/deployments/{deployment_id}/scale", json={"replicas": 5}
        )
        assert response.status_code == 200, response.text

        async def five() -> bool:
            return len(await cluster.running(deployment_id)) == 5

        await cluster.wait_for(five)
        now = {i["instance_id"] for i in wanted(await cluster.deployment(deployment_id))}
        assert before <= now
        response = await cluster.api.post(
            f"/deployments/{deployment_id}/scale", json={"replicas": 2}
        )
        assert response.status_code == 200, response.text

        async def two() -> bool:
            return cluster.containers() == 2

        await cluster.wait_for(two)
        left = {i["instance_id"] for i in wanted(await cluster.deployment(deployment_id))}
        assert left <= before  # the originals stay
        data = await cluster.deployment(deployment_id)
        assert data["version"] == 1 and all(i["restarts"] == 0 for i in data["instances"])


@pytest.mark.parametrize(
    ("on_failure", "state"), [("pause", "paused"), ("rollback", "rolled_back")]
)
async def test_a_version_that_never_becomes_healthy_pauses_or_rolls_back(
    nats_url: str, tmp_path: Path, on_failure: str, state: str
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await started(cluster)
        update = {**FAST, "healthy_deadline": 1.0, "on_failure": on_failure}
        deployment_id = await create(cluster, spec(update=update))
        # Version 2 can be placed nowhere: its batch is never healthy.
        await put(cluster, deployment_id, spec(update=update, node_selector={"zone": "mars"}))
        done = await settled(cluster, deployment_id, state)
        assert "not healthy within 1 s" in done["rollout"]["message"]
        versions = await cluster.get(f"/deployments/{deployment_id}/versions")
        assert [(v["version"], v["stable"]) for v in versions] == [(2, False), (1, True)]
        if on_failure == "rollback":
            assert done["version"] == 1

            async def back() -> bool:
                data = await cluster.deployment(deployment_id)
                return {i["version"] for i in wanted(data)} == {1} and len(wanted(data)) == 3

            await cluster.wait_for(back)
        else:
            assert done["version"] == 2
            running = await cluster.running(deployment_id)
            assert len([i for i in running if i["version"] == 1]) == 2  # still serving


async def test_rollback_by_number_makes_a_new_version(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await started(cluster)
        deployment_id = await create(cluster, spec(env={"V": "1"}))
        await put(cluster, deployment_id, spec(env={"V": "2"}))
        await settled(cluster, deployment_id, "complete")
        response = await cluster.api.post(
            f"/deployments/{deployment_id}/rollback", json={"version": 1}
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 3
        done = await settled(cluster, deployment_id, "complete")
        assert done["env"] == {"V": "1"} and {i["version"] for i in wanted(done)} == {3}


async def test_a_server_restart_in_the_middle_of_a_rollout_resumes_it(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await started(cluster, nodes=1)
        agent = next(iter(cluster.agents.values()))
        body = spec(replicas=4, update={**FAST, "min_healthy_time": 1.0})
        deployment_id = await create(cluster, body)
        await put(cluster, deployment_id, {**body, "env": {"V": "2"}})

        async def half_way() -> bool:
            data = await cluster.deployment(deployment_id)
            return any(i["version"] == 2 for i in data["instances"])

        await cluster.wait_for(half_way)
        runtime, node_id = agent.runtime, agent.node_id
        agent.stop()
    async with open_cluster(nats_url, tmp_path) as cluster:
        await cluster.add_agent(node_id=node_id, runtime=runtime)
        done = await settled(cluster, deployment_id, "complete", timeout=30)
        instances = wanted(done)
        assert len(instances) == 4 and {i["version"] for i in instances} == {2}
        assert sorted(i["index"] for i in instances) == [0, 1, 2, 3]
        assert runtime.count("running") == 4
