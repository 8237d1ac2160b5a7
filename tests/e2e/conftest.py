"""Fixtures of the end-to-end suite: Knit's processes, driven only through the contract.

``cluster`` (per module; a module may override it) is a ``knit server`` with its own
nats-server and one ``knit agent`` labelled ``zone=blue``. ``knit`` (per test) is the same
cluster, reset after the test: what the test created through it is deleted, its containers
removed from Docker, and the processes' log tails printed when the test failed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.knit import KnitCluster, cluster_for
from tests.support.outcome import one_test_of

AGENT_LABELS = {"zone": "blue"}


@pytest.fixture(scope="module")
def e2e_docker(docker_host: str, busybox_image: str) -> str:
    """The DOCKER_HOST, once the Engine answers and the busybox image exists."""
    return docker_host


@pytest.fixture(scope="module")
def cluster(e2e_docker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnitCluster]:
    """A server (embedded nats-server on a free port) and one agent labelled zone=blue."""
    with cluster_for(tmp_path_factory.mktemp("knit"), e2e_docker, agents=[AGENT_LABELS]) as started:
        yield started


@pytest.fixture
def knit(cluster: KnitCluster, request: pytest.FixtureRequest) -> Iterator[KnitCluster]:
    """The module's cluster for one test; reset afterwards, logs printed on failure."""
    yield from one_test_of(cluster, request)
