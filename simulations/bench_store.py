"""Benchmark of the state store's write paths on a temporary SQLite file.

Layer: simulations (a tool). Imports anyio and ``knit.store``. Run with
``python -m simulations.bench_store``; the last line printed is a JSON object of rates
(rows per second, through the one ``StoreWriter``, each batch committed):

* ``heartbeat_upserts_per_s`` — heartbeats of 10,000 known nodes, 1,000 per op;
* ``instance_inserts_per_s`` — new instances, 1,000 per op;
* ``event_appends_per_s`` — events, 1,000 per op;
* ``status_updates_per_s`` — instance status changes, 1,000 per op.

And the same paths when every row is its own op, as actors submit them one by one
(``*_single_per_s``: queued with ``submit_nowait``, merged by the writer), plus
``status_update_awaited_per_s``: ``instances.update_status`` awaited by 100 concurrent
callers (two statements each, not mergeable: the op reads the row back).

Then the row ops of a placement as the server queues them (``submit_nowait``): per
placement two upserts of one instance, a task insert, two task state updates and five
events, committed in writer batches of N = 100 and 500 ops. ``placementN_ops_per_s`` is
row ops per second; ``placementN_loop_us_per_op`` the event loop's CPU per op (the thread's
CPU time: building and queuing the ops, and the writer's work on the loop, not the SQLite
thread's), ``..._build_us_per_op`` the part of it spent building the ops and
``..._write_us_per_op`` the rest; each as the lowest and highest of 5 rounds.
``--only placements`` runs this measure alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel

from knit.errors import StoreError
from knit.store import (
    EventRecord,
    HeartbeatUpsert,
    InstanceRecord,
    InstanceStatusUpdate,
    Op,
    Store,
    deployments,
    events,
    instances,
    nodes,
    open_store,
    tasks,
)

NODES = 10_000
CHUNK = 1_000


def heartbeat(i: int, at: float) -> HeartbeatUpsert:
    return HeartbeatUpsert(
        node_id=f"node-{i:05d}",
        hostname=f"host-{i:05d}",
        at=at,
        labels={"zone": f"z{i % 3}", "rack": f"r{i % 40}"},
        cpus=8,
        memory_bytes=32 << 30,
        docker_version="27.3.1",
        agent_version="0.1.0",
        public_key="k" * 44,
    )


async def timed(rows: int, body: Callable[[], Awaitable[None]]) -> float:
    """Rows per second of ``body``."""
    start = time.perf_counter()
    await body()
    return rows / (time.perf_counter() - start)


async def bench(store: Store, scale: int) -> dict[str, float]:
    results: dict[str, float] = {}
    now = time.time()
    await store.write(nodes.record_heartbeats(heartbeat(i, now) for i in range(NODES)))

    rounds = max(1, scale // NODES)

    async def heartbeats_bulk() -> None:
        for r in range(rounds):
            for start in range(0, NODES, CHUNK):
                beats = [heartbeat(i, now + r) for i in range(start, start + CHUNK)]
                await store.write(nodes.record_heartbeats(beats))

    results["heartbeat_upserts_per_s"] = await timed(rounds * NODES, heartbeats_bulk)

    singles = min(scale, 20_000)

    async def heartbeats_single() -> None:
        for i in range(singles):
            await _nowait(store, nodes.record_heartbeat(heartbeat(i % NODES, now + 99)))
        await store.write(nodes.record_heartbeats([]))  # FIFO: all of the above committed

    results["heartbeat_single_per_s"] = await timed(singles, heartbeats_single)

    web = await store.write(deployments.create("bench", "bench:1", replicas=scale))
    made = [
        InstanceRecord.new(web.id, i, at=now, node_id=f"node-{i % NODES:05d}") for i in range(scale)
    ]

    async def inserts_bulk() -> None:
        for start in range(0, scale, CHUNK):
            await store.write(instances.insert_many(made[start : start + CHUNK]))

    results["instance_inserts_per_s"] = await timed(scale, inserts_bulk)

    more = [InstanceRecord.new(web.id, scale + i, at=now) for i in range(singles)]

    async def inserts_single() -> None:
        for inst in more:
            await _nowait(store, instances.insert_many([inst]))
        await store.write(instances.insert_many([]))

    results["instance_insert_single_per_s"] = await timed(singles, inserts_single)

    async def events_bulk() -> None:
        for start in range(0, scale, CHUNK):
            batch = [
                EventRecord.new(
                    "instance.running",
                    f"instance {i} running",
                    at=now + i * 1e-6,
                    deployment_id=web.id,
                    node_id=made[i].node_id,
                    instance_id=made[i].id,
                )
                for i in range(start, min(start + CHUNK, scale))
            ]
            await store.write(events.append_many(batch))

    results["event_appends_per_s"] = await timed(scale, events_bulk)

    async def events_single() -> None:
        for i in range(singles):
            op = events.append("node.healthy", f"node {i} healthy", node_id=f"node-{i % NODES:05d}")
            await _nowait(store, op)
        await store.write(events.append_many([]))

    results["event_single_per_s"] = await timed(singles, events_single)

    async def statuses_bulk() -> None:
        for start in range(0, scale, CHUNK):
            updates = [
                InstanceStatusUpdate(inst.id, "running", at=now + 1, container_id=f"c{start}")
                for inst in made[start : start + CHUNK]
            ]
            await store.write(instances.update_statuses(updates))

    results["status_updates_per_s"] = await timed(scale, statuses_bulk)

    async def statuses_single() -> None:
        for inst in made[:singles]:
            update = InstanceStatusUpdate(inst.id, "stopped", at=now + 2, exit_code=0)
            await _nowait(store, instances.update_statuses([update]))
        await store.write(instances.update_statuses([]))

    results["status_update_single_per_s"] = await timed(singles, statuses_single)

    awaited = min(scale, 5_000)

    async def statuses_awaited() -> None:
        async def caller(part: list[InstanceRecord]) -> None:
            for inst in part:
                await store.write(instances.update_status(inst.id, "running", container_id="x"))

        async with anyio.create_task_group() as tg:
            for k in range(100):
                tg.start_soon(caller, made[k:awaited:100])

    results["status_update_awaited_per_s"] = await timed(awaited, statuses_awaited)
    return {key: round(value) for key, value in results.items()}


PLACEMENT_OPS = 10
"""Row ops queued per placement by :func:`placement_ops`."""


def placement_ops(deployment_id: str, index: int, at: float) -> list[Op[object]]:
    """The row ops the server queues for one placement, in their order."""
    node = f"node-{index % NODES:05d}"
    inst = InstanceRecord.new(deployment_id, index, at=at, node_id=node)
    ops: list[Op[object]] = [instances.upsert_one(inst)]
    ops.append(
        events.append(
            "instance.placed",
            "placed",
            deployment_id=deployment_id,
            node_id=node,
            instance_id=inst.id,
            at=at,
        )
    )
    task = tasks.create("deploy", inst.id, deployment_id, node_id=node, at=at)
    ops.append(task)
    ops.append(
        events.append(
            "task.created",
            "created",
            task_id=task.result.id,
            node_id=node,
            instance_id=inst.id,
            at=at,
        )
    )
    ops.append(tasks.record_state(task.result.id, "published", attempt=1, at=at))
    ops.append(events.append("task.published", "published", task_id=task.result.id, at=at))
    ops.append(tasks.record_state(task.result.id, "succeeded", attempt=1, at=at))
    running = dataclasses.replace(inst, status="running", container_id="c")
    ops.append(instances.upsert_one(running))
    ops.append(events.append("task.succeeded", "succeeded", task_id=task.result.id, at=at))
    ops.append(
        events.append(
            "instance.running",
            "running",
            deployment_id=deployment_id,
            node_id=node,
            instance_id=inst.id,
            at=at,
        )
    )
    return ops


async def bench_placements(
    store: Store, count: int, batch: int, rounds: int = 5
) -> dict[str, float]:
    """Row ops of ``count`` placements, ``rounds`` times; the range over the rounds.

    The ops of ``batch`` placements are built, queued, and committed (awaited) together:
    one writer batch of ``batch * PLACEMENT_OPS`` ops, like the server's when its writer
    commits what queued during the previous commit.
    """
    now = time.time()
    web = await store.write(deployments.create(f"placements-{now}", "bench:1", replicas=count))
    ops = count * PLACEMENT_OPS
    seen: dict[str, list[float]] = {}
    for r in range(rounds):
        build = 0.0
        cpu_start = time.thread_time()
        start = time.perf_counter()
        for first in range(r * count, (r + 1) * count, batch):
            build_start = time.thread_time()
            chunk = [
                op for i in range(first, first + batch) for op in placement_ops(web.id, i, now)
            ]
            build += time.thread_time() - build_start
            for op in chunk:
                store.write_nowait(op)
            await store.write(events.append_many([]))  # FIFO: all of the above committed
        wall = time.perf_counter() - start
        cpu = time.thread_time() - cpu_start
        figures = {
            "ops_per_s": ops / wall,
            "loop_us_per_op": cpu / ops * 1e6,
            "build_us_per_op": build / ops * 1e6,
            "write_us_per_op": (cpu - build) / ops * 1e6,
        }
        print(
            f"batch {batch * PLACEMENT_OPS}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in figures.items())
        )
        for key, value in figures.items():
            seen.setdefault(key, []).append(value)
    results: dict[str, float] = {}
    for key, values in seen.items():
        name = f"placement{batch * PLACEMENT_OPS}_{key}"
        results[f"{name}_min"] = round(min(values), 1)
        results[f"{name}_max"] = round(max(values), 1)
    return results


async def _nowait(store: Store, op: Op[object]) -> None:
    """``write_nowait``, waiting briefly whenever the writer's queue is full."""
    while True:
        try:
            store.write_nowait(op)
            return
        except StoreError:
            if store.writer.queued == 0:
                raise  # stopped, not overloaded
            await anyio.sleep(0.001)


