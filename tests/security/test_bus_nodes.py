"""An attacker who reaches NATS, and one who compromised a node: what the bus lets them do.

A real ``knit server`` with its embedded nats-server (operator mode) and two real agents
(zones ``a`` and ``b``) on the Docker Engine; a container of a deployment runs on node B.
The attacker has no credentials, or node A's (read off A's data dir). Each attack must fail,
and leave B's container running, its instance ``running``, and node A still healthy.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from nats.errors import Error as NatsError

from knit.trust.nkeys import KeyKind, NKey
from tests.security.bus_support import Stolen, connect, heartbeat, task_status
from tests.support.knit import SLEEPER, KnitCluster, cluster_for, unique_name
from tests.support.waiting import holds_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def knit(
    docker_host: str, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnitCluster]:
    with cluster_for(
        tmp_path_factory.mktemp("bus-nodes"), docker_host, agents=[{"zone": "a"}, {"zone": "b"}]
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def on_b(knit: KnitCluster, busybox_image: str) -> dict[str, Any]:
    """A deployment whose one container runs on node B; its instance."""
    created = knit.create_deployment(
        {
            "name": unique_name("victim"),
            "image": busybox_image,
            "command": SLEEPER,
            "node_selector": {"zone": "b"},
        }
    )
    (instance,) = knit.api.wait_instances(created["id"], "running")
    assert instance["node_id"] == knit.agents[1].node_id
    return {"deployment_id": created["id"], **instance}


def still_fine(knit: KnitCluster, victim: dict[str, Any], seconds: float = 2.0) -> None:
    """B's container runs on, its instance stays running, both nodes stay healthy."""

    def fine() -> bool:
        (instance,) = knit.api.instances_of(victim["deployment_id"])
        nodes = {n["id"]: n["status"] for n in knit.api.nodes()}
        return (
            instance["status"] == "running"
            and instance["container_id"] == victim["container_id"]
            and all(nodes.get(a.node_id) == "healthy" for a in knit.agents[:2])
        )

    holds_for(fine, duration=seconds, what="the victim's container and both nodes")


def refusals(knit: KnitCluster, node_id: str) -> list[str]:
    events = knit.api.listing(f"/events?node_id={node_id}&limit=1000")
    return [e["message"] for e in events if e["kind"] == "node.refused"]


async def test_nats_refuses_a_client_without_credentials(knit: KnitCluster) -> None:
    with pytest.raises(NatsError, match="Authorization"):
        await connect(knit.nats_url)


async def test_a_node_cannot_read_or_send_another_nodes_tasks(
    knit: KnitCluster, on_b: dict[str, Any], busybox_image: str
) -> None:
    a = Stolen.from_data_dir(knit.agents[0].data_dir)
    b_id = knit.agents[1].node_id
    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        violations.append(str(exc))

    client = await a.connect(error_cb=on_error)
    spied: list[bytes] = []

    async def spy(msg: Any) -> None:
        spied.append(msg.data)

    try:
        await client.subscribe(f"knit.tasks.{b_id}", cb=spy)
        await client.subscribe("knit.tasks.broadcast", cb=spy)  # outside the queue group
        await client.subscribe("knit.task.status", cb=spy)
        await client.subscribe("knit.agent.heartbeat", cb=spy)
        stop = b'{"v":1,"kind":"stop","msg_id":"x","task_id":"%s","instance_id":"%s"}' % (
            os.urandom(16).hex().encode(),
            on_b["id"].encode(),
        )
        await client.publish(f"knit.tasks.{b_id}", stop)
        await client.flush()
        # The server sends node B a task meanwhile: the spy must not see it.
        spec = {
            "name": unique_name("b-task"),
            "image": busybox_image,
            "command": SLEEPER,
            "node_selector": {"zone": "b"},
        }
        other = await anyio.to_thread.run_sync(knit.create_deployment, spec)
        await anyio.to_thread.run_sync(knit.api.wait_instances, other["id"], "running")
        await anyio.sleep(0.5)
    finally:
        await client.close()
    assert spied == []
    assert sum("permissions violation" in v.lower() for v in violations) >= 5, violations
    still_fine(knit, on_b)


async def test_a_node_cannot_speak_for_another(knit: KnitCluster, on_b: dict[str, Any]) -> None:
    a = Stolen.from_data_dir(knit.agents[0].data_dir)
    b = knit.agents[1]
    assert b.node_id is not None
    b_key = Stolen.from_data_dir(b.data_dir).keys.public_key_b64
    client = await a.connect()
    try:
        for name in (a.node_id, b.node_id):  # its own name in the proof, or B's
            gone = heartbeat(b.node_id, b_key, removed=[on_b["id"]], seq=10_000)
            await client.publish(
                "knit.agent.heartbeat", a.prove("knit.agent.heartbeat", gone, name=name)
            )
            status = task_status(b.node_id, on_b["id"])
            await client.publish("knit.task.status", a.prove("knit.task.status", status, name=name))
        unproved = heartbeat(b.node_id, b_key)
        await client.publish("knit.agent.heartbeat", unproved)  # no proof at all
        await client.flush()
    finally:
        await client.close()
    still_fine(knit, on_b, seconds=3.0)
    recorded = refusals(knit, b.node_id)
    # (One event per node and kind a minute: a flood of forgeries does not flood the log.)
    assert any(m.startswith("heartbeat") and a.node_id in m for m in recorded), recorded
    assert any(m.startswith("task status") and a.node_id in m for m in recorded), recorded


