"""Reports: figures computed from synthetic time series, report.json and a valid report.png."""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import pytest

from simulations import report as r
from simulations.report import Recorder, build_report, format_report, percentile, write_report

pytestmark = pytest.mark.unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def synthetic_run(fault: bool = True) -> Recorder:
    """A 60 s run of 100 agents: 1,000 placements in 4 s, heartbeats every second, a fault."""
    rec = Recorder(start=0.0)
    rec.mark(r.AGENTS_STARTED, 0.0)
    rec.mark(r.JOINED, 0.5)
    rec.mark(r.REGISTERED, 1.5)
    rec.mark(r.PLACEMENT_STARTED, 2.0)
    for i in range(1000):
        rec.placed(1, 2.0 + i * 0.004)
    rec.mark(r.PLACED, 6.0)
    rec.mark(r.STEADY, 10.0)
    for second in range(10, 60):
        for agent in range(100):
            rec.heartbeat(0.010 if agent > 1 else 0.200, second + agent / 100)
        rec.node_health(100 if second < 30 else 90, 0 if second < 30 else 10, float(second))
        rec.server(rss_bytes=(100 + second) * 2**20, cpu_s=second / 10, at=float(second))
    rec.mark(r.END, 60.0)
    for ms in range(1, 101):
        rec.deploy_latency(ms / 1000)
        rec.api_latency(ms / 10_000)
    rec.false_unhealthy("node-7")
    rec.false_unhealthy("node-7")
    if fault:
        rec.mark(r.FAULT, 20.0)
        rec.mark(r.DETECTED, 35.5)
        rec.mark(r.REPLACED, 41.25)
    return rec


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND"
    return width, height


def test_percentile_interpolates_linearly_and_is_none_without_data() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_the_report_has_exactly_the_keys_in_order() -> None:
    report = build_report(synthetic_run(), agents=100, containers=1000)
    assert tuple(report) == r.REPORT_KEYS
    assert len(r.REPORT_KEYS) == 17


def test_the_report_names_the_servers_store_sqlite_unless_told() -> None:
    assert build_report(Recorder(), agents=1, containers=0)["database"] == "sqlite"
    report = build_report(Recorder(), agents=1, containers=0, database="postgresql")
    assert report["database"] == "postgresql"


def test_figures_are_computed_from_the_series() -> None:
    report = build_report(synthetic_run(), agents=100, containers=1000)
    assert report["agents"] == 100
    assert report["containers"] == 1000
    assert report["registration_s"] == 1.5
    assert report["joins_per_s"] == 200.0  # 100 agents joined in 0.5 s
    assert report["placement_s"] == 4.0
    assert report["placements_per_s"] == 250.0
    assert report["heartbeats_per_s"] == 100.0  # 5,000 heartbeats in the 50 s steady phase
    assert report["heartbeat_lag_p99_ms"] == pytest.approx(200.0)  # 2 % of beats lag 200 ms
    assert report["false_unhealthy"] == 1
    assert report["deploy_latency_p50_ms"] == pytest.approx(50.5)
    assert report["deploy_latency_p99_ms"] == pytest.approx(99.01)
    assert report["api_latency_p99_ms"] == pytest.approx(9.901)
    assert report["server_rss_mb"] == 159.0
    assert report["server_cpu_s"] == 5.9
    assert (report["detect_s"], report["replace_s"]) == (15.5, 21.25)


def test_figures_that_do_not_apply_are_none() -> None:
    report = build_report(Recorder(), agents=10, containers=0)
    assert tuple(report) == r.REPORT_KEYS
    assert {k for k, v in report.items() if v is not None} == {
        "database",
        "agents",
        "containers",
        "false_unhealthy",
    }
    no_fault = build_report(synthetic_run(fault=False), agents=100, containers=1000)
    assert (no_fault["detect_s"], no_fault["replace_s"]) == (None, None)


def test_write_report_writes_the_json_and_a_valid_png(tmp_path: Path) -> None:
    rec = synthetic_run()
    report = build_report(rec, agents=100, containers=1000)
    json_path, png_path = write_report(report, rec, tmp_path / "out", title="synthetic")
    assert (json_path, png_path) == (tmp_path / "out/report.json", tmp_path / "out/report.png")
    assert json.loads(json_path.read_text()) == report
    assert png_size(png_path) == (1000, 900)


def test_an_empty_run_still_renders(tmp_path: Path) -> None:
    rec = Recorder()
    _, png_path = write_report(build_report(rec, agents=0, containers=0), rec, tmp_path)
    assert png_size(png_path) == (1000, 900)


def test_a_large_run_renders_in_reasonable_time(tmp_path: Path) -> None:
    rec = Recorder(start=0.0)
    rng = random.Random(1)
    for i in range(200_000):  # 10,000 agents x 5 s heartbeats x 100 s
        rec.heartbeat(rng.expovariate(100), i / 2000)
    report = build_report(rec, agents=10_000, containers=0)
    assert report["heartbeats_per_s"] == pytest.approx(2000, rel=0.01)
    _, png_path = write_report(report, rec, tmp_path)
    assert png_size(png_path) == (1000, 900)


def test_format_report_is_one_line_of_json() -> None:
    report = build_report(synthetic_run(), agents=100, containers=1000)
    line = format_report(report)
    assert "\n" not in line
    assert json.loads(line) == report
    assert not any(isinstance(v, float) and math.isnan(v) for v in report.values())


def test_recorder_times_are_relative_to_its_start_and_first_marks_win() -> None:
    clock = FakeClock()
    rec = Recorder(clock=clock)
    clock.now = 103.5
    assert rec.now() == 3.5
    rec.mark(r.FAULT)
    clock.now = 110.0
    rec.mark(r.FAULT)
    rec.placed(5)
    assert rec.marks == {r.FAULT: 3.5}
    assert (list(rec.placements.times), list(rec.placements.values)) == ([10.0], [5.0])


def test_merge_combines_the_samples_of_another_process() -> None:
    parent, child = Recorder(start=0.0), Recorder(start=0.0)
    parent.mark(r.STEADY, 0.0)
    child.mark(r.STEADY, 5.0)
    child.mark(r.END, 10.0)
    parent.heartbeat(0.1, 2.0)
    child.heartbeat(0.3, 1.0)
    child.false_unhealthy("n1")
    child.deploy_latency(0.5)
    parent.merge(child)
    assert parent.marks == {r.STEADY: 0.0, r.END: 10.0}
    assert [list(a) for a in parent.heartbeats.arrays()] == [[1.0, 2.0], [0.3, 0.1]]
    assert parent.falsely_unhealthy == {"n1"}
    assert list(parent.deploy_latencies) == [0.5]


def test_the_heartbeat_lag_is_that_of_the_steady_phase_when_there_is_one() -> None:
    rec = Recorder(start=0.0)
    for i in range(50):
        rec.heartbeat(5.0, at=1.0 + i / 100)  # a registration burst
    rec.mark(r.STEADY, 10.0)
    for i in range(100):
        rec.heartbeat(0.020, at=10.0 + i / 10)
    rec.mark(r.END, 20.0)
    assert build_report(rec, agents=1, containers=0)["heartbeat_lag_p99_ms"] == pytest.approx(20)
    early = Recorder(start=0.0)
    early.heartbeat(5.0, at=1.0)
    assert build_report(early, agents=1, containers=0)["heartbeat_lag_p99_ms"] == 5000
