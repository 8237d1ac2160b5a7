"""A database of an older schema is upgraded when opened: schema 1 to 2 (nothing lost, new
columns defaulted, a stable version 1 of every live deployment, all or nothing), schema 2 to
3 (deployments' resources and strategy). Schema 1 files are made both ways: by the Knit
before Alembic (``schema_v1.sql``, a ``schema_version`` row) and by revision 0001.

SQLite-only: these are SQLite files of older releases, made and inspected with sqlite3
(the revisions themselves run on PostgreSQL in test_migrations.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from knit.domain.update_policy import UpdatePolicy
from knit.store import (
    credentials,
    deployments,
    events,
    instances,
    mesh,
    migrations,
    networks,
    nodes,
    open_store,
    tasks,
    tokens,
    trust,
    versions,
)
from knit.store.models import SCHEMA_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SCHEMA_1 = Path(__file__).with_name("schema_v1.sql")
SCHEMA_2 = Path(__file__).with_name("schema_v2.sql")
WEB, GONE = "a" * 32, "b" * 32


def schema_1_file(path: Path) -> None:
    """A database as Knit at schema 1 left it (before Alembic), with :func:`schema_1_rows`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(SCHEMA_1.read_text())
        db.execute("INSERT INTO schema_version VALUES (1, 1.0)")
        schema_1_rows(db)
        db.commit()
    finally:
        db.close()


def upgrade_to(path: Path, revision: str) -> None:
    """Make or upgrade the SQLite file ``path`` with Alembic, up to ``revision`` only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            command.upgrade(migrations.alembic_config(conn), revision)
    finally:
        engine.dispose()


def revision_1_file(path: Path) -> None:
    """A database made by revision 0001 (the baseline), with :func:`schema_1_rows`."""
    upgrade_to(path, "0001")
    db = sqlite3.connect(path)
    try:
        schema_1_rows(db)
        db.commit()
    finally:
        db.close()


def schema_1_rows(db: sqlite3.Connection) -> None:
    """A row in every table of schema 1: a node, credentials, a live deployment with
    variables, secret variables and two instances, a deleted one, a task, an event, a
    network, tokens, a node's keys, a revoked node, a mesh member, a cluster secret."""
    db.execute(
        "INSERT INTO nodes VALUES ('n1', 'h1', 'healthy', 5.0, 1, '{\"zone\": \"a\"}', "
        "4.0, 1024, '27.0', '0.1', 'pk', NULL, 1.0)"
    )
    db.execute(
        "INSERT INTO registry_credentials VALUES ('r1', 'reg:5000', 'bob', 'box:x', 1.0, 1.0)"
    )
    for deployment_id, name, deleted in ((WEB, "web", 0), (GONE, "old", 1)):
        db.execute(
            "INSERT INTO deployments VALUES (?, ?, 'reg:5000/web:1', 'r1', '[]', ?, ?, "
            "'[\"web\", \"-v\"]', 3, ?, '{}', 30.0, ?, NULL, 10.0, 20.0, 2, ?)",
            (
                deployment_id,
                name,
                json.dumps([{"content": "x={{ x }}", "destination": "/etc/x"}]),
                json.dumps({"MODE": "prod"}),
                json.dumps(
                    [{"container_port": 80, "host_port": None, "host_ip": None, "protocol": "tcp"}]
                ),
                json.dumps({"mode": "always", "backoff": 1.0, "max_restarts": None}),
                deleted,
            ),
        )
    db.execute(
        "INSERT INTO deployment_secrets VALUES (?, '[\"TOKEN\"]', 'box:ciphertext', 10.0)",
        (WEB,),
    )
    for i in range(2):
        db.execute(
            "INSERT INTO container_instances VALUES (?, ?, 'n1', ?, ?, 'running', NULL, "
            "NULL, 1, 11.0, 12.0)",
            (f"i{i}", f"c{i}", WEB, i),
        )
    db.execute(
        "INSERT INTO tasks VALUES ('t1', 'deploy', 'i0', ?, 'n1', 'succeeded', 1, NULL, 11.0, "
        "12.0)",
        (WEB,),
    )
    db.execute(
        "INSERT INTO events VALUES ('e1', 13.0, 'instance.running', 'n1', ?, 'i0', NULL, "
        "'running')",
        (WEB,),
    )
    db.execute("INSERT INTO networks VALUES ('net1', 'backend', 'bridge', '10.1.0.0/24', 1.0)")
    db.execute("INSERT INTO node_networks VALUES ('n1', 'net1', 'docker-net', 2.0)")
    db.execute(f"INSERT INTO api_tokens VALUES ('a1', 'ci', 'deploy', '{'h' * 64}', 1.0, NULL)")
    db.execute(f"INSERT INTO join_tokens VALUES ('j1', '{'k' * 64}', 3, 1, 99.0, 1.0, 0)")
    db.execute("INSERT INTO node_keys VALUES ('n1', 'pk', 'UNODE1', 'j1', 2.0)")
    db.execute("INSERT INTO revoked_nodes VALUES ('UNODE0', 'n0', 3.0)")
    db.execute(
        f"INSERT INTO mesh_members VALUES ('n1', '10.99.0.2', '{'w' * 44}', 'h1:51820', 2.0, NULL)"
    )
    db.execute("INSERT INTO cluster_secrets VALUES ('server.seed', 'box:seed', 1.0)")


