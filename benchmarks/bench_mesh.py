"""Benchmark of the WireGuard mesh on a LAN of three hosts (network namespaces, each with its
own dockerd: ``tests.support.hosts``), everything real: ``knit server --mesh-cidr`` on host1,
``knit agent --mesh-endpoint`` on host2 and host3, wireguard-go interfaces.

Run ``python -m benchmarks.bench_mesh`` as root (the test suite's machine set-up). It prints
one line per figure, then, as its last line, one JSON object of them::

    join_to_healthy_s        from ``knit agent`` starting (join, interface up, NATS through
                             the tunnel, registration) to the node healthy in GET /nodes;
                             the slower of the two agents
    rtt_lan_us, rtt_mesh_us  median round trip of 64 bytes on one TCP connection, host2 to
                             host1, over the bare LAN and over the tunnel
    throughput_lan_mbit_s,   one TCP connection sending 200 MB host2 to host1
    throughput_mesh_mbit_s
    heartbeat_lag_p50_ms,    the server's heartbeat lag over the mesh (two agents, a
    heartbeat_lag_p99_ms     heartbeat every 0.5 s, ``HEARTBEAT_SECONDS`` of them)

The two cores are shared by wireguard-go on both ends, the kernel's veths and the test's own
processes: a real link between two hosts is a different figure.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from knit.server.metrics import bucket_value_ms
from tests.support.docker import docker_host_from_env, ensure_busybox_image
from tests.support.hosts import Host, Lan, open_lan
from tests.support.knit_api import KnitApi
from tests.support.knit_mesh import mesh_agent, mesh_server
from tests.support.knit_processes import ProcessWatch

MESH_CIDR = "10.88.0.0/24"
SERVER_MESH = "10.88.0.1"
PROBE_PORT = 15001
HEARTBEAT_SECONDS = 20.0

ECHO_SERVER = """
import socket, threading
def serve(conn):
    with conn:
        mode = conn.recv(1)
        if mode == b"e":
            while data := conn.recv(64):
                conn.sendall(data)
        else:
            while conn.recv(1 << 20):
                pass
            conn.sendall(b"k")
listener = socket.create_server(("0.0.0.0", PORT), reuse_port=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

CLIENT = """
import json, socket, statistics, sys, time
address, port = sys.argv[1], int(sys.argv[2])
with socket.create_connection((address, port), timeout=10) as conn:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sendall(b"e")
    message, times = b"x" * 64, []
    for _ in range(2000):
        start = time.perf_counter()
        conn.sendall(message)
        got = 0
        while got < 64:
            got += len(conn.recv(64 - got))
        times.append(time.perf_counter() - start)
with socket.create_connection((address, port), timeout=30) as conn:
    conn.sendall(b"s")
    chunk, total = b"y" * (1 << 20), 200
    start = time.perf_counter()
    for _ in range(total):
        conn.sendall(chunk)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    seconds = time.perf_counter() - start
print(json.dumps({"rtt_us": statistics.median(times) * 1e6,
                  "mbit_s": total * 8 * 1.048576 / seconds}))
"""


def lag_percentiles(status: dict[str, Any]) -> tuple[float, float]:
    """p50 and p99 of the heartbeat lag histogram of ``GET /status``."""
    counts: list[int] = status["heartbeats"]["counts"]
    total = sum(counts)
    marks: dict[float, float] = {}
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        for q in (0.5, 0.99):
            if q not in marks and total and seen >= q * total:
                marks[q] = bucket_value_ms(index)
    return marks.get(0.5, 0.0), marks.get(0.99, 0.0)


def probe(host: Host, address: str) -> dict[str, float]:
    done = host.run([sys.executable, "-c", CLIENT, address, str(PROBE_PORT)], timeout=120)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure(lan: Lan, workdir: Path) -> dict[str, float]:
    host1, host2, host3 = lan.hosts
    server = mesh_server(lan, host1, workdir, MESH_CIDR, prefix="kb")
    watch = ProcessWatch([server])
    api = KnitApi(server.api_url, watch, token_file=server.token_file)
    figures: dict[str, float] = {}
    try:
        server.start_and_wait()
        slowest = 0.0
        for host in (host2, host3):
            token = api.ok(api.post("/join-tokens", {"uses": 1}), 201)["token"]
            agent = mesh_agent(lan, host, workdir, server.api_url, token, prefix="kb")
            watch.processes.append(agent)
            started = time.monotonic()
            agent.start()
            api.wait(
                lambda h=host.name: any(  # type: ignore[misc]
                    n["hostname"] == h and n["status"] == "healthy" for n in api.nodes()
                ),
                timeout=30,
                what=f"{host.name} healthy",
            )
            slowest = max(slowest, time.monotonic() - started)
        figures["join_to_healthy_s"] = round(slowest, 2)

        host1.popen([sys.executable, "-c", ECHO_SERVER.replace("PORT", str(PROBE_PORT))])
        time.sleep(0.5)
        lan_figures = probe(host2, host1.address)
        mesh_figures = probe(host2, SERVER_MESH)
        figures["rtt_lan_us"] = round(lan_figures["rtt_us"], 1)
        figures["rtt_mesh_us"] = round(mesh_figures["rtt_us"], 1)
        figures["throughput_lan_mbit_s"] = round(lan_figures["mbit_s"])
        figures["throughput_mesh_mbit_s"] = round(mesh_figures["mbit_s"])

        time.sleep(HEARTBEAT_SECONDS)
        p50, p99 = lag_percentiles(api.ok(api.get("/status"), 200))
        figures["heartbeat_lag_p50_ms"] = round(p50, 1)
        figures["heartbeat_lag_p99_ms"] = round(p99, 1)
    finally:
        api.close()
        for process in reversed(watch.processes):
            process.stop()
    return figures


def main() -> int:
    source = docker_host_from_env()
    ensure_busybox_image(source)
    with (
        tempfile.TemporaryDirectory(prefix="knit-bench-mesh-") as folder,
        open_lan(3, source=source) as lan,
    ):
        figures = measure(lan, Path(folder))
    for name, value in figures.items():
        print(f"{name:28} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
