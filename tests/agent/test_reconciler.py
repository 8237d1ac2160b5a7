"""The Reconciler's table follows Docker's events without asking Docker, and says when it
changed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from knit.agent.context import AgentContext
from knit.agent.reconciler import Reconciler
from knit.runtime.base import ContainerState, RuntimeEvent

pytestmark = pytest.mark.unit

LABELS = {"knit.instance": "i1", "knit.deployment": "d1", "knit.node": "n1"}


def reconciler() -> tuple[Reconciler, list[int]]:
    changes: list[int] = []
    ctx = SimpleNamespace(on_change=lambda: changes.append(1))
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

    async def remove_stale(keep: object) -> list[str]:
        return []

    ctx = SimpleNamespace(
        on_change=None,
        node_id="n1",
        runtime=SimpleNamespace(inspect=inspect, list=listing),
        files=SimpleNamespace(remove_stale=remove_stale),
    )
    table = Reconciler(cast(AgentContext, ctx))
    table.synced = True
    table.apply(RuntimeEvent("c1", "start", LABELS))
    table.apply(RuntimeEvent("c1", "die", LABELS, exit_code=137))
    await table.resync()
    assert table.instances["i1"].status == "stopped"
    assert table.instances["i1"].exit_code == 137
