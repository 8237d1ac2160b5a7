"""``python -m simulations run SCENARIO [--out DIR] [--processes N] [--max-in-flight N]``.

Layer: simulations (the command line). Runs one scenario (a file's path, or a name under
``simulations/scenarios/``) with the harness, prints progress while it runs and, as its last
line, the report as one JSON object (before it, a line ``rollouts: [...]`` with the figures
of each rollout when the scenario updates deployments). The report (``report.json``,
``report.png``; ``rollouts.json`` and ``rollouts.png`` for updates) and the logs of
nats-server and the server go to ``--out`` (default ``simulations/reports/<name>-<timestamp>/``,
which git ignores).

SIGINT (^C) or SIGTERM stops a run early: it shuts down and still writes its report.

Exit codes: 0 the run completed every phase; 1 a phase missed its deadline, a service failed
or the run was interrupted (the report is still written); 2 the scenario cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from simulations.harness import RunResult, run_scenario
from simulations.load import MAX_IN_FLIGHT
from simulations.report import format_report
from simulations.scenario import ScenarioError, load_scenario

REPORTS_DIR = Path(__file__).parent / "reports"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(prog="python -m simulations")
    parser.add_argument("--log-level", default=os.environ.get("KNIT_SIM_LOG_LEVEL", "WARNING"))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario and write its report")
    run.add_argument("scenario", help="a scenario file, or the name of a shipped scenario")
    run.add_argument("--out", type=Path, default=None, help="the report folder")
    run.add_argument(
        "--processes", type=int, default=None, help="agent processes (overrides the scenario)"
    )
    run.add_argument(
        "--max-in-flight",
        type=int,
        default=MAX_IN_FLIGHT,
        metavar="CONTAINERS",
        help="containers submitted but not yet running during placement (0: no limit)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"simulations: {exc}", file=sys.stderr)
        return 2
    out = args.out or REPORTS_DIR / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    def progress(line: str) -> None:
        print(line, flush=True)

    async def run() -> RunResult:
        # SIGINT / SIGTERM end the run early; it still shuts down and writes its report.
        interrupt = anyio.Event()

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupt.set()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            result = await run_scenario(
                scenario,
                out,
                progress,
                processes=args.processes,
                max_in_flight=args.max_in_flight,
                interrupt=interrupt,
            )
            tg.cancel_scope.cancel()
        return result

    result = anyio.run(run, backend="asyncio")
    print(f"checks: {json.dumps(result.checks)}", flush=True)
    if result.rollouts:
        print(f"rollouts: {json.dumps(result.rollouts)}", flush=True)
    for failure in result.failures:
        print(f"FAILED {failure}", flush=True)
    print(f"report: {out / 'report.json'}, plot: {out / 'report.png'}", flush=True)
    print(format_report(result.report), flush=True)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
