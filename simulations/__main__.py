"""``python -m simulations run SCENARIO [--out DIR] [--processes N] [--max-in-flight N]
[--database sqlite|postgresql|sqlite,postgresql] [--database-url URL]``.

Layer: simulations (the command line). Runs one scenario (a file's path, or a name under
``simulations/scenarios/``) with the harness, prints progress while it runs and, as its last
line, the report as one JSON object (before it, a line ``rollouts: [...]`` with the figures
of each rollout when the scenario updates deployments). The report (``report.json``,
``report.png``; ``rollouts.json`` and ``rollouts.png`` for updates) and the logs of
nats-server and the server go to ``--out`` (default ``simulations/reports/<name>-<timestamp>/``,
which git ignores).

``--database`` picks the server's store (``simulations.databases``): ``sqlite`` (the
default), ``postgresql`` (a throwaway cluster the harness starts and removes, or the database
at ``--database-url``), or several, comma-separated, run one after another in that order:
each into ``--out``'s subfolder named after the backend, each printing its lines as a single
run does, then a table of their figures side by side and, as the last line, one JSON object
of every run's report by backend.

SIGINT (^C) or SIGTERM stops a run early: it shuts down and still writes its report (and
the runs of the other backends that were still to come are not started).

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

from simulations.databases import DatabaseError, parse_databases
from simulations.harness import RunResult, run_scenario
from simulations.load import MAX_IN_FLIGHT
from simulations.report import REPORT_KEYS, Report, format_report
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
    run.add_argument(
        "--database",
        type=_databases,
        default=["sqlite"],
        metavar="sqlite|postgresql[,...]",
        help="the server's store; several, comma-separated, run back to back (default sqlite)",
    )
    run.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="with postgresql: an existing, empty database to use instead of a throwaway "
        "cluster (postgresql://USER:PASS@HOST:PORT/DB)",
    )
    return parser


def _databases(text: str) -> list[str]:
    try:
        return parse_databases(text)
    except DatabaseError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


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
    databases: list[str] = args.database
    if args.database_url is not None and "postgresql" not in databases:
        print("simulations: --database-url is for --database postgresql", file=sys.stderr)
        return 2
    out = args.out or REPORTS_DIR / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    def progress(line: str) -> None:
        print(line, flush=True)

    async def run(database: str, run_out: Path) -> RunResult:
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
                run_out,
                progress,
                processes=args.processes,
                max_in_flight=args.max_in_flight,
                interrupt=interrupt,
                database=database,
                database_url=args.database_url if database == "postgresql" else None,
            )
            tg.cancel_scope.cancel()
        return result

    results: dict[str, RunResult] = {}
    for database in databases:
        run_out = out if len(databases) == 1 else out / database
        result = anyio.run(run, database, run_out, backend="asyncio")
        results[database] = result
        print(f"checks: {json.dumps(result.checks)}", flush=True)
        if result.rollouts:
            print(f"rollouts: {json.dumps(result.rollouts)}", flush=True)
        for failure in result.failures:
            print(f"FAILED {failure}", flush=True)
        print(f"report: {run_out / 'report.json'}, plot: {run_out / 'report.png'}", flush=True)
        print(format_report(result.report), flush=True)
        if any(failure.endswith(": interrupted") for failure in result.failures):
            break
    if len(databases) > 1:
        print(side_by_side({name: r.report for name, r in results.items()}), flush=True)
        print(json.dumps({name: r.report for name, r in results.items()}), flush=True)
    return 1 if any(r.failures for r in results.values()) else 0


def side_by_side(reports: dict[str, Report]) -> str:
    """The figures of several runs' reports as a table, one column per run."""
    names = list(reports)
    width = max(len(key) for key in REPORT_KEYS)
    lines = [f"{'':<{width}}  " + "  ".join(f"{name:>12}" for name in names)]
    for key in REPORT_KEYS[1:]:  # the first, "database", is the header
        cells = "  ".join(f"{_cell(reports[name].get(key)):>12}" for name in names)
        lines.append(f"{key:<{width}}  {cells}")
    return "\n".join(lines)


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else value


if __name__ == "__main__":
    sys.exit(main())
