"""``knit server --database-url postgresql://...``: a real server (with its embedded
nats-server) and a real agent on the Docker Engine, the state in PostgreSQL (a database of
the session's throwaway cluster, simulations/postgres.py), kept across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import make_url

from tests.support.knit import SLEEPER, cluster_for, restart_server_keeping, unique_name
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"


def test_a_server_on_postgresql_runs_a_deployment_and_keeps_it_across_a_restart(
    e2e_docker: str, tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    database = make_url(postgres_url).database
    assert database is not None
    server_args = ["--database-url", postgres_url]
    with cluster_for(tmp_path, e2e_docker, agents=[{}], server_args=server_args) as knit:
        [agent] = knit.agents
        created = knit.create_deployment(
            {"name": unique_name("pg"), "image": BUSYBOX, "replicas": 2, "command": SLEEPER}
        )
        before = knit.api.wait_instances(created["id"], "running", count=2, timeout=60)
        # The state is in PostgreSQL, not in a SQLite file in the data dir.
        assert not (knit.server.data_dir / "knit.db").exists()
        stored = postgres_cluster.sql(
            f"SELECT count(*) FROM container_instances WHERE deployment_id = '{created['id']}'",
            database=database,
        )
        assert stored.strip() == "2"

        restart_server_keeping(knit, created["id"], agent.node_id, before)

        fresh = knit.create_deployment(
            {"name": unique_name("pg-after"), "image": BUSYBOX, "command": SLEEPER}
        )
        knit.api.wait_instances(fresh["id"], "running", count=1, timeout=60)
