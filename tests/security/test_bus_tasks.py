"""Forged and replayed tasks: on a bus anyone can reach, agents still run only the tasks the
server sent them, once.

The cluster runs on an external nats-server without credentials (``open_bus`` of the
package's conftest; ``knit server --nats``:
a NATS Knit does not own), the worst case for an agent: an attacker reads every task and
publishes anything. Nodes still joined with tokens and prove every message. Two real
agents on the Docker Engine; a container runs on node A.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from nats.aio.msg import Msg

from tests.security.bus_support import connect
from tests.support.knit import SLEEPER, KnitCluster, cluster_for, unique_name
from tests.support.nats import NatsServer
from tests.support.waiting import holds_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def knit(
    docker_host: str,
    busybox_image: str,
    open_bus: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KnitCluster]:
    with cluster_for(
        tmp_path_factory.mktemp("bus-tasks"),
        docker_host,
        agents=[{"zone": "a"}, {"zone": "b"}],
        external_nats=open_bus.url,
    ) as cluster:
        yield cluster


class Wiretap:
    """An attacker on the open bus: every task and status it sees, and what it publishes."""

    def __init__(self) -> None:
        self.tasks: list[Msg] = []
        self.statuses: list[dict[str, Any]] = []

    async def on_task(self, msg: Msg) -> None:
        self.tasks.append(msg)

    async def on_status(self, msg: Msg) -> None:
        self.statuses.append(json.loads(msg.data))

    def statuses_of(self, task_id: str) -> list[dict[str, Any]]:
        return [s for s in self.statuses if s["task_id"] == task_id]


def stop_task(instance_id: str, node_id: str | None) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "kind": "stop",
            "msg_id": uuid.uuid4().hex,
            "task_id": uuid.uuid4().hex,
            "instance_id": instance_id,
            "node_id": node_id,
            "expires_at": time.time() + 600,
        }
    ).encode()


async def test_agents_run_only_the_servers_tasks_for_them_once(
    knit: KnitCluster, open_bus: NatsServer, busybox_image: str
) -> None:
    a, b = knit.agents[0], knit.agents[1]
    tap = Wiretap()
    client = await connect(open_bus.url)
    try:
        await client.subscribe("knit.tasks.>", cb=tap.on_task)
        await client.subscribe("knit.task.status", cb=tap.on_status)
        await client.flush()
        spec = {
            "name": unique_name("target"),
            "image": busybox_image,
            "command": SLEEPER,
            "node_selector": {"zone": "a"},
        }
        # (The API in a thread: the wiretap's callbacks run on this event loop meanwhile.)
        created = await anyio.to_thread.run_sync(knit.create_deployment, spec)
        (instance,) = await anyio.to_thread.run_sync(
            knit.api.wait_instances, created["id"], "running"
        )
        await anyio.sleep(0.2)
        assert instance["node_id"] == a.node_id
        deploys = [m for m in tap.tasks if json.loads(m.data)["kind"] == "deploy"]
        assert deploys, "the wiretap saw no task"
        genuine = deploys[0]
        task_id = json.loads(genuine.data)["task_id"]
        assert b',"proof":"' in genuine.data  # the server's MAC, the task's last field

        # 1. The genuine task, replayed to B with its proof: not for B, not under B's key.
        await client.publish(f"knit.tasks.{b.node_id}", genuine.data)
        # 2. Replayed to A: A ran it already; it answers from memory, runs nothing again.
        await client.publish(genuine.subject, genuine.data)
        # 3. Forged stop tasks without proof, to A and to any node.
        await client.publish(genuine.subject, stop_task(instance["id"], a.node_id))
        await client.publish("knit.tasks.broadcast", stop_task(instance["id"], None))
        # 4. A's genuine proof on a changed payload: the MAC no longer matches.
        tampered = genuine.data.replace(b'"instance_index":0', b'"instance_index":7')
        await client.publish(genuine.subject, tampered)
        # 5. A forged status in A's name: its instance failed.
        forged_status = {
            "v": 1,
            "kind": "task_status",
            "msg_id": uuid.uuid4().hex,
            "task_id": task_id,
            "instance_id": instance["id"],
            "node_id": a.node_id,
            "state": "failed",
            "error": "forged",
            "at": time.time(),
        }
        await client.publish("knit.task.status", json.dumps(forged_status).encode())
        await client.flush()
        await anyio.sleep(1.5)
    finally:
        await client.close()

    answers = [s for s in tap.statuses_of(task_id) if s.get("error") != "forged"]
    assert {s["node_id"] for s in answers} == {a.node_id}, answers  # B never answered
    others = [s for s in tap.statuses if s["task_id"] != task_id and s.get("error") != "forged"]
    assert others == [], others  # the forged stop tasks were not accepted by anyone

    def unchanged() -> bool:
        (now,) = knit.api.instances_of(created["id"])
        return bool(now["status"] == "running" and now["container_id"] == instance["container_id"])

    holds_for(unchanged, duration=2.0, what="the instance, running in the same container")