async def test_a_heartbeat_with_another_key_than_the_pinned_one_is_refused_and_recorded(
    knit: KnitCluster, on_b: dict[str, Any]
) -> None:
    a = Stolen.from_data_dir(knit.agents[0].data_dir)
    other_key = base64.b64encode(os.urandom(32)).decode()
    forged = heartbeat(a.node_id, other_key, seq=20_000)
    client = await a.connect()
    try:
        await client.publish("knit.agent.heartbeat", a.prove("knit.agent.heartbeat", forged))
        await client.flush()
    finally:
        await client.close()
    knit.api.wait(
        lambda: any("pinned" in m for m in refusals(knit, a.node_id)),
        timeout=10,
        what="the refused heartbeat recorded as an event",
    )
    still_fine(knit, on_b)


async def test_bus_credentials_for_a_tool_allow_what_they_list_and_nothing_else(
    knit: KnitCluster, on_b: dict[str, Any]
) -> None:
    key = NKey.generate(KeyKind.USER)
    body = {
        "name": "monitor",
        "nats_key": key.public_key,
        "subscribe": ["knit.agent.heartbeat"],
        "ttl": 60,
    }
    for bad in (
        {**body, "subscribe": ["foo.>"]},  # not Knit's
        {**body, "subscribe": [">"]},
        {**body, "publish": ["knit.tasks.>", "knit.tasks.x y z"]},
        {**body, "ttl": 86_401},
        {**body, "nats_key": "A" * 56},
    ):
        assert knit.api.post("/bus-credentials", bad).status_code == 422, bad
    granted = knit.api.ok(knit.api.post("/bus-credentials", body), 201)
    assert set(granted) == {"name", "nats_urls", "nats_jwt", "expires_at"}
    jwt = granted["nats_jwt"].encode()
    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        violations.append(str(exc))

    client = await connect(
        granted["nats_urls"],
        user_jwt_cb=lambda: jwt,
        signature_cb=lambda nonce: base64.b64encode(key.sign(nonce.encode())),
        error_cb=on_error,
    )
    beats: list[bytes] = []

    async def on_beat(msg: Any) -> None:
        beats.append(msg.data)

    try:
        await client.subscribe("knit.agent.heartbeat", cb=on_beat)
        await client.subscribe(f"knit.tasks.{knit.agents[1].node_id}", cb=on_beat)
        await client.publish("knit.agent.heartbeat", b"{}")  # not in its list
        await client.flush()
        await anyio.sleep(1.5)  # the agents beat every 0.5 s
    finally:
        await client.close()
    assert beats and all(b'"kind":"heartbeat"' in b for b in beats)
    assert sum("permissions violation" in v.lower() for v in violations) == 2, violations
    still_fine(knit, on_b)


async def test_a_node_cannot_read_ask_for_or_forge_another_nodes_logs(
    knit: KnitCluster, on_b: dict[str, Any]
) -> None:
    a = Stolen.from_data_dir(knit.agents[0].data_dir)
    b_id = knit.agents[1].node_id
    violations: list[str] = []

    async def on_error(exc: Exception) -> None:
        violations.append(str(exc))

    client = await a.connect(error_cb=on_error)
    spied: list[bytes] = []

    async def spy(msg: Any) -> None:
        spied.append(msg.data)

    try:
        await client.subscribe(f"knit.logs.to.{b_id}", cb=spy)
        await client.subscribe(f"knit.logs.from.{b_id}", cb=spy)
        forged = b'{"v":1,"kind":"log_end","msg_id":"x","stream_id":"s","error":"forged"}'
        await client.publish(f"knit.logs.from.{b_id}", forged)
        await client.publish(f"knit.logs.to.{b_id}", forged)
        await client.flush()
        # The server streams B's logs meanwhile: the spy must not see the request or lines.
        response = await anyio.to_thread.run_sync(
            knit.api.get, f"/instances/{on_b['id']}/logs?tail=5"
        )
        await anyio.sleep(0.5)
    finally:
        await client.close()
    assert response.status_code == 200 and "forged" not in response.text
    assert spied == []
    assert sum("permissions violation" in v.lower() for v in violations) >= 4, violations
    still_fine(knit, on_b)
