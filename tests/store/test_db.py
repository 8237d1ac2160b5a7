"""The database layer: SQLite settings, schema, read-only reads, interrupt on cancel."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import anyio
import pytest
from sqlalchemy import make_url, text, update

from knit.errors import StoreError
from knit.store import database_url, nodes, open_database
from knit.store.models import SCHEMA_VERSION, SchemaVersion
from knit.store.records import HeartbeatUpsert

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Counts forever: only an interrupt ends it.
ENDLESS_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
)


def test_database_url_turns_a_path_into_an_aiosqlite_url(tmp_path: Path) -> None:
    url = database_url(tmp_path / "knit.db")
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str((tmp_path / "knit.db").resolve())


def test_database_url_picks_async_drivers() -> None:
    assert database_url("sqlite:////tmp/x.db").drivername == "sqlite+aiosqlite"
    assert database_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert database_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"


def test_database_url_refuses_in_memory_sqlite() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        database_url("sqlite+aiosqlite://")
    with pytest.raises(ValueError, match="in-memory"):
        database_url("sqlite:///:memory:")


async def test_open_database_creates_the_file_in_wal_mode_with_the_pragmas(db_path: Path) -> None:
    # SQLite-only: WAL and the pragmas are SQLite's.
    async with open_database(db_path) as db:
        assert db.dialect_name == "sqlite"
        async with db.read() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 1  # NORMAL
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
            assert version == SCHEMA_VERSION
    assert db_path.exists()


async def test_read_connections_cannot_write(db_url: str) -> None:
    async with open_database(db_url) as db:
        with pytest.raises(StoreError, match=r"(?i)read.?only"):
            async with db.read() as conn:
                await conn.execute(text("DELETE FROM nodes"))


async def test_a_newer_schema_is_refused(db_url: str) -> None:
    async with open_database(db_url) as db, db.transaction() as conn:
        await conn.execute(update(SchemaVersion).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="upgrade Knit"):
        async with open_database(db_url):
            pass


async def test_reopening_is_idempotent(db_url: str) -> None:
    for _ in range(3):
        async with open_database(db_url) as db, db.read() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM schema_version"))).scalar()
            assert rows == 1


async def test_a_cancelled_query_is_interrupted_and_the_store_stays_usable(db_path: Path) -> None:
    # SQLite-only: aiosqlite's thread and sqlite3's interrupt (PostgreSQL: the test below).
    async with open_database(db_path) as db:
        worker: threading.Thread | None = None
        with anyio.move_on_after(0.2) as scope:
            async with db.read() as conn:
                raw = await conn.get_raw_connection()
                # aiosqlite runs each connection's queries in its own thread.
                worker = raw.driver_connection._thread  # type: ignore[union-attr]
                await conn.execute(text(ENDLESS_QUERY))
        assert scope.cancelled_caught
        assert worker is not None
        # Without the interrupt the thread would count forever; with it, it ends promptly.
        await anyio.to_thread.run_sync(worker.join, 10.0)
        assert not worker.is_alive()
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        async with db.transaction() as conn:
            beat = HeartbeatUpsert(node_id="n1", hostname="h1", at=1.0)
            await nodes.record_heartbeat(beat)(conn)
        async with db.read() as conn:
            assert (await nodes.get_node(conn, "n1")).hostname == "h1"


async def test_a_cancelled_write_transaction_is_rolled_back_and_releases_the_lock(
    db_path: Path,
) -> None:
    # SQLite-only: the interrupt, the zombie connection and the busy timeout are SQLite's.
    # With the garbage collector off, nothing but the store's own rollback can end the
    # interrupted transaction (the cursor holding its statement stays alive).
    gc.disable()
    try:
        async with open_database(db_path, busy_timeout=1.0) as db:
            with anyio.move_on_after(0.2) as scope:
                async with db.transaction() as conn:
                    await nodes.record_heartbeat(HeartbeatUpsert("n1", "h1", at=1.0))(conn)
                    await conn.execute(text(ENDLESS_QUERY))
            assert scope.cancelled_caught
            async with db.read() as conn:
                assert await nodes.find_node(conn, "n1") is None
            # The write lock was released: a new write transaction gets it.
            with anyio.fail_after(10):
                async with db.transaction() as conn:
                    await nodes.record_heartbeat(HeartbeatUpsert("n2", "h2", at=1.0))(conn)
            async with db.read() as conn:
                assert (await nodes.get_node(conn, "n2")).hostname == "h2"
    finally:
        gc.enable()


async def test_a_cancelled_postgresql_query_stops_and_the_store_stays_usable(
    postgres_url: str,
) -> None:
    async with open_database(postgres_url) as db:
        with anyio.move_on_after(0.3) as scope:
            async with db.read() as conn:
                await conn.execute(text("SELECT pg_sleep(60)"))
        assert scope.cancelled_caught
        with anyio.fail_after(10):
            while True:
                async with db.read() as conn:
                    sleeping = await conn.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'"
                        )
                    )
                    if sleeping.scalar() == 0:
                        break
                await anyio.sleep(0.05)
        async with db.transaction() as conn:
            await nodes.record_heartbeat(HeartbeatUpsert("n1", "h1", at=1.0))(conn)
        async with db.read() as conn:
            assert (await nodes.get_node(conn, "n1")).hostname == "h1"


async def test_postgresql_write_transactions_run_one_at_a_time(postgres_url: str) -> None:
    # What BEGIN IMMEDIATE gives on SQLite: a second write transaction waits for the first.
    async with open_database(postgres_url) as db:
        order: list[str] = []
        first_in = anyio.Event()

        async def first() -> None:
            async with db.transaction() as conn:
                await conn.execute(text("SELECT 1"))
                first_in.set()
                await anyio.sleep(0.3)
                order.append("first done")

        async def second() -> None:
            await first_in.wait()
            async with db.transaction() as conn:
                await conn.execute(text("SELECT 1"))
                order.append("second in")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                tg.start_soon(second)
        assert order == ["first done", "second in"]


async def test_a_postgresql_read_sees_one_snapshot(postgres_url: str) -> None:
    async with open_database(postgres_url) as db:
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM nodes"))).scalar() == 0
            async with db.transaction() as write:
                await nodes.record_heartbeat(HeartbeatUpsert("n1", "h1", at=1.0))(write)
            assert (await conn.execute(text("SELECT count(*) FROM nodes"))).scalar() == 0
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM nodes"))).scalar() == 1


async def test_an_unreachable_postgresql_is_one_line_store_error() -> None:
    from tests.support.process import free_port

    url = f"postgresql://knit:x@127.0.0.1:{free_port('127.0.0.1')}/knit"
    with pytest.raises(StoreError, match="cannot open the database") as caught:
        async with open_database(url):
            pass
    message = str(caught.value)
    assert "\n" not in message and "***" in message and ":x@" not in message


async def test_a_wrong_postgresql_password_is_one_line_store_error(postgres_url: str) -> None:
    url = make_url(postgres_url).set(password="wrong").render_as_string(hide_password=False)
    with pytest.raises(StoreError, match="password authentication failed") as caught:
        async with open_database(url):
            pass
    assert "\n" not in str(caught.value) and "wrong" not in str(caught.value)


async def test_a_missing_driver_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="not installed: pip install psycopg"):
        async with open_database("postgresql+psycopg://knit:x@127.0.0.1/knit"):
            pass


async def test_urls_knit_cannot_use_are_one_line_store_errors() -> None:
    for url, message in (
        ("mysql://knit:x@127.0.0.1/knit", "SQLite or PostgreSQL, not mysql"),
        ("nonsense://", "not nonsense"),
        ("not a url://", "not a database URL"),
        ("postgresql+nodriver://knit:x@127.0.0.1/knit", "not a database URL Knit can use"),
    ):
        with pytest.raises(StoreError, match=message) as caught:
            async with open_database(url):
                pass
        assert "\n" not in str(caught.value) and ":x@" not in str(caught.value)


def test_postgres_is_postgresql() -> None:
    assert database_url("postgres://k@h/d").drivername == "postgresql+asyncpg"
    assert database_url("postgres+asyncpg://k@h/d").drivername == "postgresql+asyncpg"
