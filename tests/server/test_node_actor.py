"""NodeActor: heartbeats coalesced in the store, no verdict while the server is behind, only
the differences of the instance reports forwarded, and heartbeats that carry differences
applied in sequence (a gap waits for the next full report)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from actors import open_actor_system
from knit.server.messages import (
    ForwardReports,
    HeartbeatReceived,
    InstancesObserved,
    NodeUp,
)
from knit.server.metrics import ServerMetrics
from knit.server.nodes import NodeActor
from knit.server.records import NodeState
from knit.wire.messages import Capacity, Heartbeat, InstanceReport, report_changed

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
        host_network_nodes=set(),
        last_heartbeats={},
        node_reports={},
    )


def heartbeat(
    seq: int,
    *instances: InstanceReport,
    sent_at: float = 0.0,
    full: bool = True,
    removed: tuple[str, ...] = (),
) -> HeartbeatReceived:
    beat = Heartbeat(
        node_id="n1",
        hostname="h1",
        seq=seq,
        capacity=Capacity(cpus=1, memory_bytes=1),
        public_key=PUBLIC_KEY,
        full=full,
        instances=list(instances),
        removed=list(removed),
        sent_at=sent_at or time.time(),
    )
    return HeartbeatReceived(beat, time.time())


def delta(
    seq: int, *instances: InstanceReport, removed: tuple[str, ...] = (), sent_at: float = 0.0
) -> HeartbeatReceived:
    return heartbeat(seq, *instances, sent_at=sent_at, full=False, removed=removed)


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


# --- heartbeats carrying differences ---------------------------------------------------------


async def test_differences_are_applied_and_forwarded_as_a_full_report_would_be() -> None:
    ctx = fake_ctx(node_ttl=60)
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, None), name="node/n1")
        await ref.ask(heartbeat(0, report("a"), report("b")))
        await ref.ask(delta(1))  # nothing new
        await ref.ask(
            delta(2, report("a", "stopped"), report("c", deployment_id="d2"), removed=("b",))
        )
    first, second = observed(ctx)
    assert {r.instance_id for r in first.reports} == {"a", "b"}
    assert [(r.instance_id, r.status) for r in second.reports] == [
        ("a", "stopped"),
        ("c", "running"),
    ]
    assert second.gone == (("b", "d1"),)
    held = ctx.node_reports["n1"].instances
    assert {i: r.status for i, r in held.items()} == {"a": "stopped", "c": "running"}


async def test_differences_after_a_gap_wait_for_the_next_full_report() -> None:
    ctx = fake_ctx(node_ttl=60)
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, None), name="node/n1")
        await ref.ask(heartbeat(0, report("a"), report("b")))
        await ref.ask(delta(1, report("c")))
        await ref.ask(delta(3, report("d")))  # heartbeat 2 was lost
        assert "n1" not in ctx.node_reports  # not audited against a report it lacks
        await ref.ask(delta(4, report("e"), removed=("a",)))  # still out of step
        assert len(observed(ctx)) == 2
        lives = ctx.last_heartbeats["n1"]
        await ref.ask(delta(5))
        assert ctx.last_heartbeats["n1"] >= lives  # each one kept the node alive
        assert ctx.metrics.node_status["n1"] == "healthy"
        await ref.ask(heartbeat(6, report("b"), report("c"), report("d"), report("e", "stopped")))
        await ref.ask(delta(7, report("f")))  # in step again
    *_, whole, after = observed(ctx)
    # The full report is compared with the last one forwarded (after heartbeat 1).
    assert [(r.instance_id, r.status) for r in whole.reports] == [
        ("d", "running"),
        ("e", "stopped"),
    ]
    assert whole.gone == (("a", "d1"),)
    assert [r.instance_id for r in after.reports] == ["f"]
    assert set(ctx.node_reports["n1"].instances) == {"b", "c", "d", "e", "f"}


async def test_after_a_server_restart_differences_wait_for_a_full_report() -> None:
    ctx = fake_ctx(node_ttl=60)
    known = NodeState(id="n1", hostname="h1", registered_at=1.0, status="healthy")
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, known), name="node/n1")
        await ref.ask(delta(40, report("a", "stopped")))
        assert observed(ctx) == [] and "n1" not in ctx.node_reports
        await ref.ask(heartbeat(42, report("a", "stopped"), report("b")))
        await ref.ask(delta(43, removed=("b",)))
    whole, after = observed(ctx)
    assert {r.instance_id for r in whole.reports} == {"a", "b"}
    assert (after.reports, after.gone) == ((), (("b", "d1"),))
    assert not [m for m in ctx.deployments.told if isinstance(m, NodeUp)]


async def test_a_node_back_on_differences_is_up_at_once_and_again_with_its_report() -> None:
    ctx = fake_ctx(node_ttl=0.2)
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: NodeActor("n1", ctx, None), name="node/n1")
        await ref.ask(heartbeat(0, report("a")))
        with anyio.fail_after(5):
            await ctx.repo.lost.wait()
        ctx.deployments.told.clear()
        await ref.ask(delta(1, report("b")))  # back, its report unknown
        assert ctx.deployments.told == [NodeUp("n1")]
        assert ctx.metrics.node_status["n1"] == "healthy"
        assert "n1" not in ctx.node_reports
        await ref.ask(delta(2))
        await ref.ask(heartbeat(3, report("a"), report("b")))  # the report, whole
        await ref.ask(delta(4, report("c")))
    back, again, whole, after = ctx.deployments.told
    assert back == again == NodeUp("n1")  # again: the deployments audit it with its report
    assert isinstance(whole, InstancesObserved) and isinstance(after, InstancesObserved)
    assert {r.instance_id for r in whole.reports} == {"a", "b"}
    assert [r.instance_id for r in after.reports] == ["c"]


def differences(
    seq: int, before: dict[str, InstanceReport], now: dict[str, InstanceReport], sent_at: float
) -> HeartbeatReceived:
    """The heartbeat an agent sends for ``now`` after ``before`` (see knit.agent.heartbeat)."""
    changed = [r for i, r in now.items() if report_changed(before.get(i), r)]
    return delta(seq, *changed, removed=tuple(i for i in before if i not in now), sent_at=sent_at)


def normal(messages: list[InstancesObserved]) -> list[object]:
    return [
        (m.taken_at, sorted(r.instance_id for r in m.reports), sorted(m.gone)) for m in messages
    ]


@pytest.mark.parametrize("seed", range(5))
async def test_differences_forward_what_full_reports_forwarded(seed: int) -> None:
    """The same reports sent whole to one actor and as differences to another (with tasks
    ending meanwhile) are forwarded the same, and leave the same report for the audits."""
    rng = random.Random(seed)
    whole_ctx, delta_ctx = fake_ctx(node_ttl=60), fake_ctx(node_ttl=60)
    statuses = ["running", "stopped", "error"]
    async with open_actor_system("test") as system:
        whole = await system.spawn(lambda: NodeActor("n1", whole_ctx, None), name="node/n1")
        deltas = await system.spawn(lambda: NodeActor("n1", delta_ctx, None), name="node/n1b")
        before: dict[str, InstanceReport] = {}
        for seq in range(60):
            sent_at = 1000.0 + seq
            now = {
                f"i{n}": report(f"i{n}", rng.choice(statuses), deployment_id=f"d{n % 3}")
                for n in range(10)
                if rng.random() < 0.8
            }
            if rng.random() < 0.3:
                instance = f"i{rng.randrange(12)}"
                force = ForwardReports(sent_at + rng.choice([-0.5, 0.5, 2.5]), instance, "d9")
                await whole.ask(force)
                await deltas.ask(force)
            await whole.ask(heartbeat(seq, *now.values(), sent_at=sent_at))
            if seq == 0 or rng.random() < 0.15:
                await deltas.ask(heartbeat(seq, *now.values(), sent_at=sent_at))
            else:
                await deltas.ask(differences(seq, before, now, sent_at))
            before = now
    assert normal(observed(delta_ctx)) == normal(observed(whole_ctx))
    assert len(observed(whole_ctx)) > 30
    assert delta_ctx.node_reports["n1"] == whole_ctx.node_reports["n1"]
