"""Benchmark of the API's per-entity reads on a store the size of the ``api`` scenario.

Layer: simulations (a tool). Imports anyio, ``knit.store``, ``knit.server`` and ``knit.api``.
Run with ``python -m simulations.bench_api``; the last line printed is a JSON object.

The store (a temporary SQLite file) holds 10,000 deployments of one instance each, 1,000
nodes and 100,000 events (10 per deployment). The three reads the scenario's API clients
make are measured:

* ``get_deployment`` — ``GET /deployments/<id>``: the deployment with its instances;
* ``get_node`` — ``GET /nodes/<id>``;
* ``events`` — ``GET /events?deployment_id=<id>&limit=20``.

Each through two layers: ``store`` (the ``ServerPlane`` method: store read and conversion
to JSON-ready data) and ``http`` (the whole Quart application called as an ASGI app, so
routing, the JSON body and Quart's per-request work count, not Hypercorn's HTTP parsing).
``concurrency`` callers loop over random ids; p50/p99 in milliseconds per kind, layer and
load of the event loop:

* ``idle`` — nothing else runs;
* ``busy`` — ``burners`` coroutines each burn 1 ms of CPU then yield, endlessly, as the
  server's actors keep its loop busy (every hop back to the loop waits for them).

The process is tuned as the server is (``tune_runtime``: GIL switch interval, GC).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import anyio.lowlevel
from sqlalchemy import insert

from knit.api.app import create_app
from knit.server.access import TokenKeeper
from knit.server.bridge import BridgeStats
from knit.server.context import ServerContext
from knit.server.leadership import SoleLeader
from knit.server.main import tune_runtime
from knit.server.plane import ServerPlane
from knit.server.repo import Repo
from knit.server.term import LeaderTerm
from knit.store import HeartbeatUpsert, new_id, nodes, open_store
from knit.store.models import ContainerInstance, Deployment, Event

DEPLOYMENTS = 10_000
NODES = 1_000
EVENTS_PER_DEPLOYMENT = 10
CHUNK = 2_000


async def fill(repo: Repo) -> tuple[list[str], list[str]]:
    """Write the scenario-sized state; returns the deployment ids and node ids."""
    now = time.time()
    beats = [
        HeartbeatUpsert(
            node_id=f"node-{i:05d}",
            hostname=f"host-{i:05d}",
            at=now,
            labels={"zone": f"z{i % 3}"},
            cpus=8,
            memory_bytes=32 << 30,
            docker_version="27.3.1",
            agent_version="0.1.0",
            public_key="k" * 44,
        )
        for i in range(NODES)
    ]
    await repo.store.write(nodes.record_heartbeats(beats))
    node_ids = [b.node_id for b in beats]
    deployment_ids = [new_id() for _ in range(DEPLOYMENTS)]
    spec: dict[str, Any] = {
        "image": "nginx:1.27",
        "registry_credentials_id": None,
        "network_attachments": [],
        "templates": [],
        "env": {"MODE": "bench"},
        "command": None,
        "replicas": 1,
        "ports": [{"container_port": 80, "host_port": None, "protocol": "tcp"}],
        "node_selector": {},
        "lost_after": 0.0,
        "restart_policy": {"policy": "always", "max_restarts": 3},
        "pending_reason": None,
        "generation": 1,
        "deleted": False,
    }
    for start in range(0, DEPLOYMENTS, CHUNK):
        part = deployment_ids[start : start + CHUNK]
        deps = [
            {"id": d, "name": f"web-{start + k}", "created_at": now, "updated_at": now, **spec}
            for k, d in enumerate(part)
        ]
        insts = [
            {
                "id": new_id(),
                "container_id": new_id(),
                "node_id": node_ids[(start + k) % NODES],
                "deployment_id": d,
                "index": 0,
                "status": "running",
                "error": None,
                "exit_code": None,
                "desired": True,
                "created_at": now,
                "updated_at": now,
            }
            for k, d in enumerate(part)
        ]
        evs = [
            {
                "id": new_id(),
                "at": now + (start + k) * 1e-3 + j * 1e-6,
                "kind": "instance.running",
                "message": f"instance {k} of web-{start + k} is running",
                "node_id": node_ids[(start + k) % NODES],
                "deployment_id": d,
                "instance_id": None,
                "task_id": None,
            }
            for k, d in enumerate(part)
            for j in range(EVENTS_PER_DEPLOYMENT)
        ]
        async with repo.store.db.transaction() as conn:
            await conn.execute(insert(Deployment), deps)
            await conn.execute(insert(ContainerInstance), insts)
            await conn.execute(insert(Event), evs)
    return deployment_ids, node_ids


class AsgiClient:
    """Calls a Quart app as an ASGI server would, for GET requests; returns status and body.

    Every request carries ``token`` as ``Authorization: Bearer`` (the gate checks it on
    both the fast path and Quart's).
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.authorization = f"Bearer {token}".encode()

    async def get(self, path: str, query: bytes = b"") -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [
                (b"host", b"bench"),
                (b"accept", b"application/json"),
                (b"authorization", self.authorization),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "extensions": {},
        }
        sent = False
        status = 0
        body: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(body)


Call = Callable[[random.Random], Awaitable[object]]


def calls(
    plane: ServerPlane, client: AsgiClient, deps: list[str], node_ids: list[str]
) -> dict[str, Call]:
    """The read kinds, per layer, each given a random source to pick its id with."""

    async def http(path: str, query: bytes = b"") -> None:
        status, _body = await client.get(path, query)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status}")

    return {
        "store.get_deployment": lambda r: plane.get_deployment(r.choice(deps)),
        "store.get_node": lambda r: plane.get_node(r.choice(node_ids)),
        "store.events": lambda r: plane.list_events(
            deployment_id=r.choice(deps), node_id=None, limit=20
        ),
        "http.get_deployment": lambda r: http(f"/deployments/{r.choice(deps)}"),
        "http.get_node": lambda r: http(f"/nodes/{r.choice(node_ids)}"),
        "http.events": lambda r: http(
            "/events", f"deployment_id={r.choice(deps)}&limit=20".encode()
        ),
    }


