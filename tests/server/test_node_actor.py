"""NodeActor: heartbeats coalesced in the store, no verdict while the server is behind, and
only the differences of the instance reports forwarded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from actors import open_actor_system
from knit.server.messages import ForwardReports, HeartbeatReceived, InstancesObserved
from knit.server.metrics import ServerMetrics
from knit.server.nodes import NodeActor
from knit.server.records import NodeState
from knit.wire.messages import Capacity, Heartbeat, InstanceReport

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

PUBLIC_KEY = "A" * 43 + "="


@dataclass
class FakeRepo:
    saved: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    lost: anyio.Event = field(default_factory=anyio.Event)

    def save_node(self, node: NodeState) -> None:
        self.saved.append(node.status)

    def event(self, kind: str, message: str, **ids: Any) -> None:
        self.events.append(kind)
        if kind == "node.unhealthy":
            self.lost.set()


class FakeBus:
    connected = True
    stats = SimpleNamespace(last_reconnect=0.0)

    def __init__(self) -> None:
        self.backlog = 0

    def pending(self, subject: str) -> int:
        return self.backlog


def fake_ctx(node_ttl: float) -> Any:
    sink = SimpleNamespace(tell_nowait=lambda message: None)
    told: list[object] = []
    return SimpleNamespace(
        repo=FakeRepo(),
        bus=FakeBus(),
        node_ttl=node_ttl,
        restart_grace=0.0,
        metrics=ServerMetrics(),
        scheduler=sink,
        deployments=SimpleNamespace(tell_nowait=told.append, told=told),
        public_keys={},
        last_heartbeats={},
        node_reports={},
    )


def heartbeat(seq: int, *instances: InstanceReport, sent_at: float = 0.0) -> HeartbeatReceived:
    beat = Heartbeat(
        node_id="n1",
        hostname="h1",
        seq=seq,
        capacity=Capacity(cpus=1, memory_bytes=1),
        public_key=PUBLIC_KEY,
        instances=list(instances),
        sent_at=sent_at or time.time(),
    )
    return HeartbeatReceived(beat, time.time())


def report(instance_id: str, status: str = "running", deployment_id: str = "d1") -> InstanceReport:
    return InstanceReport(
        instance_id=instance_id,
        deployment_id=deployment_id,
        container_id=f"c-{instance_id}",
        status=status,  # type: ignore[arg-type]
    )


def observed(ctx: Any) -> list[InstancesObserved]:
    return [m for m in ctx.deployments.told if isinstance(m, InstancesObserved)]


async def test_only_what_changed_in_the_report_is_forwarded() -> None:
    ctx = fake_ctx(node_ttl=60)
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, None), name="node/n1")
        await ref.ask(heartbeat(0, report("a"), report("b")))
        await ref.ask(heartbeat(1, report("a"), report("b")))  # nothing new
        await ref.ask(heartbeat(2, report("a", "stopped"), report("c", deployment_id="d2")))
    first, second = observed(ctx)
    assert {r.instance_id for r in first.reports} == {"a", "b"}  # the first report is whole
    assert [(r.instance_id, r.status) for r in second.reports] == [
        ("a", "stopped"),
        ("c", "running"),
    ]
    assert second.gone == (("b", "d1"),)
    assert set(ctx.node_reports["n1"].instances) == {"a", "c"}  # the whole, for audits


async def test_an_instance_whose_task_ended_is_forwarded_until_a_fresh_report() -> None:
    ctx = fake_ctx(node_ttl=60)
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, None), name="node/n1")
        await ref.ask(heartbeat(0, report("a", "stopped"), sent_at=100.0))
        await ref.ask(ForwardReports(after=105.0, instance_id="a", deployment_id="d1"))
        await ref.ask(heartbeat(1, report("a", "stopped"), sent_at=104.0))  # stale, unchanged
        await ref.ask(heartbeat(2, report("a", "stopped"), sent_at=106.0))  # fresh: crashed again
        await ref.ask(heartbeat(3, report("a", "stopped"), sent_at=107.0))  # old news
        await ref.ask(ForwardReports(after=108.0, instance_id="b", deployment_id="d1"))
        await ref.ask(heartbeat(4, report("a", "stopped"), sent_at=109.0))  # b is not there
    taken = [(m.taken_at, [r.instance_id for r in m.reports], m.gone) for m in observed(ctx)]
    assert taken == [
        (100.0, ["a"], ()),
        (104.0, ["a"], ()),
        (106.0, ["a"], ()),
        (109.0, [], (("b", "d1"),)),
    ]


async def test_unchanged_heartbeats_are_not_all_written_but_the_api_sees_each() -> None:
    ctx = fake_ctx(node_ttl=60)
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, None), name="node/n1")
        for seq in range(5):
            await ref.ask(heartbeat(seq))
    assert ctx.repo.saved == ["healthy"]  # registered once; the next ones changed nothing
    assert ctx.repo.events == ["node.registered"]
    assert ctx.last_heartbeats["n1"] > 0
    assert ctx.public_keys["n1"] == PUBLIC_KEY


async def test_a_node_is_not_declared_lost_while_heartbeats_wait_to_be_read() -> None:
    ctx = fake_ctx(node_ttl=0.2)
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, None), name="node/n1")
        await ref.ask(heartbeat(0))
        ctx.bus.backlog = 3  # the server is behind: heartbeats received, not yet read
        await anyio.sleep(0.5)
        assert ctx.metrics.node_status["n1"] == "healthy"
        ctx.bus.backlog = 0
        with anyio.fail_after(5):
            await ctx.repo.lost.wait()
    assert ctx.metrics.node_status["n1"] == "unhealthy"