async def main(scale: int, only: str | None = None) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="knit-bench-") as tmp:
        if only != "placements":
            async with open_store(Path(tmp) / "knit.db") as store:
                results.update(await bench(store, scale))
                _print_stats(store)
        for batch in (10, 50):
            # A writer batch is exactly the ops of ``batch`` placements and the awaited op
            # that ends them: the writer lingers until it has them all.
            ops = batch * PLACEMENT_OPS + 1
            path = Path(tmp) / f"placements-{batch}.db"
            async with open_store(path, max_batch=ops, linger=10.0) as store:
                now = time.time()
                beats = (heartbeat(i, now) for i in range(NODES))
                await store.write(nodes.record_heartbeats(beats))
                results.update(await bench_placements(store, min(scale, 10_000), batch))
                _print_stats(store)
    return results


def _print_stats(store: Store) -> None:
    stats = store.writer.stats
    print(
        f"writer: {stats.batches} batches, {stats.ops} ops, largest batch "
        f"{stats.largest_batch}, {stats.statements_saved} statements saved by merging"
    )


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100_000, help="rows per bulk measure")
    parser.add_argument("--only", choices=["placements"], help="run one measure alone")
    args = parser.parse_args()
    results = anyio.run(main, args.scale, args.only)
    print(json.dumps(results))


if __name__ == "__main__":
    run()
