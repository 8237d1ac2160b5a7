"""``python -m simulations run ... --database``: the option, and the smoke scenario on a
throwaway PostgreSQL cluster the harness starts and removes (correctness, never speed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from simulations.__main__ import build_parser, side_by_side
from simulations.databases import DatabaseError, parse_databases
from simulations.postgres import postgres_problem
from simulations.report import REPORT_KEYS, Report
from simulations.scenario import load_scenario
from tests.support import require

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("sqlite", ["sqlite"]),
        ("postgresql", ["postgresql"]),
        ("postgres", ["postgresql"]),
        ("sqlite,postgresql", ["sqlite", "postgresql"]),
        (" PostgreSQL , sqlite ", ["postgresql", "sqlite"]),
    ],
)
def test_the_database_option_parses_backends_in_the_order_given(
    given: str, parsed: list[str]
) -> None:
    args = build_parser().parse_args(["run", "smoke", "--database", given])
    assert args.database == parsed


@pytest.mark.unit
def test_the_database_option_defaults_to_sqlite_without_a_url() -> None:
    args = build_parser().parse_args(["run", "smoke"])
    assert args.database == ["sqlite"]
    assert args.database_url is None


@pytest.mark.unit
@pytest.mark.parametrize("given", ["", "mysql", "sqlite,mysql", "sqlite,sqlite"])
def test_an_unknown_or_repeated_backend_is_refused(given: str) -> None:
    with pytest.raises(DatabaseError):
        parse_databases(given)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "smoke", "--database", given])
    assert exited.value.code == 2


@pytest.mark.unit
def test_several_reports_are_shown_side_by_side_one_column_per_backend() -> None:
    sqlite: Report = dict.fromkeys(REPORT_KEYS)
    sqlite |= {"database": "sqlite", "agents": 1000}
    postgresql: Report = sqlite | {"database": "postgresql", "placements_per_s": 1234.56}
    table = side_by_side({"sqlite": sqlite, "postgresql": postgresql}).splitlines()
    assert table[0].split() == ["sqlite", "postgresql"]
    assert [line.split()[0] for line in table[1:]] == list(REPORT_KEYS[1:])
    assert "agents 1,000 1,000" in " ".join(table[1].split())
    placements = next(line for line in table if line.startswith("placements_per_s"))
    assert placements.split()[1:] == ["-", "1,234.6"]


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_the_smoke_scenario_runs_to_completion_on_postgresql(
    tmp_path: Path, nats_server_binary: str
) -> None:
    problem = postgres_problem()
    require(problem is None, f"{problem}; run scripts/setup.sh")
    scenario = load_scenario("smoke")
    out = tmp_path / "report"
    command = ["run", "smoke", "--database", "postgresql", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "simulations", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert json.loads(run.stdout.strip().splitlines()[-1]) == report
    assert report["database"] == "postgresql"
    assert report["containers"] >= scenario.containers
    assert report["false_unhealthy"] == 0
    lines = run.stdout.splitlines()
    checks = json.loads(next(line for line in lines if line.startswith("checks: "))[8:])
    assert checks["initial_containers_placed"] is True
    assert checks["store_writer"]["ops"] > 0
    assert checks["database_cpu_s"] > 0  # the harness's own cluster, measured
    started = re.search(r"a throwaway cluster \(postmaster pid (\d+)\)", run.stdout)
    assert started is not None, run.stdout[-3000:]
    assert not psutil.pid_exists(int(started[1]))  # and stopped after the run
