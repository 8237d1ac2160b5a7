"""The smoke scenario through the harness's real entry point: correctness, never speed.

``python -m simulations run smoke`` starts its own nats-server and ``knit server``
processes and 100 simulated agents, deploys 1,000 containers, churns a little, and reports.
This test checks what must always hold (every container placed, no node marked unhealthy
while its agent was alive), not how fast: CI machines vary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.report import REPORT_KEYS
from simulations.scenario import load_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_scenario_places_every_container_and_no_node_is_falsely_unhealthy(
    tmp_path: Path, nats_server_binary: str
) -> None:
    scenario = load_scenario("smoke")
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, "-m", "simulations", "run", "smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert list(report) == list(REPORT_KEYS)
    assert json.loads(lines[-1]) == report  # the last line printed is the report
    assert (out / "report.png").stat().st_size > 0

    assert report["agents"] == scenario.agents
    assert report["registration_s"] is not None
    assert report["placement_s"] is not None  # the server showed every replica running
    assert report["containers"] >= scenario.containers
    assert report["false_unhealthy"] == 0
    checks = json.loads(next(line for line in lines if line.startswith("checks: "))[8:])
    assert checks["initial_containers_placed"] is True
    assert checks["deployments_refused"] == 0
    assert checks["unhealthy_at_end"] == 0
    assert checks["nodes"] == scenario.agents
