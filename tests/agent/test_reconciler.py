"""The Reconciler's table follows Docker's events without asking Docker, and says when it
changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import anyio
import pytest

from knit.agent.context import AgentContext
from knit.agent.reconciler import Reconciler
from knit.runtime.base import ContainerState, RuntimeEvent
from knit.wire.messages import DeployTask, StopTask, TaskDeployment

pytestmark = pytest.mark.unit

LABELS = {"knit.instance": "i1", "knit.deployment": "d1", "knit.node": "n1"}


def listing_ctx(
    inspect: Callable[[str], Awaitable[ContainerState | None]],
    listing: Callable[[object], Awaitable[list[ContainerState]]],
) -> AgentContext:
    """A context whose runtime inspects and lists with these, and has no files to sweep."""

    async def remove_stale(keep: object) -> list[str]:
        return []

    ctx = SimpleNamespace(
        on_change=None,
        in_flight={},
        node_id="n1",
        runtime=SimpleNamespace(inspect=inspect, list=listing),
        files=SimpleNamespace(remove_stale=remove_stale),
    )
    return cast(AgentContext, ctx)


def reconciler(
    in_flight: dict[str, DeployTask | StopTask] | None = None,
) -> tuple[Reconciler, list[int]]:
    changes: list[int] = []
    ctx = SimpleNamespace(on_change=lambda: changes.append(1), in_flight=in_flight or {})
    return Reconciler(cast(AgentContext, ctx)), changes


def test_events_set_the_status_and_exit_code_and_tell_of_each_change() -> None:
    table, changes = reconciler()
    table.apply(RuntimeEvent("c1", "create", LABELS))
    table.apply(RuntimeEvent("c1", "start", LABELS))
    assert table.instances["i1"].status == "running"
    table.apply(RuntimeEvent("c1", "kill", LABELS))  # says nothing about the state
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=137))
    report = table.instances["i1"]
    assert (report.status, report.exit_code, report.container_id) == ("stopped", 137, "c1")
    assert len(changes) == 3
    table.apply(RuntimeEvent("c1", "destroy", LABELS))
    assert "i1" not in table.instances and len(changes) == 4


def test_changes_a_running_task_causes_itself_do_not_tell_but_others_do() -> None:
    # (Tasks carry ids as Knit makes them; the table is keyed by the containers' labels.)
    deploy = DeployTask(
        task_id="1" * 32,
        instance_id="a" * 32,
        instance_index=0,
        deployment=TaskDeployment(id="d" * 32, name="web", image="app"),
    )
    in_flight: dict[str, DeployTask | StopTask] = {"i1": deploy}
    table, changes = reconciler(in_flight)
    table.apply(RuntimeEvent("c1", "create", LABELS))
    table.apply(RuntimeEvent("c1", "start", LABELS))
    assert table.instances["i1"].status == "running" and changes == []
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=1))  # not the deploy's doing
    assert len(changes) == 1
    in_flight["i1"] = StopTask(task_id="2" * 32, instance_id="a" * 32)
    table.apply(RuntimeEvent("c1", "start", LABELS))  # not the stop's doing
    assert len(changes) == 2
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=0))
    table.apply(RuntimeEvent("c1", "destroy", LABELS))
    assert "i1" not in table.instances and len(changes) == 2
    del in_flight["i1"]
    table.apply(RuntimeEvent("c2", "create", LABELS))
    assert len(changes) == 3


def test_late_events_do_not_undo_what_a_refresh_found() -> None:
    table, changes = reconciler()
    table.apply(RuntimeEvent("c1", "start", LABELS))
    table.apply(RuntimeEvent("c1", "create", LABELS))  # Docker's events may lag the calls
    assert table.instances["i1"].status == "running"
    table.removed["c1"] = None  # a stop task's refresh took it out of the table
    del table.instances["i1"]
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=0))
    table.apply(RuntimeEvent("c1", "destroy", LABELS))
    assert table.instances == {} and table.removed == {} and len(changes) == 1


@pytest.mark.anyio
async def test_a_refresh_during_a_resync_is_kept() -> None:
    running = ContainerState("c1", "n", LABELS, "running", None, "img")
    listed = anyio.Event()
    go_on = anyio.Event()

    async def inspect(container_id: str) -> ContainerState | None:
        return running

    async def listing(labels: object) -> list[ContainerState]:
        listed.set()
        await go_on.wait()
        return []  # taken before the container existed

    table = Reconciler(listing_ctx(inspect, listing))
    async with anyio.create_task_group() as tg:
        tg.start_soon(table.resync)
        await listed.wait()
        await table.refresh("i1", "c1")
        go_on.set()
    assert table.instances["i1"].status == "running"


def test_events_of_an_older_container_of_the_instance_are_ignored() -> None:
    table, _ = reconciler()
    table.apply(RuntimeEvent("new", "start", LABELS))
    table.apply(RuntimeEvent("old", "die", LABELS, exit_code=1))
    table.apply(RuntimeEvent("old", "destroy", LABELS))
    assert table.instances["i1"].container_id == "new"
    assert table.instances["i1"].status == "running"


def test_events_without_knit_labels_are_ignored() -> None:
    table, changes = reconciler()
    table.apply(RuntimeEvent("c1", "start", {"other": "x"}))
    assert table.instances == {} and changes == []


@pytest.mark.anyio
async def test_a_list_that_lags_the_events_does_not_undo_them() -> None:
    exited = ContainerState("c1", "n", LABELS, "exited", 137, "img")
    listed_running = ContainerState("c1", "n", LABELS, "running", None, "img")

    async def inspect(container_id: str) -> ContainerState | None:
        return exited if container_id == "c1" else None

    async def listing(labels: object) -> list[ContainerState]:
        return [listed_running]

    table = Reconciler(listing_ctx(inspect, listing))
    table.synced = True
    table.apply(RuntimeEvent("c1", "start", LABELS))
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=137))
    await table.resync()
    assert table.instances["i1"].status == "stopped"
    assert table.instances["i1"].exit_code == 137
