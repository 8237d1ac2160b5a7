"""Two servers on one PostgreSQL database, a three-member NATS cluster (Knit's operator-mode
auth) and two agents on the Docker Engine: the leader dies in the middle of a deployment,
the other server takes over within the lease and finishes it without a duplicate container
or a node declared unhealthy; the old leader comes back and follows; a leader that stalls
past its lease stops acting when it wakes (decision 0024, docs/high-availability.md).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.knit import SLEEPER, KnitCluster, cluster_for, unique_name
from tests.support.knit_api import KnitApi
from tests.support.knit_docker import container_ids
from tests.support.knit_ha import (
    ha_server_args,
    knit_nats_cluster,
    leader_of,
    start_second_server,
    stop_server,
)
from tests.support.knit_processes import KnitAgent, KnitServer, run_cli
from tests.support.nats import NatsCluster
from tests.support.outcome import FAILED

pytestmark = [pytest.mark.e2e]

LEASE_TTL = 3.0
"""The tests' lease: a dead leader is replaced within this and a few seconds."""
TAKEOVER_BOUND = LEASE_TTL + 7.0
"""Seconds from the leader's death to the other server leading (the lease, a follower's
retry, and the moment a loaded 2-core machine takes to notice)."""
REPLICAS = 10


@pytest.fixture
def nats_cluster(
    nats_server_binary: str, tmp_path: Path, postgres_url: str
) -> Iterator[NatsCluster]:
    """Three routed members on Knit's auth, made from the database (before any server)."""
    with knit_nats_cluster(
        nats_server_binary,
        tmp_path,
        "--database-url",
        postgres_url,
        "--data-dir",
        str(tmp_path / "server"),
    ) as cluster:
        yield cluster


class Pair:
    """The cluster of server ``a`` (with the agents) and a second server ``b`` on the same
    database and NATS, with the same secret key; an API client for each."""

    def __init__(self, knit: KnitCluster, b: KnitServer) -> None:
        self.knit = knit
        self.a = knit.server
        self.b = b
        self.api_a = knit.api
        self.api_b = KnitApi(b.api_url, knit.watch, token_file=self.a.token_file)

    def api(self, server: KnitServer) -> KnitApi:
        return self.api_a if server is self.a else self.api_b

    def status(self, server: KnitServer) -> dict[str, Any]:
        status = self.api(server).ok(self.api(server).get("/status"), 200)
        assert isinstance(status, dict)
        return status

    def leader_id(self, server: KnitServer) -> str | None:
        return leader_of(self.api(server))


@pytest.fixture
def pair(
    e2e_docker: str,
    tmp_path: Path,
    nats_cluster: NatsCluster,
    postgres_url: str,
    request: pytest.FixtureRequest,
) -> Iterator[Pair]:
    with cluster_for(
        tmp_path,
        e2e_docker,
        agents=({}, {}),
        external_nats=nats_cluster.urls,
        server_args=ha_server_args(postgres_url, "a", LEASE_TTL),
    ) as started:
        b = start_second_server(started, nats_cluster.urls, postgres_url, LEASE_TTL)
        pair = Pair(started, b)
        try:
            yield pair
            if request.node.stash.get(FAILED, False):
                print(started.logs() + b.logs(80))
        finally:
            pair.api_b.close()
            stop_server(started, b)


def unhealthy_events(api: KnitApi) -> list[Any]:
    return [e for e in api.listing("/events?limit=2000") if e["kind"] == "node.unhealthy"]


