"""The Heartbeater: full reports when the server might lack the previous heartbeat, only the
differences otherwise, and differences that rebuild the node's report exactly."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from actors import ActorRef, AskTimeout, open_actor_system
from knit.agent.context import AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.heartbeat import FULL_EVERY, SILENCE, Beat, Heartbeater
from knit.bus import Bus, BusStats
from knit.errors import BusError
from knit.secrets import NodeKeyPair
from knit.wire import subjects
from knit.wire.messages import Heartbeat, InstanceReport, decode_heartbeat
from simulations.profile import SimProfile
from simulations.runtime import SimRuntime

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


class FakeBus:
    """Publishes into a list; can be made to fail, or to have reconnected."""

    def __init__(self) -> None:
        self.stats = BusStats()
        self.sent: list[Heartbeat] = []
        self.failing = False

    async def publish(self, subject: str, payload: bytes, headers: object = None) -> None:
        if self.failing:
            raise BusError("publish failed: connection closed")
        assert subject == subjects.HEARTBEAT
        self.sent.append(decode_heartbeat(payload))


class FakeReconciler:
    """Answers ``Snapshot`` with ``reports``, or times out while ``stuck``."""

    def __init__(self) -> None:
        self.reports: list[InstanceReport] = []
        self.stuck = False

    async def ask(self, message: object, *, timeout: float) -> object:
        if self.stuck:
            raise AskTimeout("no reply")
        return list(self.reports)


class Node:
    def __init__(
        self, ref: ActorRef[Any], actor: Heartbeater, bus: FakeBus, reconciler: FakeReconciler
    ) -> None:
        self.ref, self.actor, self.bus, self.reconciler = ref, actor, bus, reconciler

    async def beat(self, *reports: InstanceReport) -> Heartbeat:
        """Set the node's report, beat, and return the heartbeat it published."""
        self.reconciler.reports = list(reports)
        sent = len(self.bus.sent)
        await self.ref.ask(Beat())
        assert len(self.bus.sent) == sent + 1
        return self.bus.sent[-1]


@asynccontextmanager
async def open_node(tmp_path: Path) -> AsyncIterator[Node]:
    bus = FakeBus()
    reconciler = FakeReconciler()
    ctx = AgentContext(
        node_id="n1",
        hostname="host-1",
        labels={},
        bus=cast(Bus, bus),
        runtime=SimRuntime(SimProfile()),
        keys=NodeKeyPair.generate(),
        files=TemplateFiles(tmp_path),
        heartbeat_interval=3600.0,  # no regular beat during a test: each is asked for
    )
    actor = Heartbeater(ctx, cast(Any, reconciler))
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: actor, name="hb")
        yield Node(ref, actor, bus, reconciler)


def report(
    instance_id: str, status: str = "running", exit_code: int | None = None
) -> InstanceReport:
    return InstanceReport(
        instance_id=instance_id,
        deployment_id="d1",
        container_id=f"c-{instance_id}",
        status=status,  # type: ignore[arg-type]
        exit_code=exit_code,
    )


def ids(beat: Heartbeat) -> list[str]:
    return [r.instance_id for r in beat.instances]


async def test_after_the_registration_heartbeats_carry_only_the_differences(
    tmp_path: Path,
) -> None:
    async with open_node(tmp_path) as node:
        [registration] = node.bus.sent
        assert (registration.seq, registration.first, registration.full) == (0, True, True)
        first = await node.beat(report("a"), report("b"))
        assert (first.seq, first.full, ids(first), first.removed) == (1, False, ["a", "b"], [])
        same = await node.beat(report("a"), report("b"))  # equal reports, new objects
        assert (same.full, same.instances, same.removed) == (False, [], [])
        changed = await node.beat(report("a", "stopped", 1), report("c"))
        assert (changed.full, ids(changed), changed.removed) == (False, ["a", "c"], ["b"])
        assert changed.instances[0].exit_code == 1


async def test_every_full_every_th_heartbeat_is_full(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node:
        beats = [await node.beat(report("a")) for _ in range(2 * FULL_EVERY)]
    fulls = [b.seq for b in beats if b.full]
    assert fulls == [FULL_EVERY, 2 * FULL_EVERY]
    assert all(ids(b) == ["a"] for b in beats if b.full)


async def test_a_failed_publish_makes_the_next_heartbeat_full_with_the_same_seq(
    tmp_path: Path,
) -> None:
    async with open_node(tmp_path) as node:
        await node.beat(report("a"))
        node.bus.failing = True
        node.reconciler.reports = [report("b")]
        await node.ref.ask(Beat())
        node.bus.failing = False
        again = await node.beat(report("b"))
        assert (again.seq, again.full, ids(again), again.removed) == (2, True, ["b"], [])
        after = await node.beat(report("b"))
        assert (after.seq, after.full, after.instances) == (3, False, [])


async def test_a_reconnected_bus_makes_the_next_heartbeat_full(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node:
        await node.beat(report("a"))
        node.bus.stats.reconnects += 1  # heartbeats sent meanwhile may have been lost
        full = await node.beat(report("a"))
        assert (full.full, ids(full)) == (True, ["a"])
        assert not (await node.beat(report("a"))).full


async def test_a_heartbeat_after_a_long_silence_is_full(tmp_path: Path) -> None:
    """A frozen agent's node may be unhealthy at the server, which then lacks its report."""
    async with open_node(tmp_path) as node:
        await node.beat(report("a"))
        node.actor.sent_when -= (SILENCE + 0.1) * node.actor.ctx.heartbeat_interval
        full = await node.beat(report("a"))
        assert (full.full, ids(full)) == (True, ["a"])
        assert not (await node.beat(report("a"))).full


async def test_a_report_that_could_not_be_refreshed_is_sent_whole(tmp_path: Path) -> None:
    async with open_node(tmp_path) as node:
        fresh = await node.beat(report("a"), report("b"))
        node.reconciler.stuck = True
        stale = await node.beat()
        assert (stale.full, ids(stale), stale.sent_at) == (True, ["a", "b"], fresh.sent_at)
        node.reconciler.stuck = False
        assert (await node.beat(report("a"))).removed == ["b"]


async def test_the_differences_rebuild_every_report(tmp_path: Path) -> None:
    """Applied in order, the heartbeats give the node's report as it was at each beat, and
    a difference lists only what changed."""
    rng = random.Random(7)
    statuses = ["running", "stopped", "error"]
    async with open_node(tmp_path) as node:
        held: dict[str, InstanceReport] = {}
        for _ in range(40):
            now = {
                f"i{n}": report(f"i{n}", rng.choice(statuses))
                for n in range(12)
                if rng.random() < 0.7
            }
            beat = await node.beat(*now.values())
            if beat.full:
                held = {r.instance_id: r for r in beat.instances}
            else:
                assert all(held.get(r.instance_id) != r for r in beat.instances)
                held.update((r.instance_id, r) for r in beat.instances)
                for instance_id in beat.removed:
                    del held[instance_id]
            assert held == now
