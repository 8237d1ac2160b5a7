"""GET /metrics and the API's request metrics (knit.api.metrics), over a fake control plane."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from knit.api.app import create_app
from knit.api.metrics import UNMATCHED, template
from tests.dashboard.fakes import AUTH, READ_TOKEN, FakeControl

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

READ = {"Authorization": f"Bearer {READ_TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_route_templates_name_variables_by_role() -> None:
    assert template("/deployments/<deployment_id>") == "/deployments/{id}"
    assert template("/deployments/<deployment_id>/scale") == "/deployments/{id}/scale"
    assert template("/ui/static/<path:filename>") == "/ui/static/{filename}"
    assert template("/nodes") == "/nodes"


async def test_metrics_need_a_read_token_and_speak_the_text_format() -> None:
    registry = CollectorRegistry()
    Gauge("knit_test_gauge", "a gauge of the caller's registry", registry=registry).set(3)
    client = create_app(FakeControl(), registry=registry).test_client()
    refused = await client.get("/metrics")
    assert refused.status_code == 401
    response = await client.get("/metrics", headers=READ)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(await response.get_data(as_text=True))
    assert found["knit_test_gauge", ()] == 3
    refusals = (
        "knit_api_requests_total",
        (("code", "401"), ("method", "GET"), ("route", "/metrics")),
    )
    assert found[refusals] == 1


async def test_requests_are_counted_by_route_template_not_path() -> None:
    control = FakeControl(deployments=[{"id": "d1", "name": "web"}])
    client = create_app(control).test_client()
    for deployment_id in ("d1", "d2", "d3"):
        await client.get(f"/deployments/{deployment_id}", headers=AUTH)
    await client.get("/nodes", headers=AUTH)
    await client.get("/no/such/path/at/all", headers=AUTH)
    await client.post("/deployments/d1/scale", headers=READ, json={"replicas": 2})
    found = samples(await (await client.get("/metrics", headers=READ)).get_data(as_text=True))

    def requests(method: str, route: str, code: str) -> float:
        labels = (("code", code), ("method", method), ("route", route))
        return found.get(("knit_api_requests_total", labels), 0.0)

    assert requests("GET", "/deployments/{id}", "404") == 2
    assert requests("GET", "/deployments/{id}", "200") == 1
    assert requests("GET", "/nodes", "200") == 1
    assert requests("GET", UNMATCHED, "404") == 1
    assert requests("POST", "/deployments/{id}/scale", "403") == 1
    routes = {dict(labels).get("route") for (name, labels) in found if name.startswith("knit_api")}
    assert not any("d1" in str(route) or "d2" in str(route) for route in routes)
    latency = ("knit_api_request_duration_seconds_count", (("method", "GET"), ("route", "/nodes")))
    assert found[latency] == 1
