"""Store: one object for reads and writes, and ``open_store`` to run it with its writer.

Layer: store (adapter). Imports anyio, sqlalchemy and ``knit.store``'s own modules.

The query modules give read functions (:class:`~knit.store.reads.Read`) and write op
factories; :class:`Store` runs them::

    async with open_store(data_dir / "knit.db") as store:
        node = await store.read(nodes.get_node, node_id)
        record = await store.write(deployments.create("web", "nginx:1"))
        store.write_nowait(nodes.record_heartbeats(beats))
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Concatenate, ParamSpec, TypeVar, overload

import anyio
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.store.db import Database, LeaseFence, open_database
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.writer import StoreWriter

T = TypeVar("T")
P = ParamSpec("P")


class Store:
    """Reads on the read pool, writes through the one :class:`StoreWriter`.

    Args:
        db: the open database.
        writer: the writer running on ``db`` (its ``run`` must be running for writes to
            complete).
    """

    def __init__(self, db: Database, writer: StoreWriter) -> None:
        self.db = db
        self.writer = writer

    @overload
    async def read(self, fn: Read[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    @overload
    async def read(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    @overload
    async def read(
        self,
        fn: Callable[Concatenate[AsyncConnection, P], Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T: ...

    async def read(self, fn: object, /, *args: object, **kwargs: object) -> object:
        """``fn(conn, *args, **kwargs)`` in one read transaction (a consistent snapshot).

        ``fn`` is a :class:`~knit.store.reads.Read` or a plain synchronous function of a
        ``Connection``: it runs whole in a read thread (:meth:`Database.run_read`). An
        ``async def`` function of an ``AsyncConnection`` is still accepted; it runs on the
        async read engine, one event-loop turn per statement.

        Cancellation interrupts the running query (nothing is left running).

        Raises:
            NotFound: what ``fn`` raises for a missing entity.
            StoreError: the database failed.
        """
        if isinstance(fn, Read):
            return await self.db.run_read(fn.sync, *args, **kwargs)
        if inspect.iscoroutinefunction(fn):
            async with self.db.read() as conn:
                return await fn(conn, *args, **kwargs)
        if not callable(fn):
            raise TypeError(f"not a read function: {fn!r}")
        return await self.db.run_read(fn, *args, **kwargs)

    async def write(self, op: Op[T]) -> T:
        """Run ``op`` in the writer's next batch and return its result once committed.

        Cancellation: see :meth:`StoreWriter.submit` (a queued op still commits).

        Raises:
            Conflict: a constraint failed or the op refused.
            NotFound: the op needs an entity that does not exist.
            StoreError: the database failed or the writer is stopped.
        """
        return await self.writer.submit(op)

    def write_nowait(self, op: Op[object]) -> None:
        """Queue ``op`` without waiting (errors are logged; see ``StoreWriter.submit_nowait``).

        Raises:
            StoreError: the writer's queue is full or the writer is stopped.
        """
        self.writer.submit_nowait(op)


@asynccontextmanager
async def open_store(
    url_or_path: str | os.PathLike[str],
    *,
    read_pool_size: int = 4,
    busy_timeout: float = 5.0,
    max_batch: int = 512,
    linger: float = 0.0,
    buffer: int = 10_000,
    read_threads: bool | None = None,
    fence: LeaseFence | None = None,
) -> AsyncIterator[Store]:
    """Open the database and run its writer until the block ends.

    At the end of the block the writer commits everything already queued, then the
    database closes. If the block is cancelled, the batch being written still completes
    and queued ops fail with ``StoreError`` (see :meth:`StoreWriter.run`).

    Args:
        url_or_path: see :func:`knit.store.db.open_database`.
        read_pool_size: reads that run at once.
        busy_timeout: seconds SQLite waits for another connection's lock.
        max_batch: most ops in one transaction.
        linger: seconds the writer waits for more ops before committing a small batch.
        buffer: ops that may wait in the writer's queue.
        read_threads: see :func:`knit.store.db.open_database` (default: on SQLite).
        fence: see :func:`knit.store.db.open_database` (a leader's store on PostgreSQL).

    Raises:
        StoreError: the database cannot be opened or its schema is newer than this code.
    """
    async with open_database(
        url_or_path,
        read_pool_size=read_pool_size,
        busy_timeout=busy_timeout,
        read_threads=read_threads,
        fence=fence,
    ) as db:
        writer = StoreWriter(db, max_batch=max_batch, linger=linger, buffer=buffer)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            try:
                yield Store(db, writer)
            finally:
                with anyio.CancelScope(shield=True):
                    await writer.aclose()
