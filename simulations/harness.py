"""The simulation harness: run a scenario against a real server and a real nats-server.

Layer: simulations (a tool). Imports anyio, httpx and the harness's own modules; Knit is
reached through its processes and its public API, and the agents are Knit's own code.

A run goes through the phases of ``simulations.scenario``:

1. **start**: the store (``simulations.databases``: SQLite in the server's data dir, or a
   throwaway PostgreSQL cluster), then ``python -m knit.cli server`` as a child process
   (fresh data dir, ``--node-ttl`` of the scenario, ``--database-url`` on PostgreSQL), with
   its embedded nats-server;
2. **registration**: a join token for every agent (``POST /join-tokens``), then ``agents``
   simulated agents (``simulations.fleet``; in worker processes when ``processes`` > 1),
   each joining and connecting with its own credentials, until the server counts them all
   healthy;
3. **placement**: the initial deployments over HTTP until the server shows every replica
   running;
4. **steady**: ``duration_s`` of churn, API clients, faults and updates; after a kill or a
   partition the run waits (up to ``timeouts.replace_s``) for the replicas to run elsewhere,
   and it lasts until every update's rollout ended (each within ``timeouts.rollout_s``:
   ``simulations.rollouts``);
5. **shutdown**: agents, then the server (SIGTERM; it stops its nats-server), then the
   PostgreSQL cluster if the harness started one.

A phase past its deadline is a failure: the run goes on to shut down and still reports.
The monitor (``simulations.monitor``) samples the server throughout; the report is built by
``simulations.report``, the rollouts' figures by ``simulations.rollouts`` (``rollouts.json``,
``rollouts.png``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

from knit.server.metrics import GcWatch
from simulations import report as marks
from simulations.databases import RunDatabase, open_database
from simulations.fleet import Fleet, FleetSpec, agent_specs, freeze_heap, open_fleet, tune_gc
from simulations.load import MAX_IN_FLIGHT, ApiLatencies, DeployTracker, api_client, churn
from simulations.monitor import Monitor
from simulations.report import Recorder, Report, build_report, percentile, write_report
from simulations.rollout_plot import plot_rollouts
from simulations.rollouts import (
    RolloutTrace,
    Updater,
    failures_of,
    instances_at_end,
    rollout_figures,
)
from simulations.scenario import Fault, Scenario
from simulations.services import ServerProcess, get_json, make_join_token
from simulations.workers import WorkerPool, open_workers

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
PROGRESS_EVERY = 2.0


@dataclass
class RunResult:
    """What a run produced: the report, where it went, what went wrong, and the figures of
    each rollout (``simulations.rollouts.FIGURE_KEYS``; none without updates)."""

    report: Report
    out: Path
    failures: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    rollouts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    scenario: Scenario
    recorder: Recorder
    progress: Progress
    phase: str = "start"
    failures: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    loop_lag: list[float] = field(default_factory=list)
    replaced: anyio.Event = field(default_factory=anyio.Event)
    gc: GcWatch = field(default_factory=GcWatch)
    api: ApiLatencies = field(default_factory=ApiLatencies)
    rollouts: list[RolloutTrace] = field(default_factory=list)
    store: RunDatabase | None = None
    placement: dict[str, Any] = field(default_factory=dict)


async def run_scenario(
    scenario: Scenario,
    out: Path,
    progress: Progress,
    *,
    processes: int | None = None,
    max_in_flight: int = MAX_IN_FLIGHT,
    interrupt: anyio.Event | None = None,
    database: str = "sqlite",
    database_url: str | None = None,
) -> RunResult:
    """Run ``scenario``; write ``report.json``, ``report.png`` and the logs into ``out``, and
    ``rollouts.json`` and ``rollouts.png`` when it updates deployments.

    Args:
        scenario: what to run.
        out: the report folder (created).
        progress: called with one line of progress at a time.
        processes: overrides the scenario's number of agent processes.
        max_in_flight: containers of initial deployments not yet running that the
            placement phase allows (0: submit everything at once).
        interrupt: once set, the run stops where it is, shuts down and still reports.
        database: the server's store, one of ``simulations.databases.DATABASES``.
        database_url: with ``postgresql``, an existing database to use as it is (no
            throwaway cluster); it should be empty.
    """
    await anyio.Path(out).mkdir(parents=True, exist_ok=True)
    run = _Run(scenario, Recorder(), progress)
    workdir = Path(tempfile.mkdtemp(prefix=f"knit-sim-{scenario.name}-"))
    server: ServerProcess | None = None
    checks: dict[str, Any] = {}
    monitor: Monitor | None = None
    stack = contextlib.AsyncExitStack()  # the store: closed after the server stopped
    try:
        progress(f"scenario {scenario.name}: {scenario.description} (on {database})")
        run.store = await stack.enter_async_context(open_database(database, database_url))
        server = ServerProcess(out, workdir / "server", scenario.node_ttl, run.store.url)
        await server.start(scenario.timeouts.start_s)
        progress(
            f"knit server {server.url} (pid {server.pid}), "
            f"its nats-server {server.nats_url} (pid {server.nats_pid()}), "
            f"store {_describe(run.store)}"
        )
        # Connections for every API client and deployment submitter at once, all kept
        # alive (httpx keeps 20 by default: the others were opened and closed per request).
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        token = (await anyio.Path(workdir / "server" / "admin.token").read_text()).strip()
        headers = {"Authorization": f"Bearer {token}"}  # the server's first admin token
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, limits=limits, headers=headers
        ) as http:
            monitor = Monitor(http, server, run.recorder)
            async with anyio.create_task_group() as guard:
                if interrupt is not None:
                    guard.start_soon(_stop_when, interrupt, guard.cancel_scope, run)
                checks = await _phases(
                    run, server, http, monitor, workdir, processes, max_in_flight
                )
                guard.cancel_scope.cancel()
            await monitor.sample()  # the last figures of the server, before it stops
    except Exception as exc:
        run.failures.append(f"{run.phase}: {type(exc).__name__}: {exc}")
        log.exception("run failed in phase %s", run.phase)
    finally:
        run.phase = "shutdown"
        if server is not None:
            code = await server.stop(scenario.timeouts.shutdown_s)
            if code not in (0, None):
                run.failures.append(f"knit server exited with code {code} (see {server.log})")
        shutil.rmtree(workdir, ignore_errors=True)
        if run.store is not None:
            checks["database_cpu_s"] = run.store.cpu_s()  # its backends have exited
        with anyio.CancelScope(shield=True):
            try:
                await stack.aclose()
            except Exception as exc:
                run.failures.append(f"shutdown: the store did not stop: {exc}")
    running = monitor.view.running if monitor is not None else 0
    report = build_report(
        run.recorder, agents=scenario.agents, containers=running, database=database
    )
    title = f"{scenario.name}: {scenario.description}"
    write_report(report, run.recorder, out, title=title)
    rollouts = [rollout_figures(trace) for trace in run.rollouts]
    if rollouts:
        (out / "rollouts.json").write_text(json.dumps(rollouts, indent=2) + "\n", encoding="utf-8")
        plot_rollouts(run.rollouts, out / "rollouts.png", title=title)
    run.gc.uninstall()
    checks["loop_lag_p99_ms"] = _ms(percentile(run.loop_lag, 99))
    checks["harness_gc"] = run.gc.to_json()
    checks["api_latency"] = run.api.summary()
    if run.placement:
        checks["placement"] = run.placement
    return RunResult(report, out, run.failures, checks, rollouts)


async def _phases(
    run: _Run,
    server: ServerProcess,
    http: httpx.AsyncClient,
    monitor: Monitor,
    workdir: Path,
    processes: int | None,
    max_in_flight: int,
) -> dict[str, Any]:
    scenario, recorder = run.scenario, run.recorder
    run.gc.install()
    tune_gc()
    node_ids = [uuid.uuid4().hex for _ in range(scenario.agents)]
    shares = [(share.percent, dict(share.labels)) for share in scenario.agent_labels]
    spec = FleetSpec(
        api_url=server.url,
        join_token=await make_join_token(http, uses=scenario.agents),
        admin_token=str(http.headers["Authorization"]).removeprefix("Bearer "),
        agents_per_connection=scenario.agents_per_connection,
        workdir=workdir,
        heartbeat_interval=scenario.heartbeat_interval,
        profile=scenario.profile,
        agents=tuple(agent_specs(node_ids, shares)),
    )
    count = processes or scenario.processes
    pool: AbstractAsyncContextManager[Fleet | WorkerPool] = (
        open_fleet(spec) if count <= 1 else open_workers(spec, count)
    )
    async with pool as agents, anyio.create_task_group() as tg:
        tracker = DeployTracker(
            http,
            recorder,
            max_in_flight=max_in_flight,
            write_backlog=lambda: monitor.view.writer_queued,
        )
        monitor.listeners.append(
            lambda view: tracker.observe(view.running_by_deployment, time.monotonic())
        )
        tg.start_soon(monitor.run)
        tg.start_soon(_watch_loop, run)
        tg.start_soon(_report_progress, run, monitor, agents, tracker)

        run.phase = "registration"
        recorder.mark(marks.AGENTS_STARTED)
        tg.start_soon(agents.start_all)
        tg.start_soon(_mark_joined, run, agents)
        registered = scenario.timeouts.registration_s
        if await monitor.until(lambda v: v.healthy >= scenario.agents, registered):
            recorder.mark(marks.REGISTERED)
            freeze_heap()
        else:
            run.failures.append(
                f"registration: not every agent healthy in time "
                f"({monitor.view.healthy}/{scenario.agents})"
            )

        if scenario.deployments and not run.failures:
            run.phase = "placement"
            recorder.mark(marks.PLACEMENT_STARTED)
            before = _costs(run, monitor)
            with anyio.move_on_after(scenario.timeouts.placement_s):
                await tracker.submit_groups(scenario.deployments)
                run.progress(
                    f"submitted {len(tracker.deployments)} deployments ({tracker.failures} refused)"
                )
                await monitor.until(lambda v: v.running >= scenario.containers, math.inf)
                recorder.mark(marks.PLACED)
                await monitor.sample()  # the writer's counters at the end of placement
                run.placement = _spent(before, _costs(run, monitor))
                freeze_heap()
            if marks.PLACED not in recorder.marks:
                run.failures.append(
                    f"placement: {monitor.view.running}/{scenario.containers} "
                    f"running after {scenario.timeouts.placement_s:g} s"
                )

        if not run.failures:
            await _steady(run, server, http, monitor, agents, tracker, node_ids)

        run.phase = "checks"
        await monitor.sample()
        checks = await _final_checks(run, http, agents, monitor, tracker)
        tg.cancel_scope.cancel()
    return checks


async def _steady(
    run: _Run,
    server: ServerProcess,
    http: httpx.AsyncClient,
    monitor: Monitor,
    agents: Fleet | WorkerPool,
    tracker: DeployTracker,
    node_ids: list[str],
) -> None:
    scenario, recorder = run.scenario, run.recorder
    run.phase = "steady"
    recorder.mark(marks.STEADY)
    steady_began = time.monotonic()
    rng = random.Random(scenario.profile.seed)
    deployment_ids = list(tracker.deployments)
    latencies = run.api
    updater = Updater(
        http, tracker, recorder, latencies, run.progress, scenario.timeouts.rollout_s, run.rollouts
    )
    async with anyio.create_task_group() as tg:
        if scenario.churn.deploy_per_s or scenario.churn.delete_per_s:
            churn_rng = random.Random(rng.random())
            tg.start_soon(churn, scenario.churn, tracker, recorder, latencies, churn_rng)
        for _ in range(scenario.api_clients):
            client_rng = random.Random(rng.random())
            tg.start_soon(
                api_client,
                str(http.base_url).rstrip("/"),
                recorder,
                latencies,
                deployment_ids,
                node_ids,
                client_rng,
                http.headers["authorization"].removeprefix("Bearer "),
            )
        for fault in scenario.faults:
            tg.start_soon(_fault, run, fault, steady_began, server, monitor, agents, node_ids, rng)
        async with anyio.create_task_group() as phase:  # the duration, and every rollout
            phase.start_soon(anyio.sleep, scenario.duration_s)
            if scenario.updates:
                phase.start_soon(_updates, run, updater, steady_began)
        recorder.mark(marks.END)
        if marks.FAULT in recorder.marks and marks.REPLACED not in recorder.marks:
            fault_at = steady_began + min(f.at_s for f in scenario.faults)
            left = fault_at + scenario.timeouts.replace_s - time.monotonic()
            run.progress(f"waiting up to {left:.0f} s more for the replacements")
            with anyio.move_on_after(max(left, 0)):
                await run.replaced.wait()
            if marks.REPLACED not in recorder.marks:
                run.failures.append("fault: replicas not replaced in time")
        tg.cancel_scope.cancel()


async def _updates(run: _Run, updater: Updater, steady_began: float) -> None:
    """The scenario's updates; a rollout that did not complete with exactly its replicas is a
    failure of the run."""
    await updater.run(run.scenario.updates, steady_began)
    run.recorder.mark(marks.ROLLED_OUT)
    run.failures.extend(failures_of(rollout_figures(trace) for trace in updater.traces))


async def _fault(
    run: _Run,
    fault: Fault,
    steady_began: float,
    server: ServerProcess,
    monitor: Monitor,
    agents: Fleet | WorkerPool,
    node_ids: list[str],
    rng: random.Random,
) -> None:
    await anyio.sleep(max(0.0, steady_began + fault.at_s - time.monotonic()))
    recorder, scenario = run.recorder, run.scenario
    if fault.kind == "restart_nats":
        recorder.mark(marks.FAULT)
        run.progress("fault: killing the server's nats-server (SIGKILL)")
        pid = await server.kill_nats(scenario.timeouts.start_s)
        run.progress(f"fault: the server runs a new nats-server (pid {pid})")
        return
    alive = [n for n in node_ids if n not in run.killed]
    chosen = rng.sample(alive, max(1, math.ceil(len(alive) * (fault.percent or 0) / 100)))
    target = monitor.view.running
    monitor.expected_down.update(chosen)
    recorder.mark(marks.FAULT)
    if fault.kind == "kill":
        run.killed.extend(chosen)
        killed = await agents.kill(chosen)
        run.progress(f"fault: killed {killed} agents; {target} containers should run")
    else:
        await agents.partition(chosen, True)
        run.progress(f"fault: cut {len(chosen)} agents off NATS")
    down = set(chosen)
    await monitor.until(lambda v: down <= v.unhealthy_ids, math.inf)
    recorder.mark(marks.DETECTED)
    run.progress(f"fault: the server marked the {len(down)} nodes unhealthy")
    if fault.kind == "partition" and fault.heal_after_s is not None:
        detect_s = recorder.span(marks.FAULT, marks.DETECTED) or 0.0
        await anyio.sleep(max(0.0, fault.heal_after_s - detect_s))
        await agents.partition(chosen, False)
        run.progress("fault: partition healed")
    await monitor.until(lambda v: v.running >= target, math.inf)
    recorder.mark(marks.REPLACED)
    run.replaced.set()
    run.progress(f"fault: {monitor.view.running} containers run again")


async def _final_checks(
    run: _Run,
    http: httpx.AsyncClient,
    agents: Fleet | WorkerPool,
    monitor: Monitor,
    tracker: DeployTracker,
) -> dict[str, Any]:
    """What the server shows at the end, against what the harness did."""
    nodes = await get_json(http, "/nodes")
    unhealthy = {n["id"] for n in nodes if n["status"] != "healthy"}
    for node_id in unhealthy - monitor.expected_down:
        run.recorder.false_unhealthy(node_id)
    containers = await agents.containers()
    view = monitor.view
    scrape = await time_metrics_scrape(http)
    checks = {
        "nodes": len(nodes),
        "unhealthy_at_end": len(unhealthy),
        "killed": len(run.killed),
        "instances_by_status": view.by_status,
        "containers_on_agents": containers,
        "deployments_created": len(tracker.deployments),
        "deployments_refused": tracker.failures,
        "deployments_confirmed": tracker.confirmed,
        "initial_containers_placed": marks.PLACED in run.recorder.marks,
        "monitor_errors": monitor.errors,
        "store_writer": view.store_writer,
        "server_gc": view.gc,
        "metrics_scrape": scrape,
        "harness_cpu_s": round(sum(psutil.Process().cpu_times()[:2]), 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if run.rollouts:
        at_end = await instances_at_end(http, run.rollouts)
        checks.update(at_end)
        if at_end["deployments_exact_at_end"] != at_end["deployments_updated"]:
            run.failures.append(
                "rollouts: at the end, not every updated deployment runs exactly its replicas "
                "of its latest version and none of another"
            )
    run.progress(
        f"end: {view.running} running per the server, {containers} on the agents, "
        f"{len(unhealthy)} unhealthy nodes ({len(run.killed)} killed)"
    )
    return checks


METRICS_SCRAPES = 20


async def time_metrics_scrape(http: httpx.AsyncClient) -> dict[str, Any]:
    """``GET /metrics`` ``METRICS_SCRAPES`` times in a row, as Prometheus would scrape the
    server at the end of the run: round trips in ms (p50, max) and the reply's size."""
    took: list[float] = []
    size = 0
    for _ in range(METRICS_SCRAPES):
        began = time.perf_counter()
        response = await http.get("/metrics")
        took.append(time.perf_counter() - began)
        if response.status_code != 200:
            return {"error": response.status_code}
        size = len(response.content)
    return {
        "p50_ms": _ms(percentile(took, 50)),
        "max_ms": _ms(max(took)),
        "bytes": size,
    }


