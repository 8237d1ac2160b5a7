"""Fixtures of the attacks on Knit: real processes, as its users run them.

``cluster`` (per module) is a ``knit server`` with its own nats-server and one ``knit agent``
(no ``--allow-host-network``); ``knit`` (per test) is the same cluster, reset after the test
and its processes' log tails printed when the test failed. A missing Docker Engine or
nats-server fails the run under ``CI=true`` (``tests.support.require``).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.support.knit import KnitCluster, cluster_for

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="module")
def attack_docker(docker_host: str, busybox_image: str) -> str:
    """The DOCKER_HOST, once the Engine answers and the busybox image exists."""
    return docker_host


@pytest.fixture(scope="module")
def cluster(
    attack_docker: str, nats_server_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KnitCluster]:
    """A server (embedded nats-server on a free port) and one agent."""
    with cluster_for(tmp_path_factory.mktemp("knit"), attack_docker, agents=[{}]) as started:
        yield started


@pytest.fixture
def knit(cluster: KnitCluster, request: pytest.FixtureRequest) -> Iterator[KnitCluster]:
    """The module's cluster for one test; reset afterwards, logs printed on failure."""
    yield cluster
    if request.node.stash.get(FAILED, False):
        print(cluster.logs())
    cluster.reset()