SCHEMA_1_BUILDERS: dict[str, Callable[[Path], None]] = {
    "before-alembic": schema_1_file,
    "revision-0001": revision_1_file,
}


def columns(path: Path, table: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    finally:
        db.close()


@pytest.mark.parametrize("made_by", SCHEMA_1_BUILDERS)
async def test_a_schema_1_database_is_upgraded_without_losing_anything(
    db_path: Path, made_by: str
) -> None:
    SCHEMA_1_BUILDERS[made_by](db_path)
    async with open_store(db_path) as store:
        async with store.db.read() as conn:
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
            revision = (await conn.execute(text("SELECT * FROM alembic_version"))).scalar()
        assert version == SCHEMA_VERSION == 4
        assert revision == migrations.head() == "0004"
        web = await store.read(deployments.get_deployment, WEB)
        assert (web.name, web.image, web.registry_credentials_id) == ("web", "reg:5000/web:1", "r1")
        assert web.templates == ({"content": "x={{ x }}", "destination": "/etc/x"},)
        assert (web.env, web.command, web.replicas) == ({"MODE": "prod"}, ("web", "-v"), 3)
        assert (web.lost_after, web.generation, web.secret_env) == (30.0, 2, ("TOKEN",))
        assert (web.created_at, web.updated_at, web.deleted) == (10.0, 20.0, False)
        assert web.version == 1
        assert web.update == UpdatePolicy().model_dump(mode="json")
        assert web.health_check is None and web.rollout is None
        assert web.resources is None and web.strategy == "spread"
        assert await store.read(deployments.secret_env_of, WEB) == "box:ciphertext"
        assert (await store.read(deployments.get_deployment, GONE)).deleted

        rows = await store.read(instances.list_instances, deployment_id=WEB)
        assert [(i.id, i.container_id, i.status, i.node_id) for i in rows] == [
            ("i0", "c0", "running", "n1"),
            ("i1", "c1", "running", "n1"),
        ]
        assert {(i.version, i.health, i.restarts) for i in rows} == {(1, "none", 0)}
        assert (await store.read(nodes.get_node, "n1")).labels == {"zone": "a"}
        assert [e.id for e in await store.read(events.list_events)] == ["e1"]
        assert (await store.read(credentials.get_credentials, "r1")).username == "bob"
        task = await store.read(tasks.get_task, "t1")
        assert (task.state, task.instance_id, task.deployment_id) == ("succeeded", "i0", WEB)
        (network,) = await store.read(networks.list_networks)
        assert (network.id, network.name, network.subnet) == ("net1", "backend", "10.1.0.0/24")
        (attached,) = await store.read(networks.list_node_networks, node_id="n1")
        assert attached.docker_id == "docker-net"
        (api_token,) = await store.read(tokens.list_api_tokens)
        assert (api_token.id, api_token.name, api_token.role) == ("a1", "ci", "deploy")
        (join_token,) = await store.read(tokens.list_join_tokens)
        assert (join_token.id, join_token.uses, join_token.used) == ("j1", 3, 1)
        (key,) = await store.read(trust.all_node_keys)
        assert (key.node_id, key.nats_key, key.join_token_id) == ("n1", "UNODE1", "j1")
        assert await store.read(trust.revocations) == {"UNODE0": 3.0}
        assert await store.read(trust.find_secret, "server.seed") == "box:seed"
        (member,) = await store.read(mesh.all_members)
        assert (member.node_id, member.address, member.endpoint) == ("n1", "10.99.0.2", "h1:51820")

        (first,) = await store.read(versions.list_versions, WEB)
        assert (first.version, first.stable, first.created_at) == (1, True, 20.0)
        assert first.spec == deployments.spec_json(web)
        assert first.secrets_encrypted == "box:ciphertext"
        (gone,) = await store.read(versions.list_versions, GONE)
        assert not gone.stable and gone.secrets_encrypted is None

        # Schema 2 works on it: the same spec again changes nothing; a scale, a rollout.
        same = await store.write(
            versions.change(
                WEB, deployments.spec_json(web), "box:ciphertext", same_secrets=lambda a, b: a == b
            )
        )
        assert same == (web, False)
        await store.write(versions.scale(WEB, 4))
        await store.write(versions.set_rollout(WEB, {"version": 1, "state": "complete"}))
        assert (await store.read(deployments.get_deployment, WEB)).replicas == 4
    assert {"version", "update", "health_check", "rollout"} <= columns(db_path, "deployments")
    assert {"version", "health", "restarts"} <= columns(db_path, "container_instances")
    # Opened again: nothing to upgrade, nothing doubled.
    async with open_store(db_path) as store:
        assert len(await store.read(versions.list_versions, WEB)) == 1


async def test_a_failing_upgrade_leaves_schema_1_as_it_was(db_path: Path) -> None:
    schema_1_file(db_path)
    db = sqlite3.connect(db_path)
    try:  # ports that are not objects: revision 0002 cannot make the deployment's version 1
        db.execute("UPDATE deployments SET ports = '[1]' WHERE id = ?", (WEB,))
        db.commit()
    finally:
        db.close()
    before = columns(db_path, "deployments")
    with pytest.raises(TypeError):
        async with open_store(db_path):
            pass
    assert columns(db_path, "deployments") == before
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert not {"deployment_versions", "alembic_version"} & tables
        db.execute("UPDATE deployments SET ports = '[]' WHERE id = ?", (WEB,))
        db.commit()
    finally:
        db.close()
    async with open_store(db_path) as store:  # and it upgrades once it can
        assert len(await store.read(versions.list_versions, WEB)) == 1


def schema_2_file(path: Path, *, alembic: bool = False) -> None:
    """A database as Knit at schema 2 left it: a deployment with two versions, an instance.
    Made as Knit before Alembic did, or (``alembic``) by revisions 0001 and 0002."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if alembic:
        upgrade_to(path, "0002")
    db = sqlite3.connect(path)
    try:
        if not alembic:
            db.executescript(SCHEMA_2.read_text())
            db.execute("INSERT INTO schema_version VALUES (2, 1.0)")
        db.execute(
            "INSERT INTO nodes VALUES ('n1', 'h1', 'healthy', 5.0, 1, '{}', 4.0, 1024, '27.0', "
            "'0.1', 'pk', NULL, 1.0)"
        )
        db.execute(
            "INSERT INTO deployments VALUES (?, 'web', 'web:2', NULL, '[]', '[]', '{}', NULL, 2, "
            "'[]', '{}', 0.0, '{}', NULL, 10.0, 20.0, 2, 0, 2, '{}', NULL, NULL)",
            (WEB,),
        )
        # A version's spec at schema 2 (deployments.spec_json then).
        old_spec: dict[str, object] = {
            "name": "web",
            "image": "web:1",
            "registry_credentials_id": None,
            "network_attachments": [],
            "templates": [],
            "env": {},
            "secret_env": [],
            "command": None,
            "replicas": 2,
            "ports": [],
            "node_selector": {},
            "lost_after": 0.0,
            "restart_policy": {},
            "update": dict(UpdatePolicy().model_dump(mode="json")),
            "health_check": None,
        }
        for version, image in ((1, "web:1"), (2, "web:2")):
            spec = json.dumps({**old_spec, "image": image})
            db.execute(
                "INSERT INTO deployment_versions VALUES (?, ?, ?, 10.0, 1, NULL)",
                (WEB, version, spec),
            )
        db.execute(
            "INSERT INTO container_instances (id, container_id, node_id, deployment_id, "
            '"index", status, error, exit_code, desired, created_at, updated_at, version, '
            "health, restarts) VALUES ('i0', 'c0', 'n1', ?, 0, 'running', NULL, NULL, 1, 11.0, "
            "12.0, 2, 'none', 0)",
            (WEB,),
        )
        db.commit()
    finally:
        db.close()


@pytest.mark.parametrize("alembic", [False, True], ids=["before-alembic", "revision-0002"])
async def test_a_schema_2_database_gets_resources_and_strategy(
    db_path: Path, alembic: bool
) -> None:
    schema_2_file(db_path, alembic=alembic)
    async with open_store(db_path) as store:
        async with store.db.read() as conn:
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
            revision = (await conn.execute(text("SELECT * FROM alembic_version"))).scalar()
        assert version == SCHEMA_VERSION == 4
        assert revision == "0004"
        web = await store.read(deployments.get_deployment, WEB)
        assert (web.image, web.version, web.replicas) == ("web:2", 2, 2)
        assert web.resources is None and web.strategy == "spread"
        assert (web.reserved_cpu, web.reserved_memory) == (0.0, 0)
        assert [i.id for i in await store.read(instances.list_instances)] == ["i0"]
        # A new version with resources; and a rollback to a version without the fields.
        spec = {
            **deployments.spec_json(web),
            "resources": {"cpu": 0.5, "memory": 256 * 2**20},
            "strategy": "binpack",
        }
        same = lambda a, b: a == b  # noqa: E731
        changed, written = await store.write(versions.change(WEB, spec, None, same_secrets=same))
        assert written and changed.version == 3
        assert (changed.reserved_cpu, changed.reserved_memory) == (0.5, 256 * 2**20)
        assert changed.strategy == "binpack"
        stored = await store.read(versions.list_versions, WEB)
        newest = max(stored, key=lambda v: v.version)
        assert newest.spec["resources"] == {"cpu": 0.5, "memory": 256 * 2**20}
        back, _ = await store.write(versions.rollback(WEB, 1, same_secrets=same))
        assert back.image == "web:1" and back.resources is None and back.strategy == "spread"
    assert {"resources", "strategy"} <= columns(db_path, "deployments")
