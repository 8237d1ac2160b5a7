"""Knit on an external three-member NATS cluster running Knit's operator-mode auth
(``knit nats-config`` included by each member, ``knit server --nats U1,U2,U3
--nats-operator-auth``): a member dies under the server and the agent, and nobody notices
but the clients, which fail over; a removed node is refused by the whole cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.knit import SLEEPER, KnitCluster, cluster_for, unique_name
from tests.support.knit_docker import container_ids
from tests.support.knit_ha import knit_nats_cluster
from tests.support.knit_processes import HEARTBEAT_INTERVAL, NODE_TTL
from tests.support.knit_rollouts import scale
from tests.support.nats import NatsCluster
from tests.support.outcome import one_test_of

pytestmark = [pytest.mark.e2e]

SERVER_CLIENT = "knit-server"
"""The name the server's bus connection has (the agents': ``knit-agent-<node id>``)."""


@pytest.fixture
def nats_cluster(nats_server_binary: str, tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed members including what ``knit nats-config`` wrote for the server whose
    data dir is ``tmp_path/server`` (its keys are made there, before it first starts)."""
    with knit_nats_cluster(
        nats_server_binary, tmp_path, "--data-dir", str(tmp_path / "server")
    ) as cluster:
        yield cluster


@pytest.fixture
def knit(
    e2e_docker: str, tmp_path: Path, nats_cluster: NatsCluster, request: pytest.FixtureRequest
) -> Iterator[KnitCluster]:
    """A server on the NATS cluster (``--nats-operator-auth``) and one agent joined to it."""
    with cluster_for(
        tmp_path,
        e2e_docker,
        external_nats=nats_cluster.urls,
        server_args=["--nats-operator-auth"],
    ) as started:
        yield from one_test_of(started, request)


def agent_client(knit: KnitCluster) -> str:
    return f"knit-agent-{knit.agents[0].node_id}"


def test_a_dead_nats_member_under_the_server_and_the_agent_goes_unnoticed(
    knit: KnitCluster, nats_cluster: NatsCluster, busybox_image: str
) -> None:
    [node] = knit.api.nodes()
    created = knit.create_deployment(
        {"name": unique_name("ha-bus"), "image": busybox_image, "command": SLEEPER, "replicas": 2}
    )
    knit.api.wait_instances(created["id"], "running", count=2, timeout=30)
    # The agent was given every member's URL at join.
    joined = (knit.agents[0].data_dir / "identity.json").read_text()
    assert all(member.url in joined for member in nats_cluster.members)

    server_member = nats_cluster.member_of(SERVER_CLIENT)
    agent_member = nats_cluster.member_of(agent_client(knit))
    assert server_member is not None and agent_member is not None
    server_member.kill()
    if agent_member is not server_member:
        agent_member.kill()  # both fail over, each from its own dead member

    # Over a node TTL and more (many heartbeat intervals), the API answers every time and
    # the node never stops being healthy.
    watch_until = time.monotonic() + NODE_TTL + 4 * HEARTBEAT_INTERVAL
    while time.monotonic() < watch_until:
        statuses = {n["id"]: n["status"] for n in knit.api.nodes()}
        assert statuses == {node["id"]: "healthy"}, statuses
        time.sleep(HEARTBEAT_INTERVAL / 2)
    knit.api.wait(
        lambda: all(
            (m := nats_cluster.member_of(name)) is not None and m.running
            for name in (SERVER_CLIENT, agent_client(knit))
        ),
        timeout=10,
        what="the server and the agent connected to a living member",
    )
    events = knit.api.listing("/events?limit=1000")
    assert not [e for e in events if e["kind"] in ("node.unhealthy", "node.refused")], events

    # Work still flows both ways: a scale converges, without a duplicate container.
    scale(knit, created["id"], 3)
    running = knit.api.wait_instances(created["id"], "running", count=3, timeout=30)
    assert len({i["id"] for i in running}) == 3
    labels = {"knit.deployment": created["id"]}
    assert len(container_ids(knit.docker_host, labels, include_stopped=True)) == 3


def test_a_removed_node_is_refused_by_the_nats_cluster(
    knit: KnitCluster, nats_cluster: NatsCluster
) -> None:
    agent = knit.agents[0]
    knit.watch.processes.remove(agent)  # (its exit is what this test waits for)
    knit.api.ok(knit.api.delete(f"/nodes/{agent.node_id}"), 200)
    knit.api.wait(
        lambda: not agent.running,
        timeout=15,
        what="the removed node's agent ending (NATS refused its credentials)",
    )
    assert "NATS refused this node's credentials" in agent.log.read_text()
    assert nats_cluster.member_of(agent_client(knit)) is None
    # The server's own connection, on the same account, is untouched.
    assert nats_cluster.member_of(SERVER_CLIENT) is not None
