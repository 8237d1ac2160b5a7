"""Agents in worker processes: the same ``Fleet``, split over several processes.

Layer: simulations. Imports anyio, multiprocessing and ``simulations.fleet``.

One Python process runs one event loop on one core; when a scenario's ``processes`` is more
than 1, the agents are split evenly over that many worker processes (``spawn`` start method:
a fresh interpreter each, nothing inherited from the harness's event loop) and the harness
keeps the orchestration, the monitor and the API clients. ``WorkerPool`` offers the same
calls as ``Fleet``; each worker talks to it over two pipes:

    harness → worker   ("start",) ("kill", ids) ("partition", ids, cut) ("containers",)
                       ("stop",)
    worker → harness   ("progress", joined, started, failed) ("ready",) ("containers", n)
                       ("killed", n)
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import anyio

from simulations.fleet import Fleet, FleetSpec, freeze_heap, open_fleet, tune_gc

log = logging.getLogger(__name__)

REPORT_EVERY = 0.25
"""Seconds between two reports of a worker's progress and container starts."""


def worker_main(spec: FleetSpec, inbox: Connection, outbox: Connection) -> None:
    """Entry point of a worker process: run a fleet until told to stop."""
    logging.basicConfig(level=logging.WARNING, format="worker %(process)d %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C is the harness's to handle: it stops us
    tune_gc()
    anyio.run(_serve, spec, inbox, outbox, backend="asyncio")


async def _serve(spec: FleetSpec, inbox: Connection, outbox: Connection) -> None:
    async with open_fleet(spec) as fleet, anyio.create_task_group() as tg:
        tg.start_soon(_report, fleet, outbox)
        while True:
            command = await anyio.to_thread.run_sync(inbox.recv, abandon_on_cancel=True)
            kind = command[0]
            if kind == "start":
                tg.start_soon(_start, fleet, outbox)
            elif kind == "kill":
                outbox.send(("killed", await fleet.kill(command[1])))
            elif kind == "partition":
                await fleet.partition(command[1], command[2])
            elif kind == "containers":
                outbox.send(("containers", await fleet.containers()))
            elif kind == "stop":
                tg.cancel_scope.cancel()
                break


async def _start(fleet: Fleet, outbox: Connection) -> None:
    await fleet.start_all()
    freeze_heap()
    outbox.send(("progress", fleet.joined, fleet.started, fleet.failed))
    outbox.send(("ready",))


async def _report(fleet: Fleet, outbox: Connection) -> None:
    while True:
        await anyio.sleep(REPORT_EVERY)
        outbox.send(("progress", fleet.joined, fleet.started, fleet.failed))


class _Worker:
    def __init__(self, spec: FleetSpec) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.node_ids = {a.node_id for a in spec.agents}
        commands, self.command_writer = ctx.Pipe(duplex=False)  # (receiving, sending) ends
        self.reports, reports_writer = ctx.Pipe(duplex=False)
        self.process: BaseProcess = ctx.Process(
            target=worker_main, args=(spec, commands, reports_writer), daemon=True
        )
        self.joined = 0
        self.started = 0
        self.failed = 0
        self.ready = anyio.Event()
        self.answers: list[Any] = []
        self.answered = anyio.Event()

    def send(self, *command: object) -> None:
        self.command_writer.send(command)


class WorkerPool:
    """The fleet, split over ``processes`` worker processes. Use :func:`open_workers`."""

    def __init__(self, spec: FleetSpec, processes: int) -> None:
        share = -(-len(spec.agents) // processes)
        self.workers = [
            _Worker(replace(spec, agents=spec.agents[i : i + share]))
            for i in range(0, len(spec.agents), share)
        ]

    @property
    def joined(self) -> int:
        """Agents that joined the cluster so far, over every worker."""
        return sum(w.joined for w in self.workers)

    @property
    def started(self) -> int:
        """Agents started so far, over every worker."""
        return sum(w.started for w in self.workers)

    @property
    def failed(self) -> int:
        """Agents that failed to start."""
        return sum(w.failed for w in self.workers)

    async def _listen(self, worker: _Worker) -> None:
        while True:
            try:
                message = await anyio.to_thread.run_sync(
                    worker.reports.recv, abandon_on_cancel=True
                )
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "progress":
                worker.joined, worker.started, worker.failed = message[1:4]
            elif kind == "ready":
                worker.ready.set()
            else:  # an answer: "containers", "killed"
                worker.answers.append(message[1])
                worker.answered.set()

    async def _ask(self, worker: _Worker, *command: object) -> Any:
        worker.answered = anyio.Event()
        worker.answers.clear()
        worker.send(*command)
        with anyio.fail_after(30):
            await worker.answered.wait()
        return worker.answers[0]

    async def start_all(self) -> None:
        """Start every agent; returns once every worker has started its share."""
        for worker in self.workers:
            worker.send("start")
        for worker in self.workers:
            await worker.ready.wait()

    def _split(self, node_ids: Sequence[str]) -> list[tuple[_Worker, list[str]]]:
        return [(w, [n for n in node_ids if n in w.node_ids]) for w in self.workers]

    async def kill(self, node_ids: list[str]) -> int:
        """Kill these agents (in whichever workers hold them); returns how many were alive."""
        killed = 0
        for worker, mine in self._split(node_ids):
            if mine:
                killed += int(await self._ask(worker, "kill", mine))
        return killed

    async def partition(self, node_ids: list[str], cut: bool) -> None:
        """Cut these agents off the bus, or let them back on."""
        for worker, mine in self._split(node_ids):
            if mine:
                worker.send("partition", mine, cut)

    async def containers(self, state: str = "running") -> int:
        """Running containers over every worker's live agents."""
        return sum([int(await self._ask(w, "containers")) for w in self.workers])


@asynccontextmanager
async def open_workers(spec: FleetSpec, processes: int) -> AsyncIterator[WorkerPool]:
    """Start the worker processes; leaving the block stops them (shielded; a worker that
    does not end within 30 s is killed)."""
    pool = WorkerPool(spec, processes)
    async with anyio.create_task_group() as tg:
        for worker in pool.workers:
            worker.process.start()
            tg.start_soon(pool._listen, worker)
        try:
            yield pool
        finally:
            with anyio.CancelScope(shield=True):
                for worker in pool.workers:
                    with contextlib.suppress(OSError):
                        worker.send("stop")
                for worker in pool.workers:
                    await anyio.to_thread.run_sync(worker.process.join, 30)
                    if worker.process.is_alive():
                        worker.process.kill()
            tg.cancel_scope.cancel()
