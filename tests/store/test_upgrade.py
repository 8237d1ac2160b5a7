"""A database of an older schema is upgraded when opened: schema 1 to 2 (nothing lost, new
columns defaulted, a stable version 1 of every live deployment, all or nothing), schema 2 to
3 (deployments' resources and strategy)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Dialect

from knit.domain.update_policy import UpdatePolicy
from knit.store import deployments, events, instances, nodes, open_store, upgrades, versions
from knit.store.models import SCHEMA_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SCHEMA_1 = Path(__file__).with_name("schema_v1.sql")
SCHEMA_2 = Path(__file__).with_name("schema_v2.sql")
WEB, GONE = "a" * 32, "b" * 32


def schema_1_file(path: Path) -> None:
    """A database as Knit at schema 1 left it: a node, credentials, a live deployment with
    secret variables and two instances, a deleted one, an event."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(SCHEMA_1.read_text())
        db.execute("INSERT INTO schema_version VALUES (1, 1.0)")
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
                        [
                            {
                                "container_port": 80,
                                "host_port": None,
                                "host_ip": None,
                                "protocol": "tcp",
                            }
                        ]
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
            "INSERT INTO events VALUES ('e1', 13.0, 'instance.running', 'n1', ?, 'i0', NULL, "
            "'running')",
            (WEB,),
        )
        db.commit()
    finally:
        db.close()


def columns(path: Path, table: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    finally:
        db.close()


async def test_a_schema_1_database_is_upgraded_without_losing_anything(db_path: Path) -> None:
    schema_1_file(db_path)
    async with open_store(db_path) as store:
        async with store.db.read() as conn:
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
        assert version == SCHEMA_VERSION == 3
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


async def test_a_failing_upgrade_leaves_schema_1_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema_1_file(db_path)
    before = columns(db_path, "deployments")

    def broken(record: object) -> object:
        raise RuntimeError("broken upgrade")

    monkeypatch.setattr(deployments, "spec_json", broken)
    with pytest.raises(RuntimeError, match="broken upgrade"):
        async with open_store(db_path):
            pass
    assert columns(db_path, "deployments") == before
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "deployment_versions" not in tables
    finally:
        db.close()
    monkeypatch.undo()
    async with open_store(db_path) as store:  # and it upgrades once it can
        assert len(await store.read(versions.list_versions, WEB)) == 1


# PGDialect's constructor has no annotations; mypy --strict refuses to call it untyped.
DIALECTS: list[Dialect] = [PGDialect(), SQLiteDialect()]  # type: ignore[no-untyped-call]


@pytest.mark.unit
@pytest.mark.parametrize("dialect", DIALECTS, ids=["pg", "sqlite"])
def test_the_added_columns_have_defaults_or_are_nullable(dialect: Dialect) -> None:
    statements = upgrades.add_column_statements(dialect)
    assert len(statements) == len(upgrades.SCHEMA_2_COLUMNS)
    for statement in statements:
        assert statement.startswith("ALTER TABLE ")
        assert "DEFAULT" in statement or "NOT NULL" not in statement, statement


def schema_2_file(path: Path) -> None:
    """A database as Knit at schema 2 left it: a deployment with two versions, an instance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
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


async def test_a_schema_2_database_gets_resources_and_strategy(db_path: Path) -> None:
    schema_2_file(db_path)
    async with open_store(db_path) as store:
        async with store.db.read() as conn:
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
        assert version == SCHEMA_VERSION == 3
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


@pytest.mark.unit
@pytest.mark.parametrize("dialect", DIALECTS, ids=["pg", "sqlite"])
def test_schema_3_columns_have_defaults_or_are_nullable(dialect: Dialect) -> None:
    statements = upgrades.add_column_statements(dialect, upgrades.SCHEMA_3_COLUMNS)
    assert len(statements) == 2
    assert "DEFAULT 'spread'" in statements[1]
    assert "NOT NULL" not in statements[0]