async def _stop_when(interrupt: anyio.Event, scope: anyio.CancelScope, run: _Run) -> None:
    await interrupt.wait()
    run.failures.append(f"{run.phase}: interrupted")
    run.progress(f"interrupted in phase {run.phase}: shutting down, then reporting")
    scope.cancel()


async def _watch_loop(run: _Run) -> None:
    """Note how late this event loop wakes up: the harness's own overload shows here."""
    while True:
        began = time.monotonic()
        await anyio.sleep(0.1)
        run.loop_lag.append(max(0.0, time.monotonic() - began - 0.1))


async def _mark_joined(run: _Run, agents: Fleet | WorkerPool) -> None:
    """Mark the moment every agent has joined (the workers report their joins)."""
    while agents.joined < run.scenario.agents:  # noqa: ASYNC110 (counters of other processes)
        await anyio.sleep(0.05)
    run.recorder.mark(marks.JOINED)


async def _report_progress(
    run: _Run, monitor: Monitor, agents: Fleet | WorkerPool, tracker: DeployTracker
) -> None:
    recorder = run.recorder
    last_beats, last_placed, last_at = 0, 0, recorder.now()
    while True:
        await anyio.sleep(PROGRESS_EVERY)
        view, now = monitor.view, recorder.now()
        span = max(now - last_at, 1e-9)
        cpu = recorder.server_cpu.values
        rss = recorder.server_rss.values
        lag = run.loop_lag[-20:]
        run.progress(
            f"[{now:7.1f}s] {run.phase:<12} agents {agents.started}/{run.scenario.agents} "
            f"(joined {agents.joined}) "
            f"healthy {view.healthy} unhealthy {view.unhealthy} | running {view.running} "
            f"({(view.placed_total - last_placed) / span:.0f}/s) deployments "
            f"{len(tracker.deployments)} | heartbeats {(view.heartbeats - last_beats) / span:.0f}/s"
            f" | server rss {(rss[-1] if rss else 0) / 2**20:.0f} MB cpu "
            f"{(cpu[-1] if cpu else 0):.0f} s | harness loop lag "
            f"{max(lag, default=0) * 1000:.0f} ms, gc {sum(run.gc.pause_s):.1f} s"
            f" | server gc {view.gc_pause_s:.1f} s, writes queued {view.writer_queued}"
            f" | load {os.getloadavg()[0]:.1f}"
            f" | busiest {_busiest(view.busiest)}"
        )
        last_beats, last_placed, last_at = view.heartbeats, view.placed_total, now


