"""NodeActor: heartbeats coalesced in the store, and no verdict while the server is behind."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from actors import open_actor_system
from knit.server.messages import HeartbeatReceived
from knit.server.metrics import ServerMetrics
from knit.server.nodes import NodeActor
from knit.server.records import NodeState
from knit.wire.messages import Capacity, Heartbeat

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
    return SimpleNamespace(
        repo=FakeRepo(),
        bus=FakeBus(),
        node_ttl=node_ttl,
        restart_grace=0.0,
        metrics=ServerMetrics(),
        scheduler=sink,
        deployments=sink,
        public_keys={},
        last_heartbeats={},
    )


def heartbeat(seq: int) -> HeartbeatReceived:
    beat = Heartbeat(
        node_id="n1",
        hostname="h1",
        seq=seq,
        capacity=Capacity(cpus=1, memory_bytes=1),
        public_key=PUBLIC_KEY,
        sent_at=time.time(),
    )
    return HeartbeatReceived(beat, time.time())


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
