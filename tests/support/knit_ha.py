"""Several Knit servers on one PostgreSQL database, on a NATS cluster running Knit's
operator-mode auth: what the high-availability tests and ``benchmarks/bench_failover.py``
start (docs/high-availability.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.support.knit import KnitCluster
from tests.support.knit_api import KnitApi
from tests.support.knit_processes import KnitServer, run_cli
from tests.support.nats import NatsCluster


@contextlib.contextmanager
def knit_nats_cluster(binary: str, workdir: Path, *knit_args: str) -> Iterator[NatsCluster]:
    """Three routed nats-servers including what ``knit nats-config KNIT_ARGS`` wrote (the
    cluster's keys are made by it where ``KNIT_ARGS`` say, before any server starts)."""
    auth = workdir / "knit-auth.conf"
    made = run_cli("nats-config", *knit_args, "--out", str(auth))
    assert made.returncode == 0, made.stderr
    cluster = NatsCluster(binary, workdir / "nats", auth.read_text())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def ha_server_args(database_url: str, server_id: str, lease_ttl: float) -> list[str]:
    """``knit server`` arguments of one of several servers (after ``--nats URLS``)."""
    return [
        "--database-url",
        database_url,
        "--nats-operator-auth",
        "--server-id",
        server_id,
        "--lease-ttl",
        f"{lease_ttl:g}",
    ]


def start_second_server(
    knit: KnitCluster, nats_urls: str, database_url: str, lease_ttl: float, server_id: str = "b"
) -> KnitServer:
    """Start another server beside ``knit``'s, on its database and NATS, with its secret key
    (every server of a database has the same); watched by ``knit`` until :func:`stop_server`."""
    server = KnitServer(
        knit.workdir,
        knit.docker_host,
        nats_url=nats_urls,
        name=f"server-{server_id}",
        extra_args=ha_server_args(database_url, server_id, lease_ttl),
    )
    server.data_dir.mkdir(mode=0o700, parents=True)
    shutil.copy2(knit.server.data_dir / "secret.key", server.data_dir / "secret.key")
    os.chmod(server.data_dir / "secret.key", 0o600)
    knit.watch.processes.append(server)
    server.start_and_wait()
    return server


def stop_server(knit: KnitCluster, server: KnitServer) -> None:
    """Stop a server of :func:`start_second_server` (no longer watched)."""
    if server in knit.watch.processes:
        knit.watch.processes.remove(server)
    server.stop()


def leader_of(api: KnitApi) -> str | None:
    """The id of the server that leads, as ``GET /status`` of ``api`` says (None: nobody,
    or the server does not answer)."""
    try:
        status = api.ok(api.get("/status"), 200)
    except Exception:  # (busy or restarting: not yet)
        return None
    leader = status.get("leader") if isinstance(status, dict) else None
    return None if leader is None else str(leader["id"])
