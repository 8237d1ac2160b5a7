"""What ``knit deploy``/``scale``/``rollback`` print while following a deployment, and when
they stop: :func:`knit.commands.progress.progress`, a table of readings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from knit.commands.progress import Outcome, Target, progress

pytestmark = pytest.mark.unit

ROLLOUT_2 = Target(2, rollout=True)
INSTANCES_1 = Target(1, rollout=False)
CREATE_1 = Target(1, rollout=True)


def instance(
    index: int,
    status: str = "running",
    *,
    version: int = 1,
    desired: bool = True,
    health: str = "none",
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "index": index,
        "status": status,
        "version": version,
        "desired": desired,
        "health": health,
        "error": error,
    }


def dep(
    *instances: dict[str, Any],
    version: int = 1,
    replicas: int = 3,
    rollout: dict[str, Any] | None = None,
    pending: str | None = None,
    status: str = "active",
) -> dict[str, Any]:
    return {
        "id": "d1",
        "name": "web",
        "version": version,
        "replicas": replicas,
        "status": "pending" if pending and status == "active" else status,
        "pending_reason": pending,
        "rollout": rollout,
        "instances": list(instances),
    }


def rollout(
    state: str, updated: int, healthy: int, *, version: int = 2, message: str = ""
) -> dict[str, Any]:
    return {
        "version": version,
        "state": state,
        "desired": 3,
        "updated": updated,
        "healthy": healthy,
        "message": message,
    }


@dataclass
class Case:
    id: str
    previous: dict[str, Any] | None
    current: dict[str, Any] | None
    target: Target
    lines: list[str]
    outcome: Outcome | None = None
    message: str = ""


R = instance  # short names keep the table readable
WHY = "instance 0 of version 2 not healthy within 30 s (unhealthy)"
CASES = [
    # --- a new deployment: wait for its replicas to run -------------------------------------
    Case(
        "create-first-reading", None, dep(R(0, "pending")), INSTANCES_1, ["version 1: 0/3 running"]
    ),
    Case(
        "create-one-more-running",
        dep(R(0, "pending"), R(1, "pending"), R(2, "pending")),
        dep(R(0), R(1, "pending"), R(2, "pending")),
        INSTANCES_1,
        ["version 1: 1/3 running"],
    ),
    Case(
        "create-nothing-changed",
        dep(R(0), R(1, "pending"), R(2, "pending")),
        dep(R(0), R(1, "pending"), R(2, "pending")),
        INSTANCES_1,
        [],
    ),
    Case(
        "create-all-running",
        dep(R(0), R(1), R(2, "pending")),
        dep(R(0), R(1), R(2)),
        INSTANCES_1,
        ["deployment web running: 3/3 (version 1)"],
        Outcome.COMPLETE,
    ),
    Case(
        "create-no-replicas",
        None,
        dep(replicas=0),
        INSTANCES_1,
        ["deployment web running: 0/0 (version 1)"],
        Outcome.COMPLETE,
    ),
    Case(
        "create-pending-reason-printed-once",
        None,
        dep(R(0, "pending"), replicas=1, pending="no node matches node_selector zone=mars"),
        INSTANCES_1,
        ["pending: no node matches node_selector zone=mars", "version 1: 0/1 running"],
    ),
    Case(
        "create-same-pending-reason-is-not-repeated",
        dep(R(0, "pending"), replicas=1, pending="no node matches"),
        dep(R(0, "pending"), replicas=1, pending="no node matches"),
        INSTANCES_1,
        [],
    ),
    Case(
        "create-instance-error-printed-once",
        dep(R(0, "pending"), replicas=1),
        dep(R(0, "error", error="pull: manifest unknown"), replicas=1),
        INSTANCES_1,
        ["instance 0: error: pull: manifest unknown"],
    ),
    Case(
        "scale-down-surplus-stopping-not-counted",
        None,
        dep(R(0), R(1), R(2, desired=False), replicas=2),
        INSTANCES_1,
        ["deployment web running: 2/2 (version 1)"],
        Outcome.COMPLETE,
    ),
    Case(
        "scale-up-counts-every-desired-version",
        None,
        dep(R(0, version=1), R(1, version=2), R(2, "pending", version=2), version=2),
        Target(2, rollout=False),
        ["version 2: 2/3 running"],
    ),
    Case(
        "scale-superseded-by-an-update",
        None,
        dep(R(0), version=3),
        Target(2, rollout=False),
        [],
        Outcome.SUPERSEDED,
        "version 2 was replaced by version 3 meanwhile",
    ),
    # --- a new deployment the server rolls out as version 1 -----------------------------------
    Case(
        "create-rolled-out",
        None,
        dep(R(0), version=1, rollout=rollout("running", 1, 0, version=1)),
        CREATE_1,
        ["version 1: 1/3 updated, 0 healthy"],
    ),
    Case(
        "create-rollout-complete",
        dep(R(0), version=1, rollout=rollout("running", 3, 2, version=1)),
        dep(R(0), version=1, rollout=rollout("complete", 3, 3, version=1)),
        CREATE_1,
        ["rollout complete: version 1"],
        Outcome.COMPLETE,
    ),
    Case(
        "create-without-a-rollout-is-awaited-as-instances",
        None,
        dep(R(0), R(1), R(2, "pending")),
        CREATE_1,
        ["version 1: 2/3 running"],
    ),
    Case(
        "create-rollout-paused",
        None,
        dep(
            R(0, "error", error="pull: manifest unknown"),
            version=1,
            rollout=rollout("paused", 1, 0, version=1, message="no stable version"),
        ),
        CREATE_1,
        [
            "instance 0: error: pull: manifest unknown",
            "rollout paused: version 1: 1/3 updated, 0 healthy",
        ],
        Outcome.PAUSED,
        "the rollout of version 1 paused: no stable version",
    ),
    # --- an update: follow the rollout of the target version --------------------------------
    Case(
        "rollout-not-started-yet-says-nothing",
        None,
        dep(R(0), R(1), R(2), version=2, rollout=rollout("complete", 3, 3, version=1)),
        ROLLOUT_2,
        [],
    ),
    Case(
        "rollout-not-started-no-rollout-at-all",
        None,
        dep(R(0), version=2),
        ROLLOUT_2,
        [],
    ),
    Case(
        "rollout-running",
        dep(version=2, rollout=rollout("running", 0, 0)),
        dep(version=2, rollout=rollout("running", 1, 1)),
        ROLLOUT_2,
        ["version 2: 1/3 updated, 1 healthy"],
    ),
    Case(
        "rollout-running-with-a-message",
        None,
        dep(version=2, rollout=rollout("running", 1, 0, message="rolling out version 2")),
        ROLLOUT_2,
        ["rolling out version 2", "version 2: 1/3 updated, 0 healthy"],
    ),
    Case(
        "rollout-same-message-is-not-repeated",
        dep(version=2, rollout=rollout("running", 1, 0, message="rolling out version 2")),
        dep(version=2, rollout=rollout("running", 2, 1, message="rolling out version 2")),
        ROLLOUT_2,
        ["version 2: 2/3 updated, 1 healthy"],
    ),
    Case(
        "rollout-no-change-no-line",
        dep(version=2, rollout=rollout("running", 1, 1)),
        dep(version=2, rollout=rollout("running", 1, 1)),
        ROLLOUT_2,
        [],
    ),
    Case(
        "rollout-complete",
        dep(version=2, rollout=rollout("running", 2, 2)),
        dep(version=2, rollout=rollout("complete", 3, 3)),
        ROLLOUT_2,
        ["rollout complete: version 2"],
        Outcome.COMPLETE,
    ),
    Case(
        "rollout-paused-with-its-reason",
        dep(version=2, rollout=rollout("running", 1, 0)),
        dep(
            R(0, version=2, health="unhealthy"),
            R(1),
            R(2),
            version=2,
            rollout=rollout("paused", 1, 0, message="instance 0 not healthy within 30 s"),
        ),
        ROLLOUT_2,
        ["instance 0: unhealthy (version 2)", "rollout paused: version 2: 1/3 updated, 0 healthy"],
        Outcome.PAUSED,
        "the rollout of version 2 paused: instance 0 not healthy within 30 s",
    ),
    Case(
        "rollout-paused-without-a-reason",
        None,
        dep(version=2, rollout=rollout("paused", 1, 0)),
        ROLLOUT_2,
        ["rollout paused: version 2: 1/3 updated, 0 healthy"],
        Outcome.PAUSED,
        "the rollout of version 2 paused: no reason given",
    ),
    Case(
        "rollout-rolling-back-goes-on",
        dep(version=2, rollout=rollout("running", 1, 0)),
        dep(
            version=1,
            rollout={
                **rollout("rolling_back", 2, 2, version=1, message=WHY + ": rolling back"),
                "failed_version": 2,
            },
        ),
        ROLLOUT_2,
        [WHY + ": rolling back", "rolling back to version 1: 2/3 updated, 2 healthy"],
    ),
    Case(
        "rollout-rolled-back",
        dep(
            version=1,
            rollout={**rollout("rolling_back", 2, 2, version=1), "failed_version": 2},
        ),
        dep(
            version=1,
            rollout={
                **rollout("rolled_back", 3, 3, version=1, message="version 2 failed; back"),
                "failed_version": 2,
            },
        ),
        ROLLOUT_2,
        ["rolled back to version 1"],
        Outcome.ROLLED_BACK,
        "the rollout of version 2 was rolled back: version 2 failed; back",
    ),
    Case(
        "rollout-rolled-back-in-place",
        dep(version=2, rollout=rollout("rolling_back", 1, 0, message="not healthy")),
        dep(version=2, rollout=rollout("rolled_back", 0, 0, message="not healthy")),
        ROLLOUT_2,
        ["rolled back: version 2"],
        Outcome.ROLLED_BACK,
        "the rollout of version 2 was rolled back: not healthy",
    ),
    Case(
        "an-older-rollback-is-not-the-followed-one",
        None,
        dep(
            version=3,
            rollout={**rollout("rolled_back", 3, 3, version=1), "failed_version": 2},
        ),
        Target(3, rollout=True),
        [],
    ),
    Case(
        "rollout-errors-of-old-versions-are-not-its-business",
        dep(version=2, rollout=rollout("running", 0, 0)),
        dep(
            R(0, "error", version=1, error="old trouble"),
            R(1, "error", version=2, error="exec: no such file"),
            version=2,
            rollout=rollout("running", 0, 0),
        ),
        ROLLOUT_2,
        ["instance 1: error: exec: no such file"],
    ),
    Case(
        "rollout-pending-reason",
        dep(version=2, rollout=rollout("running", 1, 1)),
        dep(version=2, rollout=rollout("running", 1, 1), pending="no node has a free port 80"),
        ROLLOUT_2,
        ["pending: no node has a free port 80"],
    ),
    Case(
        "rollout-unknown-state-is-shown-and-awaited",
        None,
        dep(version=2, rollout=rollout("canarying", 1, 1)),
        ROLLOUT_2,
        ["version 2: canarying: 1/3 updated, 1 healthy"],
    ),
    Case(
        "rollout-superseded",
        dep(version=2, rollout=rollout("running", 1, 1)),
        dep(version=3, rollout=rollout("running", 0, 0, version=3)),
        ROLLOUT_2,
        [],
        Outcome.SUPERSEDED,
        "version 2 was replaced by version 3 meanwhile",
    ),
    # --- either: the deployment goes away ---------------------------------------------------
    Case(
        "deleted",
        dep(version=2, rollout=rollout("running", 1, 1)),
        None,
        ROLLOUT_2,
        [],
        Outcome.DELETED,
        "the deployment was deleted",
    ),
    Case(
        "being-deleted",
        None,
        dep(R(0), status="deleting"),
        INSTANCES_1,
        [],
        Outcome.DELETED,
        "deployment web is being deleted",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_progress(case: Case) -> None:
    step = progress(case.previous, case.current, case.target)
    assert list(step.lines) == case.lines
    assert step.outcome == case.outcome
    assert step.message == case.message
    assert step.finished == (case.outcome is not None)
    assert step.succeeded == (case.outcome is Outcome.COMPLETE)


def test_the_summary_says_where_things_stand_even_without_a_new_line() -> None:
    before = dep(R(0, "pending"), replicas=1, pending="no node matches zone=mars")
    step = progress(before, before, CREATE_1)
    assert step.lines == ()
    assert step.summary == "version 1: 0/1 running; pending: no node matches zone=mars"
    waiting = progress(None, dep(version=2), ROLLOUT_2)
    assert waiting.summary == "the rollout of version 2 has not started"


def test_a_server_without_versions_is_followed_as_version_1() -> None:
    old = {"id": "d1", "name": "web", "replicas": 1, "status": "active", "instances": []}
    assert progress(None, old, CREATE_1).lines == ("version 1: 0/1 running",)
    running = {**old, "instances": [{"index": 0, "status": "running", "desired": True}]}
    assert progress(old, running, CREATE_1).outcome is Outcome.COMPLETE
