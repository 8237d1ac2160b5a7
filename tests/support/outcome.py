"""A test's outcome, for the fixtures that act on it (recorded by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.knit import KnitCluster

FAILED = pytest.StashKey[bool]()


def one_test_of(cluster: KnitCluster, request: pytest.FixtureRequest) -> Iterator[KnitCluster]:
    """A module's cluster for one test: reset afterwards, its logs printed when the test failed."""
    yield cluster
    if request.node.stash.get(FAILED, False):
        print(cluster.logs())
    cluster.reset()
