"""Benchmark of log streams, everything real: ``knit server`` (embedded nats-server), one
``knit agent``, the Docker Engine, a busybox container.

Run ``python -m benchmarks.bench_logs``. It prints one line per figure, then, as its last
line, one JSON object of them::

    docker_lines_s      lines/s ``docker logs -f`` reads from a container printing as fast
                        as it can (the yardstick: the Engine's own rate)
    knit_lines_s        lines/s ``GET /deployments/{id}/logs?follow=1`` delivers from the
                        same kind of container (what ``knit logs -f`` reads)
    docker_latency_p50_ms, docker_latency_p99_ms
                        from the Engine's timestamp of a line to ``docker logs -f -t``
                        printing it (a line every 100 ms)
    knit_latency_p50_ms, knit_latency_p99_ms
                        the same through Knit (``timestamps=1``): Engine → agent → NATS →
                        server → HTTP; the difference to Docker's is what Knit adds

Both ends run on the same 2 cores as the container, the agent, the server and the
nats-server: a flood competes with its own readers.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.docker import docker_host_from_env, ensure_busybox_image
from tests.support.knit import KnitCluster, cluster_for, unique_name
from tests.support.knit_processes import TOKEN_FILES, read_admin_token

BUSYBOX = "knit-test/busybox:latest"
LINE = "a log line of about sixty characters, as many are.........."
FLOOD = ["sh", "-c", f"trap 'exit 0' TERM; yes '{LINE}'"]
TICKER = ["sh", "-c", "trap 'exit 0' TERM; while true; do echo tick; usleep 100000; done"]
SECONDS = 10.0


def deploy(knit: KnitCluster, command: list[str]) -> tuple[str, str]:
    created = knit.create_deployment(
        {"name": unique_name("bench-logs"), "image": BUSYBOX, "command": command}
    )
    [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
    return str(created["id"]), str(instance["container_id"])


def knit_lines(knit: KnitCluster, deployment_id: str, params: dict[str, str]) -> Iterator[str]:
    token = read_admin_token(TOKEN_FILES[knit.server.api_url]) or ""
    with httpx.stream(
        "GET",
        f"{knit.server.api_url}/deployments/{deployment_id}/logs",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(10, read=None),
    ) as response:
        response.raise_for_status()
        yield from response.iter_lines()


def docker_lines(docker_host: str, container_id: str, *extra: str) -> Iterator[str]:
    process = subprocess.Popen(
        ["docker", "-H", docker_host, "logs", "-f", "--tail", "0", *extra, container_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield from process.stdout
    finally:
        process.kill()
        process.wait()


def rate(lines: Iterator[str], seconds: float = SECONDS) -> float:
    """Lines per second over ``seconds``, after a second of warm-up."""
    start = time.monotonic()
    for _ in lines:
        if time.monotonic() - start > 1.0:
            break
    count, start = 0, time.monotonic()
    for _ in lines:
        count += 1
        if count % 1000 == 0 and time.monotonic() - start > seconds:
            break
    return count / (time.monotonic() - start)


def latencies(lines: Iterator[str], count: int = 80) -> list[float]:
    """Milliseconds from each line's Engine timestamp to its arrival here."""
    found: list[float] = []
    for line in lines:
        arrived = time.time()
        stamp = line.removeprefix("[0] ").split(" ", 1)[0]
        written = datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()
        found.append((arrived - written) * 1000)
        if len(found) >= count:
            break
    return found[5:]


def pct(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100)[int(q) - 1], 2)


def main() -> None:
    docker_host = docker_host_from_env()
    ensure_busybox_image(docker_host)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, cluster_for(Path(tmp), docker_host) as knit:
        flood_id, flood_container = deploy(knit, FLOOD)
        figures["docker_lines_s"] = round(rate(docker_lines(docker_host, flood_container)))
        print("docker_lines_s", figures["docker_lines_s"], flush=True)
        follow = {"follow": "1", "tail": "0"}
        figures["knit_lines_s"] = round(rate(knit_lines(knit, flood_id, follow)))
        print("knit_lines_s", figures["knit_lines_s"], flush=True)
        knit.api.delete(f"/deployments/{flood_id}")
        tick_id, tick_container = deploy(knit, TICKER)
        docker = latencies(docker_lines(docker_host, tick_container, "-t"))
        stamped = {**follow, "timestamps": "1"}
        through = latencies(knit_lines(knit, tick_id, stamped))
        for name, values in (("docker", docker), ("knit", through)):
            for q in (50, 99):
                figures[f"{name}_latency_p{q}_ms"] = pct(values, q)
                print(f"{name}_latency_p{q}_ms", figures[f"{name}_latency_p{q}_ms"], flush=True)
        knit.api.delete(f"/deployments/{tick_id}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
