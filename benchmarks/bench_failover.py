"""Benchmark of a leader's failover: two ``knit server`` processes on one PostgreSQL database
(a throwaway cluster), a three-member NATS cluster with Knit's operator-mode auth, two real
agents on the Docker Engine; the leader is SIGKILLed, again and again.

Run ``python -m benchmarks.bench_failover [--rounds N] [--lease-ttl S]`` (the test suite's
machine set-up: Docker, PostgreSQL, the nats-server wheel). Each round kills the server that
leads, submits a deployment to the other one at once (it is stored, and waits for a
leader), and measures from the kill:

    takeover_s        until the other server's ``GET /status`` says it leads
    acting_s          until the new leader's actors placed the pending deployment's instance
                      (the instance has a node)
    running_s         until that instance runs (its container started on an agent)

then starts the killed server again (it follows) for the next round. The kill comes at a
random point between two renewals of the lease. It prints one line per
round, the medians and maxima, and, as its last line, one JSON object of them. Expect
``takeover_s`` between two thirds of the lease (it was renewed at most a third of it before
the kill) and the whole lease, plus a follower's retry (a fifth of the lease, a second at
most).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from knit.natsd import find_nats_server
from simulations.postgres import PostgresCluster
from tests.support.docker import docker_host_from_env, ensure_busybox_image
from tests.support.knit import SLEEPER, KnitCluster, cluster_for, unique_name
from tests.support.knit_api import KnitApi
from tests.support.knit_ha import (
    ha_server_args,
    knit_nats_cluster,
    leader_of,
    start_second_server,
    stop_server,
)
from tests.support.knit_processes import KnitServer

BUSYBOX = "knit-test/busybox:latest"


def until(predicate: Any, timeout: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"no {what} within {timeout:g} s")


def one_round(
    knit: KnitCluster, servers: dict[str, KnitServer], apis: dict[str, KnitApi], ttl: float
) -> dict[str, float]:
    leading = leader_of(apis["a"]) or leader_of(apis["b"])
    assert leading in servers, f"nobody leads: {leading}"
    other = "b" if leading == "a" else "a"
    dead, api = servers[leading], apis[other]
    if dead in knit.watch.processes:
        knit.watch.processes.remove(dead)
    # At a random point between two renewals (the previous round's timing would otherwise
    # kill at the same point of the lease every time).
    time.sleep(random.uniform(0, ttl / 3))
    dead.kill()
    killed = time.monotonic()
    created = api.ok(
        api.post(
            "/deployments", {"name": unique_name("failover"), "image": BUSYBOX, "command": SLEEPER}
        ),
        201,
    )
    knit.deployments.append(created["id"])

    def instance() -> dict[str, Any] | None:
        try:
            found = api.instances_of(created["id"])
        except Exception:
            return None
        return found[0] if found else None

    took_over = until(lambda: leader_of(api) == other, 10 * ttl + 30, "new leader")
    acting = until(lambda: (i := instance()) is not None and i.get("node_id"), 60, "placement")
    running = until(
        lambda: (i := instance()) is not None and i.get("status") == "running", 60, "running"
    )
    dead.start_and_wait()
    knit.watch.processes.append(dead)
    until(lambda: leader_of(apis[leading]) == other, 30, "the old leader following")
    return {
        "takeover_s": round(took_over - killed, 2),
        "acting_s": round(acting - killed, 2),
        "running_s": round(running - killed, 2),
    }


def measure(folder: Path, docker_host: str, rounds: int, ttl: float) -> dict[str, Any]:
    postgres = PostgresCluster()
    postgres.start()
    try:
        url = postgres.create_database("knit")
        with (
            knit_nats_cluster(
                find_nats_server(),
                folder,
                "--database-url",
                url,
                "--data-dir",
                str(folder / "server"),
            ) as nats,  # fmt: skip
            cluster_for(
                folder,
                docker_host,
                agents=({}, {}),
                external_nats=nats.urls,
                server_args=ha_server_args(url, "a", ttl),
            ) as knit,
        ):
            b = start_second_server(knit, nats.urls, url, ttl)
            servers = {"a": knit.server, "b": b}
            apis = {
                "a": knit.api,
                "b": KnitApi(b.api_url, knit.watch, token_file=knit.server.token_file),
            }
            try:
                until(lambda: leader_of(apis["b"]) == "a", 30, "a leading")
                results = []
                for n in range(1, rounds + 1):
                    figures = one_round(knit, servers, apis, ttl)
                    print(f"round {n}: {figures}", flush=True)
                    results.append(figures)
            finally:
                apis["b"].close()
                stop_server(knit, b)
    finally:
        postgres.stop()
    summary: dict[str, Any] = {"lease_ttl_s": ttl, "rounds": rounds}
    for key in ("takeover_s", "acting_s", "running_s"):
        values = [r[key] for r in results]
        summary[f"{key}_p50"] = round(statistics.median(values), 2)
        summary[f"{key}_max"] = round(max(values), 2)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="leaders killed (default 5)")
    parser.add_argument(
        "--lease-ttl", type=float, default=10.0, help="the servers' --lease-ttl (default 10)"
    )
    args = parser.parse_args()
    source = docker_host_from_env()
    ensure_busybox_image(source)
    with tempfile.TemporaryDirectory(prefix="knit-bench-failover-") as folder:
        figures = measure(Path(folder), source, args.rounds, args.lease_ttl)
    for name, value in figures.items():
        print(f"{name:20} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
