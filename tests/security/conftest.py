"""Fixtures of the attacks on Knit: real processes, as its users run them.

``cluster`` (per module) is a ``knit server`` and one ``knit agent`` (no
``--allow-host-network``) on an *open* nats-server of the test's (``knit server --nats``:
nodes still join and prove every message, but anyone may read and publish on this bus), so
that the attacks on the agents' own defences can watch the wire and deliver their forged
tasks (``tests.security.agent_support.publish`` proves them as a compromised server would).
The bus's own defences are attacked on the embedded, authenticated nats-server by
``test_bus_*``. ``knit`` (per test) is the same cluster, reset after the test and its
processes' log tails printed when the test failed. A missing Docker Engine or nats-server
fails the run under ``CI=true`` (``tests.support.require``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.knit import KnitCluster, cluster_for
from tests.support.nats import NatsServer
from tests.support.outcome import one_test_of


@pytest.fixture(scope="module")
def attack_docker(docker_host: str, busybox_image: str) -> str:
    """The DOCKER_HOST, once the Engine answers and the busybox image exists."""
    return docker_host


@pytest.fixture(scope="module")
def open_bus(
    nats_server_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsServer]:
    """A nats-server without credentials, for the module."""
    server = NatsServer(nats_server_binary, tmp_path_factory.mktemp("open-bus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(
    attack_docker: str, open_bus: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnitCluster]:
    """A server and one agent on the open nats-server."""
    with cluster_for(
        tmp_path_factory.mktemp("knit"), attack_docker, agents=[{}], external_nats=open_bus.url
    ) as started:
        yield started


@pytest.fixture
def knit(cluster: KnitCluster, request: pytest.FixtureRequest) -> Iterator[KnitCluster]:
    """The module's cluster for one test; reset afterwards, logs printed on failure."""
    yield from one_test_of(cluster, request)
