"""Rollouts in the harness: what a read of a deployment shows, the figures of synthetic
rollouts, the spec an update sends, and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from knit.domain.specs import UpdateOrder, UpdatePolicy
from simulations.load import Submitted
from simulations.rollout_plot import plot_rollouts
from simulations.rollouts import (
    FIGURE_KEYS,
    RolloutTrace,
    Sample,
    failures_of,
    in_group,
    observe,
    rollout_figures,
    updated_spec,
)
from simulations.scenario import DeploymentUpdate

pytestmark = pytest.mark.unit


def instance(version: int, status: str = "running") -> dict[str, Any]:
    return {"version": version, "status": status, "health": "none"}


def update(
    max_parallel: int = 2, order: str = "stop_first", min_healthy_time: float = 0.5
) -> DeploymentUpdate:
    policy = UpdatePolicy(
        max_parallel=max_parallel, order=UpdateOrder(order), min_healthy_time=min_healthy_time
    )
    return DeploymentUpdate(at_s=1, name_prefix="app", env={"V": "2"}, policy=policy)


def stop_first_trace() -> RolloutTrace:
    """6 replicas, 2 at a time: each pair healthy 0.8 s after the one before."""
    trace = RolloutTrace("app-0", "d1", 6, update(), version=2, put_s=0.02)
    trace.samples = [
        Sample(0.1, None, 0, 0, 6, 0),
        Sample(0.2, "running", 2, 0, 4, 0, "rolling out version 2"),
        Sample(0.5, "running", 2, 0, 6, 2),
        Sample(0.8, "running", 4, 2, 4, 2),
        Sample(1.6, "running", 6, 4, 4, 4),
        Sample(2.3, "running", 6, 5, 6, 6),
        Sample(2.4, "complete", 6, 6, 6, 6, "version 2 is running: 6 healthy"),
    ]
    trace.ended_at = 2.4
    return trace


def test_a_read_shows_the_rollout_of_the_version_followed_and_the_instances_running() -> None:
    document = {
        "version": 2,
        "rollout": {"version": 2, "state": "running", "updated": 3, "healthy": 1, "message": "m"},
        "instances": [instance(1), instance(2), instance(2, "pending"), instance(1, "stopped")],
    }
    assert observe(document, 2, 1.5) == Sample(1.5, "running", 3, 1, 2, 1, "m")
    # The deployment still shows the rollout before: not this version's yet.
    assert observe(document, 3, 0.1) == Sample(0.1, None, 0, 0, 2, 0)
    # A rollback of version 3 is still its rollout.
    document["rollout"] = {"version": 2, "failed_version": 3, "state": "rolled_back"}
    assert observe(document, 3, 9.0).state == "rolled_back"
    assert observe({"instances": [], "rollout": None}, 2, 0.0).running == 0


def test_the_figures_of_a_completed_rollout() -> None:
    figures = rollout_figures(stop_first_trace())
    assert tuple(figures) == FIGURE_KEYS
    assert figures["state"] == "complete"
    assert figures["duration_s"] == 2.4
    assert figures["batches"] == 3
    assert figures["batch_s"] == pytest.approx(0.8)
    assert figures["overhead_s"] == pytest.approx(0.3)
    assert figures["batch_s_p50"] == pytest.approx(0.8)  # healthy by 2 at 0.8, 1.6, 2.4
    assert figures["batch_s_max"] == pytest.approx(0.8)
    assert (figures["min_running"], figures["max_running"]) == (4, 6)
    assert (figures["running_new"], figures["running_other"], figures["exact"]) == (6, 0, True)
    assert figures["settle_s"] == 0.0
    assert figures["put_ms"] == 20.0
    assert figures["error"] is None
    assert failures_of([figures]) == []


def test_a_last_batch_smaller_than_max_parallel_counts_as_a_batch() -> None:
    trace = stop_first_trace()
    trace.update = update(max_parallel=4)
    figures = rollout_figures(trace)
    assert figures["batches"] == 2
    assert figures["batch_s"] == pytest.approx(1.2)
    assert figures["batch_s_max"] == pytest.approx(1.6)  # 4 healthy at 1.6, 6 at 2.4


def test_instances_that_linger_after_the_end_show_in_settle_s() -> None:
    trace = stop_first_trace()
    trace.samples[-1] = Sample(2.4, "complete", 6, 6, 7, 6)
    trace.samples.append(Sample(2.9, "complete", 6, 6, 6, 6))
    figures = rollout_figures(trace)
    assert figures["settle_s"] == pytest.approx(0.5)
    assert figures["exact"] is True
    assert figures["max_running"] == 7


def test_a_paused_rollout_has_no_duration_and_is_a_failure() -> None:
    trace = stop_first_trace()
    trace.samples[-1] = Sample(60.0, "paused", 6, 5, 6, 6, "instance 5 not healthy in 60 s")
    trace.ended_at = 60.0
    figures = rollout_figures(trace)
    assert figures["state"] == "paused"
    assert figures["duration_s"] is figures["batch_s"] is figures["overhead_s"] is None
    assert figures["batch_s_p50"] is None
    [failure] = failures_of([figures])
    assert failure == "rollout of app-0 version 2 ended paused: instance 5 not healthy in 60 s"


def test_a_complete_rollout_with_old_instances_left_is_a_failure() -> None:
    trace = stop_first_trace()
    trace.samples[-1] = Sample(2.4, "complete", 6, 6, 7, 6)
    figures = rollout_figures(trace)
    assert figures["exact"] is False and figures["settle_s"] is None
    [failure] = failures_of([figures])
    assert "6 instances of the version and 1 of others run, not 6 and 0" in failure


def test_a_refused_put_is_a_failure_with_its_answer() -> None:
    trace = RolloutTrace("app-0", "d1", 6, update(), error="PUT answered 422: bad")
    figures = rollout_figures(trace)
    assert figures["state"] is None and figures["exact"] is False
    assert failures_of([figures]) == ["rollout of app-0 version None: PUT answered 422: bad"]


def test_an_update_sends_the_full_spec_with_its_change_and_policy() -> None:
    spec = {"name": "app-0", "image": "knit-sim/app:1", "replicas": 6, "env": {"A": "1"}}
    change = update(max_parallel=3, order="start_first")
    body = updated_spec(spec, change)
    assert body["env"] == {"A": "1", "V": "2"}
    assert body["name"] == "app-0" and body["replicas"] == 6
    assert body["image"] == "knit-sim/app:1"
    assert body["update"] == {
        "max_parallel": 3,
        "order": "start_first",
        "min_healthy_time": 0.5,
        "healthy_deadline": 300.0,
        "on_failure": "pause",
    }
    assert spec["env"] == {"A": "1"}  # the spec given is left as it was
    new_image = DeploymentUpdate(at_s=0, name_prefix="app", image="knit-sim/app:2")
    assert updated_spec(spec, new_image)["image"] == "knit-sim/app:2"


@pytest.mark.parametrize(
    ("name", "member"), [("app-0", True), ("app-12", True), ("app-x-1", False), ("apps-1", False)]
)
def test_an_update_changes_the_deployments_of_its_group_only(name: str, member: bool) -> None:
    sub = Submitted("id", 1, 0.0, spec={"name": name})
    assert in_group(sub, update()) is member


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.png"
    plot_rollouts([stop_first_trace(), RolloutTrace("b", "d2", 1, update())], path, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
