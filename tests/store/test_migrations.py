"""Schema migrations with Alembic: the revisions make the models' schema, databases from
before Alembic are stamped and upgraded, a newer database is refused untouched, and
``knit db current`` / ``knit db upgrade``.

Most of these work on SQLite files (made, altered and compared byte for byte with sqlite3:
SQLite-only by nature); the revisions, the shortcut for an empty database and the
downgrades are checked on PostgreSQL too, at the end."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from knit.cli import main
from knit.errors import StoreError
from knit.store import database_url, migrations, open_database, open_store, versions
from knit.store.models import SCHEMA_VERSION, Base
from tests.store.test_upgrade import WEB, schema_1_file, upgrade_to

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def schema_differences(path: Path) -> list[object]:
    """What Alembic's autogenerate would change to make the file's schema the models'.

    Types and server defaults are compared too; SQLite reflects both faithfully enough here
    that nothing needs ignoring (no ``Double``/``REAL`` or quoting noise shows up: a
    difference reported is a real one).
    """
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def execute(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    try:
        for statement in statements:
            db.execute(statement)
        db.commit()
    finally:
        db.close()


def tables(path: Path) -> set[str]:
    return {
        str(name) for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")
    }


@pytest.mark.unit
def test_revisions_are_named_after_the_schema_versions() -> None:
    assert migrations.head() == "0004"
    assert migrations.revisions() == {"0001", "0002", "0003", "0004"}
    assert migrations.LEGACY_REVISIONS == {1: "0001", 2: "0002", 3: "0003"}
    # A revision that changes the schema raises the integer Knit before Alembic reads.
    assert int(migrations.head()) == SCHEMA_VERSION


def test_the_revisions_make_the_schema_of_the_models(tmp_path: Path) -> None:
    path = tmp_path / "revisions.db"
    upgrade_to(path, "head")
    assert schema_differences(path) == []
    assert rows(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_a_new_database_is_made_from_the_models_with_the_same_schema(
    tmp_path: Path,
) -> None:
    # open_database makes an empty database with create_all and stamps it: the shortcut is
    # only right while the revisions make the same schema (the test above).
    path = tmp_path / "new.db"
    async with open_database(path) as db:
        assert db.schema_upgrade is not None
        assert db.schema_upgrade.before.revision is None
        assert db.schema_upgrade.after == migrations.head()
    assert schema_differences(path) == []
    assert rows(path, "SELECT version_num FROM alembic_version") == [("0004",)]
    assert rows(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_a_database_from_before_alembic_upgraded_has_the_schema_of_the_models(
    db_path: Path,
) -> None:
    schema_1_file(db_path)
    async with open_database(db_path):
        pass
    assert schema_differences(db_path) == []


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_a_database_from_before_alembic_is_stamped_and_upgraded(
    db_path: Path, version: int
) -> None:
    # What Knit before Alembic left: the schema of that version, schema_version, no
    # alembic_version.
    upgrade_to(db_path, migrations.LEGACY_REVISIONS[version])
    execute(db_path, "DROP TABLE alembic_version")
    assert rows(db_path, "SELECT version FROM schema_version") == [(version,)]
    async with open_database(db_path) as db:
        done = db.schema_upgrade
        assert done is not None and done.changed
        assert done.before.legacy_version == version
        assert done.before.revision == migrations.LEGACY_REVISIONS[version]
    assert rows(db_path, "SELECT version_num FROM alembic_version") == [("0004",)]
    assert rows(db_path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert schema_differences(db_path) == []
    async with open_database(db_path) as db:  # and again: nothing to do
        assert db.schema_upgrade is not None and not db.schema_upgrade.changed


async def test_an_early_schema_1_file_gets_the_tables_it_lacked(db_path: Path) -> None:
    # Schema-1 releases added tables without changing the version (create_all made them at
    # each start): a file from before them lacks them, and the baseline adds them.
    schema_1_file(db_path)
    later = ("api_tokens", "join_tokens", "node_keys", "revoked_nodes", "mesh_members")
    execute(db_path, *(f"DROP TABLE {name}" for name in later))
    async with open_store(db_path) as store:
        assert len(await store.read(versions.list_versions, WEB)) == 1
    assert set(later) <= tables(db_path)
    assert schema_differences(db_path) == []


async def make_newer_file(path: Path) -> bytes:
    """A database written by a Knit newer than this one (an unknown revision); its bytes.

    Made by Knit, so in WAL mode, as a newer Knit would leave it (opening a file in
    rollback-journal mode switches it to WAL, a change to its header).
    """
    async with open_database(path):
        pass
    execute(path, "UPDATE alembic_version SET version_num = '0042'")
    return path.read_bytes()


def newer_file(path: Path) -> bytes:
    """:func:`make_newer_file` outside an event loop (for the CLI's own)."""
    return anyio.run(make_newer_file, path, backend="asyncio")


async def test_a_newer_revision_is_refused_and_the_file_left_as_it_was(db_path: Path) -> None:
    before = await make_newer_file(db_path)
    with pytest.raises(StoreError) as refused:
        async with open_database(db_path):
            pass
    assert str(refused.value) == (
        "the database's schema (revision 0042) is newer than this Knit knows (head 0004): "
        "upgrade Knit"
    )
    assert db_path.read_bytes() == before
    assert rows(db_path, "SELECT version_num FROM alembic_version") == [("0042",)]


def test_the_downgrades_run_back_to_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "down.db"
    upgrade_to(path, "head")
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            command.downgrade(migrations.alembic_config(conn), "0001")
        assert rows(path, "SELECT version FROM schema_version") == [(1,)]
        assert "deployment_versions" not in tables(path)
        with engine.begin() as conn:
            command.downgrade(migrations.alembic_config(conn), "base")
    finally:
        engine.dispose()
    assert tables(path) == {"alembic_version"}


# --- knit db --------------------------------------------------------------------------------


def test_knit_db_current_and_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "server"
    db_path = data_dir / "knit.db"
    assert main(["db", "current", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.startswith("none: no database at ")
    assert not db_path.exists()  # current reads only

    schema_1_file(db_path)
    assert main(["db", "current", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0001: schema 1 from before Alembic") and "head 0004" in out

    assert main(["db", "upgrade", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out == "0001 -> 0004 (head): upgraded (schema 1, from before Alembic)\n"
    assert main(["db", "current", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out == "0004 (head)\n"
    assert main(["db", "upgrade", "--database-url", f"sqlite:///{db_path}"]) == 0
    assert capsys.readouterr().out == "0004 (head): nothing to upgrade\n"


def test_knit_db_on_a_newer_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "server" / "knit.db"
    before = newer_file(db_path)
    url = f"sqlite+aiosqlite:///{db_path}"
    assert main(["db", "current", "--database-url", url]) == 0
    assert "0042" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", url]) == 1
    assert "is newer than this Knit knows (head 0004): upgrade Knit" in capsys.readouterr().err
    assert db_path.read_bytes() == before


def test_knit_server_refuses_a_newer_database_and_exits(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    before = newer_file(data_dir / "knit.db")
    server = subprocess.run(
        [
            sys.executable,
            "-m",
            "knit.cli",
            "server",
            "--data-dir",
            str(data_dir),
            "--http",
            "127.0.0.1:0",
            "--nats-listen",
            "127.0.0.1:0",
            "--insecure-bus",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert server.returncode != 0
    assert "knit: the database's schema (revision 0042) is newer than this Knit" in (server.stderr)
    assert (data_dir / "knit.db").read_bytes() == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["knit.db"]  # no key, no token


async def test_a_newer_schema_version_from_before_alembic_is_refused(db_path: Path) -> None:
    schema_1_file(db_path)
    execute(db_path, "UPDATE schema_version SET version = 5")
    before = db_path.read_bytes()
    with pytest.raises(StoreError, match=r"\(schema version 5\) is newer .*: upgrade Knit"):
        async with open_database(db_path):
            pass
    assert rows(db_path, "SELECT version FROM schema_version") == [(5,)]
    assert "alembic_version" not in tables(db_path)
    assert len(db_path.read_bytes()) == len(before)  # (WAL mode set: a header byte differs)


def test_alembic_runs_on_a_url_without_knit_opening_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As ``alembic -x url=... upgrade`` by hand does: env.py opens the URL itself.
    path = tmp_path / "by-hand.db"
    config = migrations.alembic_config()
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.upgrade(config, "0002")
    assert rows(path, "SELECT version_num FROM alembic_version") == [("0002",)]
    assert main(["db", "current", "--database-url", str(path)]) == 0
    assert capsys.readouterr().out == (
        "0002: behind the head 0004 (`knit db upgrade` upgrades it)\n"
    )
    assert main(["db", "upgrade", "--database-url", str(path)]) == 0
    assert capsys.readouterr().out == "0002 -> 0004 (head): upgraded\n"
    assert schema_differences(path) == []


# --- PostgreSQL -----------------------------------------------------------------------------


async def postgresql_schema_differences(url: str) -> list[object]:
    """:func:`schema_differences` of a PostgreSQL database (asyncpg, through ``run_sync``)."""

    def compare(conn: Connection) -> list[object]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))

    engine = create_async_engine(database_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def alembic_on_postgresql(url: str, step: Callable[[Config], None]) -> None:
    """``step(config)`` in one transaction on the PostgreSQL database ``url``."""
    engine = create_async_engine(database_url(url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: step(migrations.alembic_config(sync)))
    finally:
        await engine.dispose()


async def postgresql_tables(url: str) -> set[str]:
    """The tables of a PostgreSQL database (read without opening the store, which would
    upgrade it)."""
    engine = create_async_engine(database_url(url))
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            return {str(name) for (name,) in result}
    finally:
        await engine.dispose()


async def test_the_revisions_make_the_schema_of_the_models_on_postgresql(
    empty_postgres_url: str,
) -> None:
    await alembic_on_postgresql(empty_postgres_url, lambda c: command.upgrade(c, "head"))
    assert await postgresql_schema_differences(empty_postgres_url) == []


async def test_a_new_postgresql_database_is_made_from_the_models_with_the_same_schema(
    empty_postgres_url: str,
) -> None:
    async with open_database(empty_postgres_url) as db:
        assert db.schema_upgrade is not None
        assert db.schema_upgrade.before.revision is None
        assert db.schema_upgrade.after == migrations.head()
    assert await postgresql_schema_differences(empty_postgres_url) == []


async def test_the_downgrades_run_back_to_an_empty_postgresql_database(
    empty_postgres_url: str,
) -> None:
    url = empty_postgres_url
    await alembic_on_postgresql(url, lambda c: command.upgrade(c, "head"))
    await alembic_on_postgresql(url, lambda c: command.downgrade(c, "0001"))
    assert "deployment_versions" not in await postgresql_tables(url)
    await alembic_on_postgresql(url, lambda c: command.downgrade(c, "base"))
    assert await postgresql_tables(url) == {"alembic_version"}
