"""Task intake over real NATS: a broadcast task is taken once; a task id runs once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import anyio
import pytest

from knit.bus import Headers, connect_bus
from knit.wire import subjects
from knit.wire.messages import (
    DeployTask,
    StopTask,
    TaskDeployment,
    TaskStatus,
    decode_status,
    encode,
)
from tests.support.cluster import open_cluster

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def collect_statuses(
    nats_url: str, seconds: float, send: list[bytes], subject: str
) -> list[TaskStatus]:
    """Publish ``send`` on ``subject`` and gather every task status for ``seconds``."""
    bus = await connect_bus(nats_url, name="test-observer")
    seen: list[TaskStatus] = []

    async def on_status(payload: bytes, reply: str | None, headers: Headers | None) -> None:
        seen.append(decode_status(payload))

    try:
        await bus.subscribe(subjects.TASK_STATUS, on_status)
        await bus.flush()
        for payload in send:
            await bus.publish(subject, payload)
        await anyio.sleep(seconds)
    finally:
        await bus.close()
    return seen


async def test_a_broadcast_task_is_taken_by_exactly_one_agent(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path, insecure=True) as cluster:
        a = await cluster.add_agent()
        b = await cluster.add_agent()
        tasks = [
            StopTask(task_id=uuid.uuid4().hex, instance_id=uuid.uuid4().hex) for _ in range(20)
        ]
        statuses = await collect_statuses(
            nats_url, 1.0, [encode(t) for t in tasks], subjects.TASKS_BROADCAST
        )
        for task in tasks:
            accepted = [s for s in statuses if s.task_id == task.task_id and s.state == "accepted"]
            done = [s for s in statuses if s.task_id == task.task_id and s.state == "succeeded"]
            assert len(accepted) == 1 and len(done) == 1, task.task_id
        takers = {s.node_id for s in statuses}
        assert takers <= {a.node_id, b.node_id}


async def test_a_task_delivered_twice_runs_once(nats_url: str, tmp_path: Path) -> None:
    async with open_cluster(nats_url, tmp_path, insecure=True) as cluster:
        agent = await cluster.add_agent()
        task = DeployTask(
            task_id=uuid.uuid4().hex,
            instance_id=uuid.uuid4().hex,
            instance_index=0,
            deployment=TaskDeployment(id=uuid.uuid4().hex, name="twice", image="knit-test/app:1"),
        )
        payload = encode(task)
        statuses = await collect_statuses(
            nats_url, 1.0, [payload, payload, payload], subjects.tasks_for(agent.node_id)
        )
        # (The server, seeing a container of a deployment it does not know, removes it later:
        # only this task's statuses matter here.)
        mine = [s for s in statuses if s.task_id == task.task_id]
        assert [s.state for s in mine].count("accepted") == 1
        succeeded = [s for s in mine if s.state == "succeeded"]
        assert len(succeeded) >= 1
        assert len({s.container_id for s in succeeded}) == 1


async def test_a_joined_agent_runs_no_task_that_the_server_did_not_send(
    nats_url: str, tmp_path: Path
) -> None:
    async with open_cluster(nats_url, tmp_path) as cluster:
        agent = await cluster.add_agent()
        forged = StopTask(
            task_id=uuid.uuid4().hex,
            instance_id=uuid.uuid4().hex,
            node_id=agent.node_id,
            expires_at=time.time() + 600,
        )
        statuses = await collect_statuses(
            nats_url, 1.0, [encode(forged)], subjects.tasks_for(agent.node_id)
        )
        broadcast = await collect_statuses(
            nats_url, 1.0, [encode(forged)], subjects.TASKS_BROADCAST
        )
        assert statuses == [] and broadcast == []  # not accepted, not run, not answered