PLACEMENT_COUNTERS = ("batches", "ops", "direct_batches", "write_s")
"""The store writer's counters (``GET /status``: ``store_writer``) a run's ``checks`` show
for the placement phase alone."""


def _costs(run: _Run, monitor: Monitor) -> dict[str, float | None]:
    """What the server and its store have spent so far: CPU seconds and the writer's
    counters (``PLACEMENT_COUNTERS``)."""
    cpu = run.recorder.server_cpu.values
    writer = monitor.view.store_writer
    costs: dict[str, float | None] = {
        "server_cpu_s": cpu[-1] if cpu else None,
        "database_cpu_s": run.store.cpu_s() if run.store is not None else None,
    }
    for name in PLACEMENT_COUNTERS:
        value = writer.get(name)
        costs[f"writer_{name}"] = float(value) if isinstance(value, int | float) else None
    return costs


def _spent(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, Any]:
    """``after - before`` per figure (None where either is unknown), rounded."""
    spent: dict[str, Any] = {}
    for name, value in after.items():
        then = before.get(name)
        spent[name] = None if value is None or then is None else round(value - then, 2)
    return spent


def _describe(store: RunDatabase) -> str:
    if store.url is None:
        return f"{store.backend} in the data dir"
    if store.postmaster_pid is None:
        return f"{store.backend} at the URL given"
    return f"{store.backend}, a throwaway cluster (postmaster pid {store.postmaster_pid})"


def _busiest(actors: list[dict[str, Any]]) -> str:
    return ", ".join(f"{a['name']}:{a['mailbox_depth']}" for a in actors if a["mailbox_depth"])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
