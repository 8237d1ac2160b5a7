"""The Scheduler actor: placements spread by count, reservations of CPU and memory held until
released, and its cached views follow every change."""

from __future__ import annotations

import pytest

from actors import open_actor_system
from knit.domain.placement import NodeView, PlacementRequest, Plan
from knit.server.scheduler import Place, Release, Reserve, Scheduler, SetCounts, UpdateNode

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


def request(count: int, deployment_id: str = "d") -> Place:
    return Place(PlacementRequest(deployment_id=deployment_id, count=count))


async def test_counts_of_earlier_placements_and_releases_steer_the_next_ones() -> None:
    async with open_actor_system("test") as system:
        scheduler = await system.spawn(Scheduler, name="scheduler")
        for node_id in ("a", "b"):
            await scheduler.tell(UpdateNode(NodeView(id=node_id)))
        first: Plan = await scheduler.ask(request(2, "d1"))
        assert sorted(first.placements) == ["a", "b"]
        second: Plan = await scheduler.ask(request(1, "d2"))
        third: Plan = await scheduler.ask(request(1, "d3"))
        assert sorted(second.placements + third.placements) == ["a", "b"]  # two each now
        await scheduler.tell(Release("b"))
        fourth: Plan = await scheduler.ask(request(1, "d4"))
        assert fourth.placements == ["b"]  # b held one fewer


async def test_a_node_update_and_new_counts_replace_the_cached_views() -> None:
    async with open_actor_system("test") as system:
        scheduler = await system.spawn(Scheduler, name="scheduler")
        for node_id in ("a", "b"):
            await scheduler.tell(UpdateNode(NodeView(id=node_id)))
        await scheduler.ask(request(2))  # caches both views
        await scheduler.tell(UpdateNode(NodeView(id="a", status="unhealthy")))
        plan: Plan = await scheduler.ask(request(3, "other"))
        assert plan.placements == ["b", "b", "b"]
        await scheduler.tell(UpdateNode(NodeView(id="a")))
        await scheduler.tell(SetCounts({"a": 0, "b": 10}))
        for deployment_id in ("third", "fourth"):
            plan = await scheduler.ask(request(1, deployment_id))
            assert plan.placements == ["a"]  # b holds ten


MiB = 2**20
GiB = 2**30


def sized(count: int, deployment_id: str, cpu: float, memory: int) -> Place:
    return Place(PlacementRequest(deployment_id, count=count, cpu=cpu, memory_bytes=memory))


async def test_three_deployments_fill_two_nodes_and_a_fourth_waits_until_one_leaves() -> None:
    reserved: dict[str, tuple[float, int]] = {"stale": (1.0, 1)}
    async with open_actor_system("test") as system:
        scheduler = await system.spawn(lambda: Scheduler(reserved), name="scheduler")
        assert reserved == {}  # a (re)started Scheduler starts from nothing
        for node_id in ("a", "b"):
            await scheduler.tell(UpdateNode(NodeView(id=node_id, cpus=2.0, memory_bytes=GiB)))
        for place in (sized(2, "web", 1.0, 512 * MiB), sized(2, "api", 0.5, 256 * MiB)):
            plan: Plan = await scheduler.ask(place)
            assert sorted(plan.placements) == ["a", "b"]
        plan = await scheduler.ask(sized(2, "db", 0.5, 256 * MiB))
        assert sorted(plan.placements) == ["a", "b"]
        assert reserved == {"a": (2.0, GiB), "b": (2.0, GiB)}
        fourth: Plan = await scheduler.ask(sized(1, "cache", 0.25, 6 * MiB))
        assert fourth.unplaced == 1
        assert fourth.describe_unplaced() == (
            "1 instance(s) not placed: insufficient cpu and memory on 2 nodes"
        )
        await scheduler.tell(Release("b", 0.5, 256 * MiB))
        await scheduler.ask(request(0))
        assert reserved["b"] == (1.5, 768 * MiB)
        again: Plan = await scheduler.ask(sized(1, "cache", 0.25, 6 * MiB))
        assert again.placements == ["b"]
        # A release never goes below zero; a reservation without a placement counts.
        await scheduler.tell(Release("a", 8.0, 8 * GiB))
        await scheduler.ask(request(0))
        assert "a" not in reserved
        await scheduler.tell(Reserve("a", 1.0, GiB))
        await scheduler.ask(request(0))
        assert reserved["a"] == (1.0, GiB)
        late: Plan = await scheduler.ask(sized(1, "late", 0.5, 1 * MiB))
        assert late.unplaced == 1


async def test_reservations_rebuilt_from_the_store_steer_placement() -> None:
    reserved: dict[str, tuple[float, int]] = {}
    async with open_actor_system("test") as system:
        scheduler = await system.spawn(lambda: Scheduler(reserved), name="scheduler")
        for node_id in ("a", "b"):
            await scheduler.tell(UpdateNode(NodeView(id=node_id, cpus=4.0, memory_bytes=GiB)))
        await scheduler.ask(sized(1, "warm", 1.0, 64 * MiB))  # caches both views
        await scheduler.tell(SetCounts({"a": 1}, {"a": (1.0, 768 * MiB)}))
        await scheduler.ask(request(0))  # (handled in order: the tell before it is done)
        assert reserved == {"a": (1.0, 768 * MiB)}
        plan: Plan = await scheduler.ask(sized(2, "web", 0.5, 512 * MiB))
        assert plan.placements == ["b", "b"]
        binpack = Place(
            PlacementRequest("tiny", count=1, memory_bytes=128 * MiB, strategy="binpack")
        )
        packed: Plan = await scheduler.ask(binpack)
        assert packed.placements == ["a"]  # the fullest with room
