"""A small rollout scenario through the harness's real entry point: correctness, never speed.

Two simulated agents, one deployment of 6 replicas, updated twice 2 at a time (stop_first,
then start_first) through ``PUT /deployments/{id}``, against a real ``knit server`` and its
nats-server. The figures must exist, each rollout complete with exactly 6 instances of its
version, a batch last at least ``min_healthy_time``, and neither order run fewer instances
than it promises (as far as polls every 0.1 s can see: a dip or a surge shorter than that
may go unseen).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.report import REPORT_KEYS
from simulations.rollouts import FIGURE_KEYS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """
description = "2 agents, 6 replicas updated twice, 2 at a time"
agents = 2
heartbeat_interval = 1.0
node_ttl = 4.0
duration_s = 1

[profile]
create_latency = [0.001, 0.005]
start_latency = [0.005, 0.02]
stop_latency = [0.001, 0.005]
seed = 1

[[deployments]]
count = 1
replicas = 6
name_prefix = "small"
update = { min_healthy_time = 0.5 }

[[updates]]
at_s = 0.5
name_prefix = "small"
env = { VERSION = "2" }
policy = { max_parallel = 2, order = "stop_first", min_healthy_time = 0.5, healthy_deadline = 20 }

[[updates]]
at_s = 0.5
name_prefix = "small"
env = { VERSION = "3" }
policy = { max_parallel = 2, order = "start_first", min_healthy_time = 0.5, healthy_deadline = 20 }

[timeouts]
start_s = 15
registration_s = 15
placement_s = 20
rollout_s = 30
shutdown_s = 15
"""


def test_a_small_rollout_scenario_completes_both_rollouts_with_their_figures(
    tmp_path: Path, nats_server_binary: str
) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SCENARIO)
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "simulations", "run", str(path), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=130,
    )
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert list(report) == list(REPORT_KEYS)
    assert json.loads(lines[-1]) == report
    rollouts = json.loads((out / "rollouts.json").read_text())
    printed = next(line for line in lines if line.startswith("rollouts: "))
    assert json.loads(printed.removeprefix("rollouts: ")) == rollouts
    assert (out / "rollouts.png").stat().st_size > 0

    assert [(r["deployment"], r["order"]) for r in rollouts] == [
        ("small-0", "stop_first"),
        ("small-0", "start_first"),
    ]
    assert [r["version"] for r in rollouts] == [2, 3]
    for figures in rollouts:
        assert list(figures) == list(FIGURE_KEYS)
        assert figures["state"] == "complete", figures
        assert figures["error"] is None
        assert figures["exact"] is True
        assert (figures["running_new"], figures["running_other"]) == (6, 0)
        assert figures["batches"] == 3
        assert figures["duration_s"] >= 3 * 0.5  # each batch waits min_healthy_time
        assert figures["batch_s"] >= 0.5
        assert figures["overhead_s"] == pytest.approx(figures["batch_s"] - 0.5, abs=0.002)
        assert figures["batch_s_p50"] is not None and figures["batch_s_max"] is not None
        assert figures["put_ms"] > 0
    stop_first, start_first = rollouts
    assert stop_first["min_running"] >= 6 - 2  # at most max_parallel down at a time
    assert start_first["min_running"] >= 6  # the old one stops once the new one is healthy
    assert start_first["max_running"] > 6  # (polls may miss the surge of a batch, not all)

    checks = json.loads(next(line for line in lines if line.startswith("checks: "))[8:])
    assert checks["deployments_updated"] == 1
    assert checks["deployments_exact_at_end"] == 1
    assert report["false_unhealthy"] == 0
