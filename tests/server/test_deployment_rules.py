"""What the server refuses and how it hands out secrets: secret_env, host networks, replicas,
registries, templates. In process: real NATS, SQLite and HTTP; agents on SimRuntime."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from knit.bus import Bus
from knit.domain.placement import HOST_NETWORK_REFUSED
from knit.ids import new_id
from knit.secrets import SecretBox
from knit.server.context import ServerContext
from knit.server.repo import Repo
from knit.server.trust import BusTrust
from knit.trust.keys import ServerKeys
from tests.support.cluster import Cluster, open_cluster
from tests.support.spies import spy_on_creates

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

IMAGE = "knit-test/app:1"
SECRET = "hunter2-s3cr3t-value"


async def post(cluster: Cluster, **spec: Any) -> Any:
    return await cluster.api.post("/deployments", json={"name": "web", "image": IMAGE, **spec})


async def healthy(cluster: Cluster, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        nodes = [n for n in await cluster.get("/nodes") if n["status"] == "healthy"]
        return nodes if len(nodes) >= count else None

    found: list[dict[str, Any]] = await cluster.wait_for(enough, what=f"{count} healthy nodes")
    return found


def database_bytes(cluster: Cluster) -> bytes:
    return b"".join(p.read_bytes() for p in (cluster.tmp / "server").glob("knit.db*"))


async def test_secret_env_reaches_the_container_and_never_comes_back(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        agent = await cluster.add_agent()
        created = spy_on_creates(agent)
        await healthy(cluster, 1)
        response = await post(
            cluster, env={"PORT": "80"}, secret_env={"DB_PASSWORD": SECRET}, replicas=2
        )
        assert response.status_code == 201, response.text
        assert SECRET not in response.text
        body = response.json()
        assert body["secret_env"] == ["DB_PASSWORD"] and body["env"] == {"PORT": "80"}

        async def two_running() -> bool:
            return len(await cluster.running(body["id"])) == 2

        await cluster.wait_for(two_running)
        assert [c.env for c in created] == [{"PORT": "80", "DB_PASSWORD": SECRET}] * 2
        for path in ("/deployments", f"/deployments/{body['id']}", "/events", "/instances"):
            text = (await cluster.api.get(path)).text
            assert SECRET not in text, path
        shown = await cluster.deployment(body["id"])
        assert shown["secret_env"] == ["DB_PASSWORD"]
        assert SECRET.encode() not in database_bytes(cluster)

        response = await cluster.api.delete(f"/deployments/{body['id']}")
        assert response.status_code == 200, response.text
        with sqlite3.connect(cluster.tmp / "server" / "knit.db") as db:
            left = db.execute("SELECT count(*) FROM deployment_secrets").fetchone()[0]
        assert left == 0


async def test_a_deployment_without_secret_env_shows_an_empty_list(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        response = await post(cluster, replicas=0)
        assert response.status_code == 201 and response.json()["secret_env"] == []


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"env": {"A": "1"}, "secret_env": {"A": SECRET}}, "secret_env.A"),
        ({"secret_env": {"A=B": SECRET}}, "secret_env"),
        ({"replicas": 1001}, "replicas"),
        ({"templates": [{"content": "{% if %}", "destination": "/a"}]}, "templates.0.content"),
        ({"templates": [{"content": "x" * 65537, "destination": "/a"}]}, "templates.0.content"),
        (
            {"templates": [{"content": "x", "destination": f"/f{i}"} for i in range(17)]},
            "templates",
        ),
    ],
)
async def test_bad_deployments_get_422_naming_the_field(
    nats_url: str, tmp_path: Path, spec: dict[str, Any], field: str
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        response = await post(cluster, **spec)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]
        assert SECRET not in response.text
        assert await cluster.get("/deployments") == []


async def test_the_servers_max_replicas_applies(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path, max_replicas=3) as cluster:
        response = await post(cluster, replicas=4)
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == [
            {"field": "replicas", "message": "must be at most 3 (this server's --max-replicas)"}
        ]
        assert (await post(cluster, replicas=3)).status_code == 201


async def test_credentials_for_another_registry_get_422(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        response = await cluster.api.post(
            "/registries", json={"url": "127.0.0.1:5000", "username": "u", "password": SECRET}
        )
        assert response.status_code == 201, response.text
        rid = response.json()["id"]
        for image in ("127.0.0.1:5001/app:1", "busybox", "evil.example.com/app"):
            response = await post(cluster, image=image, registry_credentials_id=rid, replicas=0)
            assert response.status_code == 422, response.text
            assert [e["field"] for e in response.json()["errors"]] == ["image"]
        response = await post(
            cluster, image="127.0.0.1:5000/app:1", registry_credentials_id=rid, replicas=0
        )
        assert response.status_code == 201, response.text


async def test_a_template_that_would_fold_a_huge_constant_checks_at_once(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        began = time.monotonic()
        response = await post(
            cluster,
            replicas=0,
            templates=[{"content": "{{ 'x'|center(300000000) }}", "destination": "/a"}],
        )
        assert response.status_code == 201, response.text
        assert time.monotonic() - began < 2.0


async def test_host_network_deployments_go_only_to_agents_that_allow_them(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        closed = await cluster.add_agent()
        nodes = await healthy(cluster, 1)
        assert [n["allow_host_network"] for n in nodes] == [False]
        response = await cluster.api.post("/networks", json={"name": "hostnet", "driver": "host"})
        assert response.status_code == 201, response.text
        response = await post(cluster, network_attachments=["hostnet"], replicas=2)
        assert response.status_code == 201, response.text
        deployment_id = response.json()["id"]

        async def pending_reason() -> str | None:
            data = await cluster.deployment(deployment_id)
            return data["pending_reason"] if data["status"] == "pending" else None

        reason = await cluster.wait_for(pending_reason)
        assert HOST_NETWORK_REFUSED in reason and closed.node_id in reason

        opened = await cluster.add_agent(allow_host_network=True)
        created = spy_on_creates(opened)

        async def both_running() -> bool:
            return len(await cluster.running(deployment_id)) == 2

        await cluster.wait_for(both_running, timeout=20)
        assert closed.runtime.count() == 0 and opened.runtime.count("running") == 2
        assert {c.network_mode for c in created} == {"host"}
        by_id = {n["id"]: n for n in await cluster.get("/nodes")}
        assert by_id[opened.node_id]["allow_host_network"] is True
        assert by_id[closed.node_id]["allow_host_network"] is False
        one = await cluster.get(f"/nodes/{opened.node_id}")
        assert one["allow_host_network"] is True


async def test_an_orphan_whose_instance_id_is_not_knits_is_left_alone() -> None:
    published: list[tuple[str, bytes]] = []
    events: list[str] = []

    async def publish(subject: str, payload: bytes, headers: object = None) -> None:
        published.append((subject, payload))

    ctx = ServerContext(
        repo=cast(Repo, SimpleNamespace(event=lambda kind, *a, **k: events.append(kind))),
        bus=cast(Bus, SimpleNamespace(publish=publish)),
        secrets=SecretBox.generate(),
        trust=BusTrust(ServerKeys.generate(), insecure=True),
        node_ttl=1.0,
        restart_grace=1.0,
    )
    for forged in ("../../etc", "/", "x" * 32):
        await ctx.stop_orphan("node-1", forged)
    assert published == [] and events == []
    await ctx.stop_orphan("node-1", new_id())
    assert [s for s, _ in published] == ["knit.tasks.node-1"] and events == ["instance.orphan"]
