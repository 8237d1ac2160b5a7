"""The end-to-end deployment tests of ``test_deploy.py`` again, with the server's state in
PostgreSQL (``--database-url``, a database of the session's throwaway cluster): private
images, templates, networks, ports, updates and deletion work the same on both stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import AGENT_LABELS
from tests.e2e.test_deploy import *  # noqa: F403 (its tests, collected here once more)
from tests.support.knit import KnitCluster, cluster_for
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(
    e2e_docker: str, tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster
) -> Iterator[KnitCluster]:
    """The module's server on a fresh PostgreSQL database, and one agent labelled
    zone=blue."""
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    url = postgres_cluster.create_database(name)
    try:
        with cluster_for(
            tmp_path_factory.mktemp("knit-pg"),
            e2e_docker,
            agents=[AGENT_LABELS],
            server_args=["--database-url", url],
        ) as started:
            yield started
    finally:
        postgres_cluster.drop_database(name)
