"""GET /metrics of a running server, scraped with prometheus-client's own parser while a
deployment is created, scaled and deleted (real NATS, SQLite and HTTP; agents on SimRuntime)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMAGE = "knit-test/app:1"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(cluster: Cluster) -> Samples:
    response = await cluster.api.get("/metrics")
    assert response.status_code == 200, response.text
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def running(samples: Samples) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "knit_instances" and dict(labels)["status"] == "running"
    )


async def test_metrics_move_as_a_deployment_is_created_scaled_and_deleted(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        await cluster.add_agent()
        await cluster.add_agent()

        async def two_nodes() -> bool:
            return (await scrape(cluster))["knit_nodes", (("status", "healthy"),)] == 2

        await cluster.wait_for(two_nodes, what="two healthy nodes in /metrics")
        before = await scrape(cluster)
        assert before["knit_deployments", ()] == 0
        assert before["knit_heartbeat_lag_seconds_count", ()] > 0
        assert before["knit_bus_messages_total", (("direction", "received"),)] > 0

        created = await cluster.api.post(
            "/deployments", json={"name": "web", "image": IMAGE, "replicas": 2}
        )
        assert created.status_code == 201, created.text
        deployment_id = created.json()["id"]

        async def instances(count: int) -> bool:
            return running(await scrape(cluster)) == count

        await cluster.wait_for(lambda: instances(2), what="2 running instances in /metrics")
        after_create = await scrape(cluster)
        assert after_create["knit_deployments", ()] == 1
        deploys = (("kind", "deploy"), ("result", "succeeded"))
        assert after_create["knit_tasks_ended_total", deploys] == 2
        assert after_create["knit_instances_placed_total", ()] >= 2
        assert after_create["knit_store_writer_batches_total", ()] > 0

        scaled = await cluster.api.post(f"/deployments/{deployment_id}/scale", json={"replicas": 4})
        assert scaled.status_code == 200, scaled.text
        await cluster.wait_for(lambda: instances(4), what="4 running instances in /metrics")
        assert (await scrape(cluster))["knit_tasks_ended_total", deploys] == 4

        deleted = await cluster.api.delete(f"/deployments/{deployment_id}")
        assert deleted.status_code == 200, deleted.text

        async def gone() -> bool:
            samples = await scrape(cluster)
            return running(samples) == 0 and samples["knit_deployments", ()] == 0

        await cluster.wait_for(gone, what="no deployment nor instance in /metrics")
        final = await scrape(cluster)
        stops = (("kind", "stop"), ("result", "succeeded"))
        assert final["knit_tasks_ended_total", stops] == 4
        route = (("code", "201"), ("method", "POST"), ("route", "/deployments"))
        assert final["knit_api_requests_total", route] == 1
        scale = (("code", "200"), ("method", "POST"), ("route", "/deployments/{id}/scale"))
        assert final["knit_api_requests_total", scale] == 1
        assert not any(deployment_id in str(labels) for (_, labels) in final)
