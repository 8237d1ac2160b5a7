"""The lifecycle routes on a real server (NATS, SQLite, HTTP, the real actors; an agent on
SimRuntime): what they store and answer, and that the deployment's actor takes the change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMAGE = "knit-test/app:1"


async def ok(cluster: Cluster, method: str, path: str, body: Any = None) -> Any:
    response = await cluster.api.request(method, path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_put_scale_rollback_and_versions_on_a_running_deployment(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        agent = await cluster.add_agent()
        spec = {"name": "web", "image": IMAGE, "replicas": 2, "env": {"A": "1"}}
        response = await cluster.api.post("/deployments", json=spec)
        assert response.status_code == 201, response.text
        deployment = f"/deployments/{response.json()['id']}"

        async def two_running() -> bool:
            return len(await cluster.running(response.json()["id"])) == 2

        await cluster.wait_for(two_running)
        created = agent.runtime.count("running")

        same = await ok(cluster, "PUT", deployment, spec)
        assert same["version"] == 1
        assert [v["version"] for v in await ok(cluster, "GET", f"{deployment}/versions")] == [1]
        assert agent.runtime.count("running") == created

        changed = await ok(cluster, "PUT", deployment, {**spec, "image": "knit-test/app:2"})
        assert (changed["version"], changed["image"]) == (2, "knit-test/app:2")
        scaled = await ok(cluster, "POST", f"{deployment}/scale", {"replicas": 3})
        assert (scaled["version"], scaled["replicas"]) == (2, 3)
        back = await ok(cluster, "POST", f"{deployment}/rollback", {"version": 1})
        assert (back["version"], back["image"], back["replicas"]) == (3, IMAGE, 3)
        listed = await ok(cluster, "GET", f"{deployment}/versions")
        assert [(v["version"], v["spec"]["image"]) for v in listed] == [
            (3, IMAGE),
            (2, "knit-test/app:2"),
            (1, IMAGE),
        ]
        shown = await cluster.deployment(back["id"])
        assert shown["version"] == 3
        assert all({"version", "health", "restarts"} <= set(i) for i in shown["instances"])

        # The deployment's actor took every change (asked, not merely told) and still runs.
        status = await cluster.get("/status")
        assert not [a for a in status["actors"]["restarted"] if a["name"].startswith("deploy")]
