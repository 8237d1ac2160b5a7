"""Fixtures of the mesh's tests: two network namespaces joined by a veth pair."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mesh.namespaces import Pair, namespace_pair


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Namespaces A and B joined by a veth (see ``tests.mesh.namespaces``)."""
    with namespace_pair() as made:
        yield made
