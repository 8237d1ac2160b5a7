"""Logs as a user reads them: ``knit logs -f`` and ``GET /deployments/{id}/logs`` on a real
cluster (server, nats-server, agent, Docker Engine) with containers that print.

The contract (issue 13): new lines within a second; ``tail`` and ``since`` trim; a client
that stops reading does not grow the server's memory; the stream ends cleanly when the
deployment is deleted.
"""

from __future__ import annotations

import itertools
import os
import re
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from knit.wire.logs import SILENCE
from tests.support.knit import KnitCluster, cluster_for, unique_name
from tests.support.knit_processes import KNIT_COMMAND, REPO_ROOT, TOKEN_FILES, read_admin_token

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"
TICKER = [
    "sh",
    "-c",
    "trap 'exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); usleep 100000; done",
]
"""A line every 100 ms (busybox ``usleep``)."""
FLOOD = ["sh", "-c", "trap 'exit 0' TERM; yes 'flood flood flood flood flood flood flood'"]
"""As many lines as the container can print."""


def deploy(knit: KnitCluster, command: list[str], replicas: int = 1) -> str:
    name = unique_name("logs")
    created = knit.create_deployment(
        {"name": name, "image": BUSYBOX, "command": command, "replicas": replicas}
    )
    knit.api.wait_instances(created["id"], "running", count=replicas, timeout=60)
    return str(created["id"])


def token(knit: KnitCluster) -> str:
    return read_admin_token(TOKEN_FILES[knit.server.api_url]) or ""


def stream(knit: KnitCluster, path: str, params: dict[str, str]) -> Iterator[str]:
    headers = {"Authorization": f"Bearer {token(knit)}"}
    timeout = httpx.Timeout(10, read=None)
    with httpx.stream(
        "GET", knit.server.api_url + path, params=params, headers=headers, timeout=timeout
    ) as response:
        assert response.status_code == 200, response.read()
        yield from response.iter_lines()


def test_knit_logs_follow_shows_new_lines_within_a_second(knit: KnitCluster) -> None:
    deployment_id = deploy(knit, TICKER)
    name = knit.api.deployment(deployment_id)["name"]
    env = {**os.environ, "KNIT_TOKEN": token(knit)}
    with subprocess.Popen(
        [*KNIT_COMMAND, "logs", name, "-f", "--tail", "2", "--api", knit.server.api_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=env,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            selector = selectors.DefaultSelector()
            selector.register(process.stdout, selectors.EVENT_READ)
            seen: list[tuple[float, str]] = []
            deadline = time.monotonic() + 15
            while len(seen) < 10 and time.monotonic() < deadline:
                if selector.select(timeout=1.0):
                    seen.append((time.monotonic(), process.stdout.readline()))
            selector.close()
            assert len(seen) >= 10, seen
            assert all(re.fullmatch(r"\[0\] tick \d+\n", line) for _, line in seen), seen
            numbers = [int(line.split()[-1]) for _, line in seen]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            # past the two lines of --tail, each line comes within a second of the last
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen[2:])]
            assert max(gaps) < 1.0, gaps
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_tail_and_since_trim(knit: KnitCluster) -> None:
    deployment_id = deploy(knit, TICKER)
    time.sleep(3)  # ~30 lines
    path = f"/deployments/{deployment_id}/logs"
    tail = list(stream(knit, path, {"tail": "3"}))
    assert len(tail) == 3 and all(line.startswith("[0] tick ") for line in tail), tail
    everything = list(stream(knit, path, {"tail": "all"}))
    assert len(everything) >= 20, everything
    recent = list(stream(knit, path, {"tail": "all", "since": "1s"}))
    assert 3 <= len(recent) <= 15, recent
    assert recent == everything[-len(recent) :] or recent[0] in everything
    stamped = list(stream(knit, path, {"tail": "1", "timestamps": "1"}))
    assert re.fullmatch(r"\[0\] \d{4}-\d\d-\d\dT\S+ tick \d+", stamped[0]), stamped


def test_replicas_are_merged_with_their_index_and_one_can_be_chosen(knit: KnitCluster) -> None:
    deployment_id = deploy(knit, TICKER, replicas=2)
    time.sleep(1)
    path = f"/deployments/{deployment_id}/logs"
    lines = list(stream(knit, path, {"tail": "2"}))
    assert sorted(line[:3] for line in lines) == ["[0]", "[0]", "[1]", "[1]"], lines
    only = list(stream(knit, path, {"tail": "2", "instance": "1"}))
    assert [line[:3] for line in only] == ["[1]", "[1]"], only
    [instance] = [i for i in knit.api.instances_of(deployment_id) if i["index"] == 0]
    for key in ("id", "instance_id"):  # its container's id (as listed), or Knit's
        one = list(stream(knit, f"/instances/{instance[key]}/logs", {"tail": "2"}))
        assert [line[:3] for line in one] == ["[0]", "[0]"], one


def test_the_stream_ends_cleanly_when_the_deployment_is_deleted(knit: KnitCluster) -> None:
    deployment_id = deploy(knit, TICKER)
    lines = stream(knit, f"/deployments/{deployment_id}/logs", {"follow": "1", "tail": "1"})
    assert next(lines).startswith("[0] tick ")
    knit.api.ok(knit.api.delete(f"/deployments/{deployment_id}"), 200, 202)
    started = time.monotonic()
    rest = list(lines)  # ends (no exception) once the container stops
    assert time.monotonic() - started < 30
    assert all(line.startswith("[0] tick ") for line in rest), rest[-3:]


def test_a_client_that_stops_reading_does_not_grow_the_servers_memory(knit: KnitCluster) -> None:
    deployment_id = deploy(knit, FLOOD)
    server = psutil.Process(knit.server.pid)
    url = httpx.URL(knit.server.api_url)
    with socket.create_connection((url.host, url.port or 80)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = (
            f"GET /deployments/{deployment_id}/logs?follow=1&tail=0 HTTP/1.1\r\n"
            f"Host: {url.host}\r\nAuthorization: Bearer {token(knit)}\r\n\r\n"
        )
        sock.sendall(request.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(2)  # the buffers fill, then the stream waits for this client
        before = server.memory_info().rss
        time.sleep(6)
        after = server.memory_info().rss
    assert after - before < 20 * 2**20, f"the server grew by {(after - before) / 2**20:.1f} MiB"
    # and it still answers, the stream's parts gone once the client left
    assert knit.api.get("/healthz").status_code == 200


def test_an_agent_that_disappears_ends_its_part_with_a_message(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker) as knit:
        deployment_id = deploy(knit, TICKER)
        lines = stream(knit, f"/deployments/{deployment_id}/logs", {"follow": "1", "tail": "1"})
        assert next(lines).startswith("[0] tick ")
        agent = knit.agents[0]
        knit.watch.processes.remove(agent)
        agent.kill()  # SIGKILL: it says nothing
        started = time.monotonic()
        rest = list(lines)
        assert time.monotonic() - started < SILENCE + 10
        node = agent.node_id
        assert rest[-1] == f"[0] -- node {node} stopped answering; this instance's logs end here"
