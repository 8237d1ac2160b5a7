"""The Scheduler actor: placements spread by count, and its cached views follow every change."""

from __future__ import annotations

import pytest

from actors import open_actor_system
from knit.domain.placement import NodeView, PlacementRequest, Plan
from knit.server.scheduler import Place, Release, Scheduler, SetCounts, UpdateNode

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
