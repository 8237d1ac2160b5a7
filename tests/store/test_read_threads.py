"""Reads in read threads: one thread hop per read, snapshots, query_only, cancellation.

SQLite-only: read threads exist on SQLite only (PostgreSQL reads run on the async read
engine; its snapshot and read-only tests are in test_db.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import NotFound, StoreError
from knit.store import HeartbeatUpsert, nodes, open_store
from knit.store.models import Node
from knit.store.reads import Read

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ENDLESS_QUERY = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
)


def beat(node_id: str) -> HeartbeatUpsert:
    return HeartbeatUpsert(node_id=node_id, hostname=f"host-{node_id}", at=1.0)


def count_nodes(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(Node)).scalar_one())


async def test_a_read_function_runs_whole_in_a_read_thread(db_path: Path) -> None:
    seen: list[str] = []

    @Read
    def find(conn: Connection, node_id: str) -> str | None:
        seen.append(threading.current_thread().name)
        node = nodes.find_node.sync(conn, node_id)
        return None if node is None else node.hostname

    async with open_store(db_path) as store:
        await store.write(nodes.record_heartbeat(beat("n1")))
        assert await store.read(find, "n1") == "host-n1"
        assert await store.read(find, node_id="n2") is None
    assert seen and all(name.startswith("knit-store-read") for name in seen)


async def test_plain_sync_and_async_functions_are_read_too(db_path: Path) -> None:
    async def old_style(conn: AsyncConnection) -> int:
        return int((await conn.execute(select(func.count()).select_from(Node))).scalar_one())

    async with open_store(db_path) as store:
        await store.write(nodes.record_heartbeats([beat("n1"), beat("n2")]))
        assert await store.read(count_nodes) == 2
        assert await store.read(old_style) == 2


async def test_errors_of_a_read_reach_the_caller(db_path: Path) -> None:
    def broken(conn: Connection) -> object:
        return conn.execute(text("SELECT * FROM no_such_table")).all()

    async with open_store(db_path) as store:
        with pytest.raises(NotFound):
            await store.read(nodes.get_node, "ghost")
        with pytest.raises(StoreError, match="no such table"):
            await store.read(broken)
        # The thread and its connection are still usable.
        assert await store.read(count_nodes) == 0


async def test_reads_cannot_write(db_path: Path) -> None:
    def sneaky(conn: Connection) -> None:
        conn.execute(text("DELETE FROM nodes"))

    async with open_store(db_path) as store:
        await store.write(nodes.record_heartbeat(beat("n1")))
        with pytest.raises(StoreError, match="readonly"):
            await store.read(sneaky)
        assert await store.read(count_nodes) == 1


async def test_a_read_sees_one_snapshot_while_the_writer_commits(db_path: Path) -> None:
    first_done = threading.Event()
    may_continue = threading.Event()

    def twice(conn: Connection) -> tuple[int, int]:
        before = count_nodes(conn)
        first_done.set()
        assert may_continue.wait(10)
        return before, count_nodes(conn)

    async with open_store(db_path) as store, anyio.create_task_group() as tg:
        await store.write(nodes.record_heartbeat(beat("n1")))
        counts: list[tuple[int, int]] = []

        async def read() -> None:
            counts.append(await store.read(twice))

        tg.start_soon(read)
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(first_done.wait)
            await store.write(nodes.record_heartbeat(beat("n2")))  # committed meanwhile
        may_continue.set()
    assert counts == [(1, 1)]
    async with open_store(db_path) as store:
        assert await store.read(count_nodes) == 2  # the next read sees the commit


async def test_a_cancelled_read_is_interrupted_and_frees_its_thread(db_path: Path) -> None:
    def endless(conn: Connection) -> object:
        return conn.execute(text(ENDLESS_QUERY)).scalar()

    async with open_store(db_path, read_pool_size=1) as store:
        with anyio.move_on_after(0.2) as scope:
            await store.read(endless)
        assert scope.cancelled_caught
        # One thread only: it must have stopped counting to answer this.
        with anyio.fail_after(10):
            assert await store.read(count_nodes) == 0


async def test_a_read_cancelled_before_it_starts_does_not_run(db_path: Path) -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def blocker(conn: Connection) -> None:
        started.set()
        assert release.wait(10)

    def queued(conn: Connection) -> None:
        ran.append("queued")

    async with open_store(db_path, read_pool_size=1) as store:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.read, blocker)
            with anyio.fail_after(10):
                await anyio.to_thread.run_sync(started.wait)
            with anyio.move_on_after(0.05) as scope:
                await store.read(queued)  # waits behind the blocker
            assert scope.cancelled_caught
            release.set()
        with anyio.fail_after(10):
            assert await store.read(count_nodes) == 0
    assert ran == []


async def test_without_read_threads_the_same_reads_run_on_the_async_engine(
    db_path: Path,
) -> None:
    async with open_store(db_path, read_threads=False) as store:
        assert store.db.read_threads is None
        await store.write(nodes.record_heartbeat(beat("n1")))
        assert (await store.read(nodes.get_node, "n1")).hostname == "host-n1"
        assert await store.read(count_nodes) == 1
        with pytest.raises(NotFound):
            await store.read(nodes.get_node, "ghost")
