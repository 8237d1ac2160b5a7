"""The dashboard against an in-process cluster: real server, NATS, SQLite; agents simulated."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support.cluster import Cluster, SimAgent, open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMAGE = "knit-test/app:1"
HOSTILE = '<script>alert("knit")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;knit&#34;)&lt;/script&gt;"
SECRET = "hunter2-do-not-show"


@dataclass
class Scene:
    """A cluster with two agents and a deployment ``web`` of two running replicas."""

    cluster: Cluster
    a: SimAgent
    b: SimAgent
    deployment_id: str

    async def page(self, path: str, status: int = 200) -> str:
        response = await self.cluster.api.get(path)
        assert response.status_code == status, (path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/html")
        return response.text


@asynccontextmanager
async def web_scene(nats_url: str, tmp_path: Path) -> AsyncIterator[Scene]:
    async with open_cluster(nats_url, tmp_path) as cluster:
        a = await cluster.add_agent({"zone": "eu", "role": HOSTILE})
        b = await cluster.add_agent({"zone": "us"})

        async def two_healthy() -> bool:
            nodes: list[dict[str, Any]] = await cluster.get("/nodes")
            return sum(1 for n in nodes if n["status"] == "healthy") == 2

        await cluster.wait_for(two_healthy)
        body: dict[str, Any] = {
            "name": "web",
            "image": IMAGE,
            "replicas": 2,
            "env": {"DB_PASSWORD": SECRET, "PORT": "8080"},
            "templates": [{"content": "port={{ env.PORT }}", "destination": "/etc/web.conf"}],
        }
        response = await cluster.api.post("/deployments", json=body)
        assert response.status_code == 201, response.text
        deployment_id = str(response.json()["id"])

        async def two_running() -> bool:
            return len(await cluster.running(deployment_id)) == 2

        await cluster.wait_for(two_running)
        yield Scene(cluster, a, b, deployment_id)


async def test_root_redirects_to_the_overview(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        response = await cluster.api.get("/")
        assert response.status_code == 302
        assert response.headers["location"].endswith("/ui/")
        assert (await cluster.api.get("/ui/")).status_code == 200


async def test_overview_counts_and_lists_nodes_and_deployments(
    nats_url: str, tmp_path: Path
) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        html = await scene.page("/ui/")
        assert f"sim-{scene.a.node_id[:6]}" in html and f"sim-{scene.b.node_id[:6]}" in html
        assert scene.a.node_id[:12] in html
        assert f'href="/ui/deployments/{scene.deployment_id}">web</a>' in html
        assert IMAGE in html
        assert "2 / 2" in html  # running / desired
        assert 'class="badge s-healthy">healthy</span> <strong>2</strong>' in html
        assert 'class="badge s-running">running</span> <strong>2</strong>' in html
        assert 'src="/ui/static/dashboard.js"' in html
        css = await scene.cluster.api.get("/ui/static/dashboard.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]


async def test_deployment_page_shows_spec_instances_and_events(
    nats_url: str, tmp_path: Path
) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        data = await scene.cluster.deployment(scene.deployment_id)
        html = await scene.page(f"/ui/deployments/{scene.deployment_id}")
        assert "<h1>web" in html and IMAGE in html
        assert "/etc/web.conf" in html and "port={{ env.PORT }}" in html  # templates are config
        for instance in data["instances"]:
            assert instance["instance_id"][:12] in html
            assert instance["container_id"][:12] in html
        assert f"sim-{scene.a.node_id[:6]}" in html  # instances name their node
        assert "<code>instance." in html or "<code>deployment." in html  # recent events


async def test_env_values_are_masked_and_only_keys_shown(nats_url: str, tmp_path: Path) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        paths = [
            "/ui/",
            f"/ui/deployments/{scene.deployment_id}",
            f"/ui/deployments/{scene.deployment_id}?fragment=1",
            f"/ui/nodes/{scene.a.node_id}",
            "/ui/events",
        ]
        for path in paths:
            assert SECRET not in await scene.page(path), path
        html = await scene.page(f"/ui/deployments/{scene.deployment_id}")
        assert "DB_PASSWORD=•••" in html and "PORT=•••" in html


async def test_deployment_page_shows_the_rollout_versions_and_instance_health(
    nats_url: str, tmp_path: Path
) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        api = scene.cluster.api
        spec = await scene.cluster.deployment(scene.deployment_id)
        body = {
            "name": "web",
            "image": "knit-test/app:2",
            "replicas": 2,
            "env": {"DB_PASSWORD": SECRET, "PORT": "8080"},
            "templates": spec["templates"],
            "update": {"min_healthy_time": 0.2, "max_parallel": 2},
        }
        updated = await api.put(f"/deployments/{scene.deployment_id}", json=body)
        assert updated.status_code == 200, updated.text

        async def complete() -> bool:
            rollout = (await scene.cluster.deployment(scene.deployment_id))["rollout"]
            return bool(rollout) and rollout["version"] == 2 and rollout["state"] == "complete"

        await scene.cluster.wait_for(complete, timeout=20, what="the rollout of version 2")
        html = await scene.page(f"/ui/deployments/{scene.deployment_id}")
        assert '<span class="version" title="version">v2</span>' in html
        assert "Rollout of version 2" in html and 'class="badge r-complete">complete' in html
        assert '<progress class="updated" max="2" value="2">' in html
        versions = html.split('<table class="versions">', 1)[1].split("</table>", 1)[0]
        assert versions.index("knit-test/app:2") < versions.index(IMAGE)  # newest first
        assert '<tr class="current">' in versions
        # 2 completed its rollout; 1 was replaced within its first min_healthy_time (10 s)
        assert versions.index("<td>yes</td>") < versions.index("<td>no</td>")
        assert html.count('<span class="health h-none"') == 2  # no health check: none
        assert SECRET not in html  # the versions' specs hold env values
        overview = await scene.page("/ui/")
        assert '<td class="num">2</td>' in overview  # the version column


async def test_node_page_shows_the_node_its_instances_and_events(
    nats_url: str, tmp_path: Path
) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        html = await scene.page(f"/ui/nodes/{scene.b.node_id}")
        assert f"sim-{scene.b.node_id[:6]}" in html and scene.b.node_id in html
        assert "zone=us" in html
        assert f'href="/ui/deployments/{scene.deployment_id}">web</a>' in html
        instances = await scene.cluster.get("/instances")
        on_b = [i for i in instances if i["node_id"] == scene.b.node_id]
        assert on_b and all(i["instance_id"][:12] in html for i in on_b)


async def test_events_page_lists_and_filters(nats_url: str, tmp_path: Path) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        everything = await scene.page("/ui/events")
        expected = await scene.cluster.get(f"/events?deployment_id={scene.deployment_id}")
        assert expected and expected[0]["kind"] in everything
        mine = await scene.page(f"/ui/events?deployment={scene.deployment_id}")
        assert f'value="{scene.deployment_id}"' in mine
        assert mine.count("<tr>") - 1 == len(expected)  # a header row, then one per event
        none = await scene.page("/ui/events?node=no-such-node")
        assert "No events." in none


async def test_user_values_are_html_escaped(nats_url: str, tmp_path: Path) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        for path in ("/ui/", f"/ui/nodes/{scene.a.node_id}"):
            html = await scene.page(path)
            assert ESCAPED in html, path
            assert HOSTILE not in html, path
        response = await scene.cluster.api.get("/ui/")
        assert "script-src 'self'" in response.headers["content-security-policy"]


async def test_unknown_ids_answer_a_404_page(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        for path in ("/ui/deployments/nope", "/ui/nodes/nope", "/ui/no/such/page"):
            response = await cluster.api.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("text/html")
            assert "Not found" in response.text
        escaped = await cluster.api.get("/ui/nodes/%3Cb%3Ex")
        assert escaped.status_code == 404 and "<b>x" not in escaped.text
        api = await cluster.api.get("/deployments/nope")  # the REST API still answers JSON
        assert api.status_code == 404 and api.json()["error"]


async def test_fragment_renders_only_the_main_section(nats_url: str, tmp_path: Path) -> None:
    async with web_scene(nats_url, tmp_path) as scene:
        html = await scene.page("/ui/?fragment=1")
        assert "<html" not in html and "<header" not in html
        assert 'class="cards"' in html and "web</a>" in html


async def read_data(lines: AsyncIterator[str]) -> dict[str, Any]:
    """The next ``data:`` message of an event stream, decoded."""
    async for line in lines:
        if line.startswith("data:"):
            payload: dict[str, Any] = json.loads(line.removeprefix("data:"))
            return payload
    raise AssertionError("the stream ended")


async def test_stream_sends_data_and_closes_cleanly_when_the_client_disconnects(
    nats_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="knit.dashboard")
    async with web_scene(nats_url, tmp_path) as scene:
        api = scene.cluster.api
        async with api.stream("GET", "/ui/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            with anyio.fail_after(10):
                first = await read_data(lines)
            assert first["nodes"]["healthy"] == 2
            assert first["instances"]["running"] == 2
            assert first["deployments"]["active"] == 1
            # A change to the cluster is pushed: scale-out by a second deployment.
            created = await api.post("/deployments", json={"name": "api", "image": IMAGE})
            assert created.status_code == 201
            with anyio.fail_after(10):
                second = await read_data(lines)
            assert second["hash"] != first["hash"]
        # The client hung up: the server's generator ends, frees its slot, logs no error.

        def closed() -> bool:
            return any("dashboard stream closed (0 open)" in r.getMessage() for r in caplog.records)

        await scene.cluster.wait_for(closed, what="the stream to close")
        # A new stream is accepted after the old one went away.
        async with api.stream("GET", "/ui/stream") as again:
            with anyio.fail_after(10):
                await read_data(again.aiter_lines())
        await scene.cluster.wait_for(closed)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
        assert (await api.get("/healthz")).status_code == 200


async def test_concurrent_streams_each_get_their_data(nats_url: str, tmp_path: Path) -> None:
    # The 503 past the limit is tested in test_stream.py with a small max_streams.
    async with web_scene(nats_url, tmp_path) as scene:
        url = str(scene.cluster.api.base_url)

        async def watch() -> None:
            async with (
                httpx.AsyncClient(
                    base_url=url, timeout=10, cookies=scene.cluster.api.cookies
                ) as client,
                client.stream("GET", "/ui/stream") as response,
            ):
                assert response.status_code == 200
                with anyio.fail_after(10):
                    await read_data(response.aiter_lines())

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(watch)
