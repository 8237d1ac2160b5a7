"""Benchmark: submit-to-running latency of a deployment through Knit vs plain ``docker run``.

Run: ``python -m simulations.bench_deploy [-n 20]``. Starts ``knit dev`` (its own
nats-server, server and agent) on a free port with a temporary data dir, loads a local
busybox image, then deploys it ``n`` times through the API (one replica each, waiting until
the API says ``running``) and runs it ``n`` times with ``docker run -d``. Prints progress
lines and, as its last line, one JSON object: p50/p99 of both and their ratio.
Needs a Docker Engine; everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from knit.example import ensure_example_image
from knit.natsd import free_port

IMAGE = "knit-example/busybox:latest"
LABEL = "knit.bench=deploy"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def docker_run_latencies(n: int) -> list[float]:
    """Seconds from ``docker run -d`` to the container running, ``n`` times."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--label",
                LABEL,
                "--name",
                f"bench-docker-{i}",
                IMAGE,
                "sleep",
                "3600",
            ],
            check=True,
            capture_output=True,
        )
        out.append(time.perf_counter() - start)
    return out


def auth(data_dir: Path) -> dict[str, str]:
    """The headers that send ``knit dev``'s admin token (in ``<data dir>/admin.token``)."""
    return {"Authorization": f"Bearer {(data_dir / 'admin.token').read_text().strip()}"}


async def knit_latencies(api: str, n: int, headers: dict[str, str]) -> list[float]:
    """Seconds from ``POST /deployments`` to the API reporting the instance running."""
    out = []
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=headers) as http:
        for i in range(n):
            start = time.perf_counter()
            response = await http.post(
                "/deployments",
                json={"name": f"bench-{i}", "image": IMAGE, "command": ["sleep", "3600"]},
            )
            response.raise_for_status()
            deployment_id = response.json()["id"]
            with anyio.fail_after(60):
                while True:
                    data = (await http.get(f"/deployments/{deployment_id}")).json()
                    if any(x["status"] == "running" for x in data["instances"]):
                        break
                    await anyio.sleep(0.002)
            out.append(time.perf_counter() - start)
    return out


async def wait_for_node(api: str, data_dir: Path) -> None:
    """Wait until ``knit dev``'s agent is registered and healthy."""
    async with httpx.AsyncClient(base_url=api, timeout=5) as http:
        with anyio.fail_after(60):
            while True:
                try:
                    if not (data_dir / "admin.token").exists():
                        raise httpx.TransportError("no admin token yet")
                    nodes = (await http.get("/nodes", headers=auth(data_dir))).json()
                    if any(node["status"] == "healthy" for node in nodes):
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.1)


def cleanup(data_dir: Path) -> None:
    """Remove the benchmark's containers (both kinds)."""
    node_file = data_dir / "agent" / "node-id"
    filters = [["--filter", f"label={LABEL}"]]
    if node_file.exists():
        filters.append(["--filter", f"label=knit.node={node_file.read_text().strip()}"])
    for f in filters:
        ids = subprocess.run(
            ["docker", "ps", "-aq", *f], capture_output=True, text=True
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20, help="deployments of each kind")
    args = parser.parse_args()
    anyio.run(ensure_example_image, os.environ.get("DOCKER_HOST"))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="knit-bench-") as tmp:
        data_dir = Path(tmp)
        dev = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "knit.cli",
                "--log-level",
                "WARNING",
                "dev",
                "--http",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(data_dir / "dev.log", "w"),  # noqa: SIM115
        )
        try:
            anyio.run(wait_for_node, api, data_dir)
            print(f"knit dev ready on {api}; {args.n} deployments each way", flush=True)
            knit = anyio.run(knit_latencies, api, args.n, auth(data_dir))
            print(f"knit: p50 {statistics.median(knit) * 1000:.0f} ms", flush=True)
            docker = docker_run_latencies(args.n)
            print(f"docker run: p50 {statistics.median(docker) * 1000:.0f} ms", flush=True)
        finally:
            dev.send_signal(signal.SIGTERM)
            dev.wait(timeout=30)
            cleanup(data_dir)
    result = {
        "n": args.n,
        "knit_p50_ms": round(percentile(knit, 0.5) * 1000, 1),
        "knit_p99_ms": round(percentile(knit, 0.99) * 1000, 1),
        "docker_run_p50_ms": round(percentile(docker, 0.5) * 1000, 1),
        "docker_run_p99_ms": round(percentile(docker, 0.99) * 1000, 1),
    }
    result["p50_ratio"] = round(result["knit_p50_ms"] / result["docker_run_p50_ms"], 2)
    result["p99_ratio"] = round(result["knit_p99_ms"] / result["docker_run_p99_ms"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
