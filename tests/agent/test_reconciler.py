"""The Reconciler's table follows Docker's events without asking Docker, and says when it
changed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from knit.agent.context import AgentContext
from knit.agent.reconciler import Reconciler
from knit.runtime.base import RuntimeEvent

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
