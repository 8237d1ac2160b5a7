"""Benchmark of the actor runtime (``actors/``) on anyio's asyncio and trio backends.

Layer: simulations (a tool, not a library): imports ``actors``, anyio, psutil and the standard
library. Run ``python -m simulations.bench_actors``: it prints progress lines, then, as its
last line, one JSON object::

    {"asyncio": {<figures>}, "trio": {<figures>}, <asyncio figures again, flat>,
     "rss_mb_100k_idle_actors": ...}

where the figures are ``tell_msgs_per_s``, ``ask_roundtrips_per_s``, ``spawn_actors_per_s``,
``rss_mb_per_10k_idle_actors``, ``deadline_resets_per_s`` and ``raw_stream_msgs_per_s`` (a bare
anyio memory object stream, one producer and one consumer: the yardstick for ``tell``). Each
backend runs in a fresh subprocess so its RSS figures are clean; 100,000 idle actors are
measured once more, in a process of their own. Throughputs are the best of a few rounds,
tell and the raw stream interleaved, because this 2-core machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import psutil

from actors import Actor, ActorRef, ActorSystem, Deadline, open_actor_system

TELL_MESSAGES = 150_000
ASK_ROUNDS = 40_000
ROUNDS = 5
IDLE_ACTORS = 10_000
DEADLINES = 10_000
RESETS = 1_000_000
HEARTBEATS = 200_000
MAILBOX = 1024

FIGURES = (
    "tell_msgs_per_s",
    "ask_roundtrips_per_s",
    "spawn_actors_per_s",
    "rss_mb_per_10k_idle_actors",
    "deadline_resets_per_s",
    "raw_stream_msgs_per_s",
)


def progress(line: str) -> None:
    """One progress line on stdout (the JSON line comes last)."""
    print(line, flush=True)


def rss_mb() -> float:
    """This process's resident set size in MB, after a full garbage collection."""
    gc.collect()
    return psutil.Process().memory_info().rss / 1e6


class Sink(Actor[int]):
    """Counts messages; replies to an ask with the count (a flush)."""

    def __init__(self) -> None:
        self.count = 0

    async def handle(self, message: int) -> object:
        self.count += 1
        return self.count


class Echo(Actor[int]):
    """Replies with the message."""

    async def handle(self, message: int) -> object:
        return message


class Idle(Actor[int]):
    """Does nothing until told; what most of a big system's actors do most of the time."""

    async def handle(self, message: int) -> object:
        return None


class Resetter(Actor[int]):
    """Owns many deadlines and resets them round-robin on request (heartbeat timeouts)."""

    def __init__(self) -> None:
        self.deadlines: list[Deadline] = []

    async def started(self) -> None:
        self.deadlines = [self.deadline(600.0, -1) for _ in range(DEADLINES)]

    async def handle(self, message: int) -> object:
        if message < 0:
            raise RuntimeError("a deadline expired during the benchmark")
        deadlines = self.deadlines
        count = len(deadlines)
        began = time.perf_counter()
        for i in range(message):
            deadlines[i % count].reset()
        return message / (time.perf_counter() - began)


class Node(Actor[int]):
    """A heartbeat target: each message moves its deadline, as Knit's NodeActor does."""

    async def started(self) -> None:
        self.ttl = self.deadline(600.0, -1)

    async def handle(self, message: int) -> object:
        if message < 0:
            raise RuntimeError("a node deadline expired during the benchmark")
        self.ttl.reset()
        return None


async def raw_stream() -> float:
    """Messages/s through a bare memory object stream, one producer and one consumer."""
    send, receive = anyio.create_memory_object_stream[int](MAILBOX)

    async def produce() -> None:
        with send:
            for i in range(TELL_MESSAGES):
                await send.send(i)

    began = time.perf_counter()
    with receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async for _ in receive:
                pass
    return TELL_MESSAGES / (time.perf_counter() - began)


async def tell_rate(ref: ActorRef[int]) -> float:
    """Messages/s told to a sink actor by one producer, until all are handled."""
    began = time.perf_counter()
    for i in range(TELL_MESSAGES):
        await ref.tell(i)
    await ref.ask(0, timeout=60.0)  # flush: every message before it is handled
    return TELL_MESSAGES / (time.perf_counter() - began)


async def ask_rate(ref: ActorRef[int]) -> float:
    """Sequential ask round trips/s to an echo actor."""
    began = time.perf_counter()
    for i in range(ASK_ROUNDS):
        await ref.ask(i)
    return ASK_ROUNDS / (time.perf_counter() - began)


async def spawn_idle(system: ActorSystem, count: int, prefix: str) -> float:
    """Spawn ``count`` idle actors; return actors/s."""
    began = time.perf_counter()
    for i in range(count):
        await system.spawn(Idle, name=f"{prefix}{i}", mailbox_size=16)
    return count / (time.perf_counter() - began)