def test_the_leader_dies_mid_deployment_and_the_other_server_finishes_it(
    pair: Pair, busybox_image: str, nats_cluster: NatsCluster
) -> None:
    knit, a, b = pair.knit, pair.a, pair.b
    assert pair.api_a.wait(lambda: pair.leader_id(a) == "a" or None, timeout=15, what="a leads")
    assert pair.api_b.wait(lambda: pair.leader_id(b) == "a" or None, timeout=15, what="b sees a")
    assert pair.status(b)["server"] == {"id": "b", "role": "follower", "terms": 0}
    servers = run_cli("servers", "--api", b.api_url, "-o", "json", token=a.admin_token)
    assert servers.returncode == 0, servers.stderr
    roles = {s["id"]: (s["role"], s["status"]) for s in json.loads(servers.stdout)}
    assert roles == {"a": ("leader", "alive"), "b": ("follower", "alive")}

    # Submitted to the follower: stored there, and the leader hears of it at once.
    created = pair.api_b.ok(
        pair.api_b.post(
            "/deployments",
            {
                "name": unique_name("ha"),
                "image": busybox_image,
                "command": SLEEPER,
                "replicas": REPLICAS,
            },
        ),
        201,
    )
    knit.deployments.append(created["id"])

    # Kill the leader in the middle of the 10-replica deployment.
    pair.api_a.wait(
        lambda: (
            len([i for i in pair.api_a.instances_of(created["id"]) if i["status"] == "running"])
            >= 2
            or None
        ),
        timeout=60,
        what="the deployment under way",
    )
    knit.watch.processes.remove(a)
    a.kill()
    killed_at = time.monotonic()
    pair.api_b.wait(
        lambda: pair.leader_id(b) == "b" or None,
        timeout=TAKEOVER_BOUND + 5,
        what="b leading after a died",
    )
    took_over = time.monotonic() - killed_at
    assert took_over < TAKEOVER_BOUND, f"b took {took_over:.1f} s to lead"

    running = pair.api_b.wait_instances(created["id"], "running", count=REPLICAS, timeout=90)
    assert len({i["id"] for i in running}) == REPLICAS
    labels = {"knit.deployment": created["id"]}
    pair.api_b.wait(
        lambda: (
            len(container_ids(knit.docker_host, labels, include_stopped=True)) == REPLICAS or None
        ),
        timeout=20,
        what=f"exactly {REPLICAS} containers",
        describe=lambda: str(container_ids(knit.docker_host, labels, include_stopped=True)),
    )
    assert len(container_ids(knit.docker_host, labels, include_stopped=False)) == REPLICAS
    assert all(n["status"] == "healthy" for n in pair.api_b.nodes())
    assert not unhealthy_events(pair.api_b)

    # A NATS member under a server dies: nobody notices (clients fail over).
    member = nats_cluster.member_of("knit-server")
    assert member is not None
    member.kill()
    for _ in range(6):
        assert all(n["status"] == "healthy" for n in pair.api_b.nodes())
        time.sleep(0.5)

    # The old leader comes back: it follows, it does not fight.
    a.start_and_wait()
    knit.watch.processes.append(a)
    pair.api_a.wait(lambda: pair.leader_id(a) == "b" or None, timeout=15, what="a follows b")
    time.sleep(2 * LEASE_TTL)
    assert pair.status(a)["server"]["role"] == "follower"
    assert pair.status(b)["server"] == {"id": "b", "role": "leader", "terms": 1}
    # A change through the follower reaches the leader at once.
    scaled = pair.api_a.ok(
        pair.api_a.post(f"/deployments/{created['id']}/scale", {"replicas": REPLICAS + 1}), 200
    )
    assert scaled["replicas"] == REPLICAS + 1
    pair.api_b.wait_instances(created["id"], "running", count=REPLICAS + 1, timeout=30)
    assert not unhealthy_events(pair.api_b)


def test_a_leader_that_stalls_past_its_lease_stops_acting(pair: Pair, busybox_image: str) -> None:
    knit, a, b = pair.knit, pair.a, pair.b
    pair.api_a.wait(lambda: pair.leader_id(a) == "a" or None, timeout=15, what="a leads")
    # An agent joins through the follower: the leader learns its keys at once (a notice)
    # and believes its heartbeats.
    known = {n["id"] for n in pair.api_a.nodes()}
    third = KnitAgent(
        knit.workdir,
        knit.docker_host,
        name="agent-3",
        server_url=b.api_url,
        join_token=knit.join_token(),
    )
    knit.agents.append(third)
    knit.watch.processes.append(third)
    third.start()
    third.node_id = pair.api_a.wait(
        lambda: next(
            (
                n["id"]
                for n in pair.api_a.nodes()
                if n["id"] not in known and n["status"] == "healthy"
            ),
            None,
        ),
        timeout=30,
        what="the node joined through the follower healthy on the leader",
    )
    knit.node_ids.add(third.node_id)
    created = knit.create_deployment(
        {"name": unique_name("stall"), "image": busybox_image, "command": SLEEPER, "replicas": 2}
    )
    pair.api_a.wait_instances(created["id"], "running", count=2, timeout=30)

    assert a.process is not None
    knit.watch.processes.remove(a)
    a.process.send_signal(signal.SIGSTOP)
    try:
        pair.api_b.wait(
            lambda: pair.leader_id(b) == "b" or None,
            timeout=TAKEOVER_BOUND + 5,
            what="b leading while a is stopped",
        )
    finally:
        a.process.send_signal(signal.SIGCONT)
    # Awake, a finds its lease gone at its next renewal and stops its actors.
    pair.api_a.wait(
        lambda: pair.status(a)["server"]["role"] == "follower" or None,
        timeout=LEASE_TTL + 5,
        what="a following again",
    )
    knit.watch.processes.append(a)
    assert "lost the leader lease" in a.log.read_text()
    assert pair.leader_id(a) == "b"
    # The new leader runs the cluster: a scale through the old one converges, exactly.
    pair.api_a.ok(pair.api_a.post(f"/deployments/{created['id']}/scale", {"replicas": 3}), 200)
    pair.api_b.wait_instances(created["id"], "running", count=3, timeout=30)
    labels = {"knit.deployment": created["id"]}
    assert len(container_ids(knit.docker_host, labels, include_stopped=True)) == 3
    assert not unhealthy_events(pair.api_b)