async def measure(call: Call, requests: int, concurrency: int) -> dict[str, float]:
    """p50/p99 (ms) and rate of ``requests`` calls made by ``concurrency`` loops."""
    latencies: list[float] = []

    async def caller(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(requests // concurrency):
            start = time.perf_counter()
            await call(rng)
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for seed in range(concurrency):
            tg.start_soon(caller, seed)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
        "per_s": round(len(latencies) / elapsed),
    }


async def burn(period: float) -> None:
    """Keep the event loop busy: burn ``period`` s of CPU, yield, forever."""
    while True:
        end = time.perf_counter() + period
        while time.perf_counter() < end:
            pass
        await anyio.lowlevel.checkpoint()


async def bench(requests: int, concurrency: int, burners: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="knit-bench-api-") as tmp:
        async with open_store(Path(tmp) / "knit.db") as store:
            repo = Repo(store)
            started = time.perf_counter()
            deps, node_ids = await fill(repo)
            results["fill_s"] = round(time.perf_counter() - started, 1)
            ctx = cast(
                ServerContext,
                SimpleNamespace(
                    repo=repo, last_heartbeats={}, host_network_nodes=set(), reserved={}
                ),
            )
            access = TokenKeeper(store)
            token_file = Path(tmp) / "admin.token"
            await access.ensure_admin_token(token_file)
            plane = ServerPlane(ctx, access, SoleLeader("bench"), BridgeStats())
            # The leader's view of the nodes (what a follower reads from the store instead).
            plane.term = LeaderTerm(
                ctx, cast(Any, None), cast(Any, None), cast(Any, None), plane.bridge
            )
            client = AsgiClient(create_app(plane), token_file.read_text().strip())
            kinds = calls(plane, client, deps, node_ids)
            for call in kinds.values():  # warm up caches and the pool
                for i in range(50):
                    await call(random.Random(i))
            for load in ("idle", "busy"):
                async with anyio.create_task_group() as tg:
                    if load == "busy":
                        for _ in range(burners):
                            tg.start_soon(burn, 0.001)
                    for name, call in kinds.items():
                        results[f"{load}.{name}"] = await measure(call, requests, concurrency)
                    tg.cancel_scope.cancel()
    return results


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000, help="requests per measure")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent callers")
    parser.add_argument("--burners", type=int, default=1, help="1-ms CPU burners when busy")
    args = parser.parse_args()
    tune_runtime()
    results = anyio.run(bench, args.requests, args.concurrency, args.burners)
    for key, value in results.items():
        print(f"{key}: {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    run()