async def heartbeat_rate(system: ActorSystem) -> float:
    """Heartbeats/s spread over 10,000 node actors (each one an activation and a reset)."""
    nodes = [await system.spawn(Node, name=f"node/{i}", mailbox_size=16) for i in range(DEADLINES)]
    began = time.perf_counter()
    for i in range(HEARTBEATS):
        await nodes[i % DEADLINES].tell(i)
    for ref in nodes:
        await ref.ask(0)
    rate = HEARTBEATS / (time.perf_counter() - began)
    for ref in nodes:
        await system.stop(ref)
    return rate


async def measure_backend() -> dict[str, float]:
    """Every figure, on the running backend."""
    figures: dict[str, float] = {}
    async with open_actor_system("bench") as system:
        before = rss_mb()
        figures["spawn_actors_per_s"] = await spawn_idle(system, IDLE_ACTORS, "idle/")
        figures["rss_mb_per_10k_idle_actors"] = (rss_mb() - before) * 10_000 / IDLE_ACTORS
        progress(
            f"  spawned {IDLE_ACTORS} idle actors: {figures['spawn_actors_per_s']:,.0f}/s, "
            f"{figures['rss_mb_per_10k_idle_actors']:.1f} MB per 10k"
        )
        sink = await system.spawn(Sink, name="sink", mailbox_size=MAILBOX)
        echo = await system.spawn(Echo, name="echo")
        tell, raw, ask = 0.0, 0.0, 0.0
        ratios: list[float] = []
        for round_ in range(ROUNDS):
            raw_now = await raw_stream()
            tell_now = await tell_rate(sink)
            ratios.append(tell_now / raw_now)
            raw, tell = max(raw, raw_now), max(tell, tell_now)
            ask = max(ask, await ask_rate(echo))
            progress(
                f"  round {round_ + 1}: tell {tell_now:,.0f}/s, raw stream {raw_now:,.0f}/s "
                f"(ratio {ratios[-1]:.2f}); best ask so far {ask:,.0f}/s"
            )
        progress(
            f"  tell/raw: best {tell / raw:.2f}, median of rounds {statistics.median(ratios):.2f}"
        )
        figures["tell_msgs_per_s"] = tell
        figures["raw_stream_msgs_per_s"] = raw
        figures["ask_roundtrips_per_s"] = ask
        resetter = await system.spawn(Resetter, name="resetter")
        resets = max([await resetter.ask(RESETS, timeout=60.0) for _ in range(2)])
        figures["deadline_resets_per_s"] = resets
        progress(f"  deadline resets over {DEADLINES:,} armed deadlines: {resets:,.0f}/s")
        beats = await heartbeat_rate(system)
        progress(f"  heartbeats over {DEADLINES:,} node actors (tell + reset): {beats:,.0f}/s")
        began = time.perf_counter()
    progress(f"  shutdown of {IDLE_ACTORS + 3:,} actors: {time.perf_counter() - began:.2f} s")
    return {key: round(figures[key], 1) for key in FIGURES}


async def measure_idle(count: int) -> dict[str, float]:
    """RSS of ``count`` idle actors (in a fresh process), and the time to stop them all."""
    async with open_actor_system("idle") as system:
        before = rss_mb()
        rate = await spawn_idle(system, count, "idle/")
        grown = rss_mb() - before
        began = time.perf_counter()
    stopped = time.perf_counter() - began
    return {"rss_mb": round(grown, 1), "spawn_per_s": round(rate, 1), "stop_s": round(stopped, 2)}


def child(argv: list[str]) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess; relay its progress; return its JSON."""
    command = [sys.executable, "-m", "simulations.bench_actors", *argv]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if not line.startswith("{"):
                progress(line.rstrip())
        if proc.wait() != 0:
            raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with --backend/--idle, one part of it in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=("asyncio", "trio"), help="measure one backend")
    parser.add_argument("--idle", type=int, help="measure this many idle actors")
    parser.add_argument("--on", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    if args.backend:
        print(json.dumps(anyio.run(measure_backend, backend=args.backend)))
        return
    if args.idle:
        run: Callable[[], Any] = lambda: measure_idle(args.idle)  # noqa: E731
        print(json.dumps(anyio.run(run, backend=args.on)))
        return
    began = time.perf_counter()
    report: dict[str, Any] = {}
    for backend in ("asyncio", "trio"):
        progress(f"{backend}:")
        report[backend] = child(["--backend", backend])
    report.update(report["asyncio"])
    progress("asyncio, 100,000 idle actors:")
    idle = child(["--idle", "100000", "--on", "asyncio"])
    progress(
        f"  {idle['rss_mb']:.0f} MB, spawned at {idle['spawn_per_s']:,.0f}/s, "
        f"stopped in {idle['stop_s']:.1f} s"
    )
    report["rss_mb_100k_idle_actors"] = idle["rss_mb"]
    progress(f"done in {time.perf_counter() - began:.0f} s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
