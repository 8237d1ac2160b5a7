"""Rollouts in the harness: what a read of a deployment shows, the figures of synthetic
rollouts, the spec an update sends, the plot, and the updater against a fake API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from knit.domain.update_policy import UpdateOrder, UpdatePolicy
from simulations import rollouts
from simulations.load import ApiLatencies, DeployTracker, Submitted
from simulations.report import UPDATE, Recorder
from simulations.rollout_plot import plot_rollouts
from simulations.rollouts import (
    FIGURE_KEYS,
    RolloutTrace,
    Sample,
    Updater,
    failures_of,
    in_group,
    instances_at_end,
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


class FakeApi:
    """A deployment of 4 replicas behind ``httpx.MockTransport``: version 1's own rollout ends
    after two reads; a PUT makes version 2, whose rollout then moves on at each read."""

    def __init__(self) -> None:
        self.version = 1
        self.reads = 0
        self.put: dict[str, Any] | None = None
        self.reads_before_put = 0
        # (updated, healthy, instances of version 2 running, state) after the PUT, read by read
        self.script = [
            (0, 0, 0, "running"),
            (2, 0, 2, "running"),
            (2, 2, 2, "running"),
            (4, 2, 4, "running"),
            (4, 4, 4, "complete"),
        ]

    def document(self) -> dict[str, Any]:
        self.reads += 1
        if self.put is None:
            state = "running" if self.reads <= 2 else "complete"
            rollout = {"version": 1, "state": state, "updated": 4, "healthy": 4}
            return {"version": 1, "rollout": rollout, "instances": [instance(1)] * 4}
        step = min(self.reads - self.reads_before_put - 1, len(self.script) - 1)
        updated, healthy, new, state = self.script[step]
        rollout = {"version": 2, "state": state, "updated": updated, "healthy": healthy}
        instances = [instance(2)] * new + [instance(1)] * (4 - new if state == "running" else 0)
        return {"version": 2, "rollout": rollout, "instances": instances}

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/deployments/d1"
        if request.method == "PUT":
            self.put = json.loads(request.content)
            self.reads_before_put = self.reads
            return httpx.Response(200, json={"id": "d1", "version": 2})
        return httpx.Response(200, json=self.document())


@pytest.mark.anyio
async def test_the_updater_waits_for_the_rollout_before_then_follows_its_own_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rollouts, "POLL_S", 0.0)
    api = FakeApi()
    recorder = Recorder()
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(api.handle), base_url="http://knit"
    ) as http:
        tracker = DeployTracker(http, recorder)
        spec = {"name": "app-0", "image": "knit-sim/app:1", "replicas": 4}
        tracker.deployments["d1"] = Submitted("d1", 4, 0.0, spec=spec)
        tracker.deployments["d2"] = Submitted("d2", 1, 0.0, spec={"name": "other-0"})
        lines: list[str] = []
        latencies = ApiLatencies()
        updater = Updater(http, tracker, recorder, latencies, lines.append, rollout_s=10)
        with anyio.fail_after(10):
            await updater.run([update()], began=time.monotonic() - 5)
        assert await instances_at_end(http, updater.traces) == {
            "deployments_updated": 1,
            "deployments_exact_at_end": 1,
        }

    assert api.reads_before_put == 3  # v1's rollout read twice running, then complete
    assert api.put is not None and api.put["env"] == {"V": "2"}
    assert api.put["update"]["max_parallel"] == 2
    assert tracker.deployments["d1"].spec == api.put  # the next update builds on this one
    [trace] = updater.traces
    assert (trace.name, trace.version, trace.error) == ("app-0", 2, None)
    assert [s.state for s in trace.samples] == ["running"] * 4 + ["complete"]
    figures = rollout_figures(trace)
    assert figures["state"] == "complete" and figures["exact"] is True
    assert figures["batches"] == 2 and figures["min_running"] == 4
    assert latencies.by_kind["update_deployment"] and recorder.marks[UPDATE] > 0
    assert lines[0] == "update: 1 deployments of app, stop_first by 2"
    assert any("complete: 4 updated, 4/4 healthy" in line for line in lines)


@pytest.mark.anyio
async def test_a_put_that_makes_no_new_version_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "d1", "version": 1, "instances": []})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handle), base_url="http://k"
    ) as http:
        tracker = DeployTracker(http, Recorder())
        tracker.deployments["d1"] = Submitted("d1", 4, 0.0, spec={"name": "app-0"})
        updater = Updater(http, tracker, Recorder(), ApiLatencies(), lambda _: None, 10)
        with anyio.fail_after(10):
            await updater.run([update()], began=time.monotonic())
    [trace] = updater.traces
    assert trace.error == "the PUT made no new version (version 1)"
