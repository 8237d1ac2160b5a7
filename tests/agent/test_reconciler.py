"""The Reconciler's table follows Docker's events without asking Docker, and says when it
changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import anyio
import pytest

from knit.agent.context import AgentContext
from knit.agent.reconciler import Reconciler, health_after
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


# -- health --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "detail", "running", "checked", "health"),
    [
        ("health_status", "healthy", "starting", True, "healthy"),
        ("health_status", "unhealthy", "healthy", True, "unhealthy"),
        ("health_status", "bogus", "starting", True, None),
        ("start", "", None, True, "starting"),  # every run starts "starting"
        ("start", "", None, False, "none"),
        ("start", "", "healthy", True, "healthy"),  # a late start of the run shown
        ("unpause", "", "unhealthy", True, "unhealthy"),
        ("create", "", None, True, "none"),
        ("die", "", "healthy", True, "none"),
        ("kill", "", "healthy", True, None),
        ("stop", "", None, True, None),
    ],
)
def test_the_health_after_an_event(
    action: str, detail: str, running: str | None, checked: bool, health: str | None
) -> None:
    assert health_after(action, detail, running, checked) == health


def shown(table: Reconciler, instance_id: str = "i1") -> tuple[str, str]:
    """The status and health the table shows for an instance."""
    report = table.instances[instance_id]
    return report.status, report.health


def health_event(container_id: str, detail: str) -> RuntimeEvent:
    return RuntimeEvent(container_id, "health_status", LABELS, detail=detail)


def test_health_events_change_the_health_and_tell_even_during_a_deploy() -> None:
    deploy = DeployTask(
        task_id="1" * 32,
        instance_id="a" * 32,
        instance_index=0,
        deployment=TaskDeployment(id="d" * 32, name="web", image="app"),
    )
    table, changes = reconciler({"i1": deploy})
    table.apply(RuntimeEvent("c1", "create", LABELS))
    table.apply(RuntimeEvent("c1", "start", LABELS))
    assert shown(table) == ("running", "none")  # not known to have a check yet
    table.apply(health_event("c1", "healthy"))
    assert shown(table) == ("running", "healthy") and len(changes) == 1
    table.apply(health_event("c1", "healthy"))  # nothing new: no report, no beat
    assert len(changes) == 1
    table.apply(health_event("c1", "unhealthy"))
    assert shown(table) == ("running", "unhealthy") and len(changes) == 2
    # Once known to have a check, every run of the container starts "starting".
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=0))
    assert shown(table) == ("stopped", "none")
    table.apply(RuntimeEvent("c1", "start", LABELS))
    assert shown(table) == ("running", "starting")


def test_health_events_of_a_container_that_does_not_run_are_ignored() -> None:
    table, changes = reconciler()
    table.apply(health_event("c1", "healthy"))  # not listed yet: the next re-list adds it
    assert table.instances == {}
    table.apply(RuntimeEvent("c1", "start", LABELS))
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=1))
    table.apply(health_event("c1", "unhealthy"))  # late
    assert shown(table) == ("stopped", "none")
    table.apply(RuntimeEvent("c2", "start", LABELS))
    table.apply(health_event("c1", "healthy"))  # of the instance's older container
    assert table.instances["i1"].container_id == "c2"
    assert shown(table) == ("running", "none")
    assert len(changes) == 3


@pytest.mark.anyio
async def test_a_refresh_enters_starting_for_a_container_with_a_check_and_asks_when_unknown() -> (
    None
):
    asked: list[str] = []
    image_checked = ContainerState("c2", "n", LABELS, "running", None, "img", health="starting")

    async def inspect(container_id: str) -> ContainerState | None:
        asked.append(container_id)
        return image_checked

    async def listing(labels: object) -> list[ContainerState]:
        return []

    table = Reconciler(listing_ctx(inspect, listing))
    entry = await table.refresh("i1", "c1", "d1", True)  # the task's spec has a check
    assert entry is not None and (entry.status, entry.health) == ("running", "starting")
    assert asked == []
    entry = await table.refresh("i1", "c1", "d1", False)  # one without: none
    assert entry is not None and entry.health == "none"
    entry = await table.refresh("i2", "c2", "d1", None)  # made without: its image may have one
    assert entry is not None and entry.health == "starting" and asked == ["c2"]
    table.apply(RuntimeEvent("c2", "start", {**LABELS, "knit.instance": "i2"}))  # late
    assert shown(table, "i2") == ("running", "starting")
    table.apply(
        RuntimeEvent("c2", "health_status", {**LABELS, "knit.instance": "i2"}, detail="healthy")
    )
    assert shown(table, "i2") == ("running", "healthy")
    entry = await table.refresh("i2", "c2", "d1", None)  # known to have one: not asked again
    assert entry is not None and entry.health == "healthy" and asked == ["c2"]


@pytest.mark.anyio
async def test_a_resync_reads_the_health_and_learns_which_containers_have_a_check() -> None:
    listed = ContainerState("c1", "n", LABELS, "running", None, "img", health="healthy")

    async def inspect(container_id: str) -> ContainerState | None:
        return listed

    async def listing(labels: object) -> list[ContainerState]:
        return [listed]

    table = Reconciler(listing_ctx(inspect, listing))
    await table.resync()
    assert shown(table) == ("running", "healthy") and "c1" in table.checked
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=0))
    table.apply(RuntimeEvent("c1", "start", LABELS))
    assert shown(table) == ("running", "starting")


@pytest.mark.anyio
async def test_a_restarts_own_late_events_do_not_undo_its_refresh() -> None:
    restart = DeployTask(
        task_id="1" * 32,
        instance_id="a" * 32,
        instance_index=0,
        deployment=TaskDeployment(id="d" * 32, name="web", image="app"),
        restart=True,
    )

    async def inspect(container_id: str) -> ContainerState | None:
        raise AssertionError("not asked: the task knows")

    async def listing(labels: object) -> list[ContainerState]:
        return []

    ctx = listing_ctx(inspect, listing)
    changes: list[int] = []
    ctx.on_change = lambda: changes.append(1)
    table = Reconciler(ctx)
    table.apply(RuntimeEvent("c1", "start", LABELS))
    table.apply(health_event("c1", "unhealthy"))
    ctx.in_flight["i1"] = restart
    # The restart stopped and started the container; none of its events was applied yet.
    entry = await table.refresh("i1", "c1", "d1", True)
    assert entry is not None and (entry.status, entry.health) == ("running", "starting")
    del ctx.in_flight["i1"]  # the task ended
    for event in (
        health_event("c1", "unhealthy"),  # of the run before
        RuntimeEvent("c1", "kill", LABELS),
        RuntimeEvent("c1", "die", LABELS, exit_code=143),
        RuntimeEvent("c1", "stop", LABELS),
        RuntimeEvent("c1", "start", LABELS),
    ):
        table.apply(event)
        assert shown(table) == ("running", "starting")
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=1))  # after its start: real
    assert table.instances["i1"].status == "stopped"
    assert len(changes) == 3  # start, unhealthy; then that exit


@pytest.mark.anyio
async def test_a_restart_whose_events_came_first_is_refreshed_as_usual() -> None:
    restart = DeployTask(
        task_id="1" * 32,
        instance_id="a" * 32,
        instance_index=0,
        deployment=TaskDeployment(id="d" * 32, name="web", image="app"),
        restart=True,
    )
    table, _ = reconciler({"i1": restart})
    table.apply(RuntimeEvent("c1", "start", LABELS))
    table.apply(health_event("c1", "healthy"))
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=143))
    table.apply(RuntimeEvent("c1", "start", LABELS))
    table.apply(health_event("c1", "unhealthy"))  # the new run is unhealthy already
    entry = await table.refresh("i1", "c1", "d1", True)
    assert entry is not None and entry.health == "unhealthy"
    assert table.ahead == {}
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=1))
    assert table.instances["i1"].status == "stopped"
