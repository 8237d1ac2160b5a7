"""Read threads: each runs whole read functions on its own synchronous SQLite connection.

Layer: store (adapter). Imports sqlalchemy, anyio, asyncio and ``knit.errors``.

Why not the async driver: aiosqlite runs every step of a read (checkout, ``BEGIN``, cursor,
execute, fetch, rollback) as its own hand-off to its thread, and each result waits for a turn
of the event loop; on a busy server a read took 5-6 turns. Here one read is one job: the
event loop queues it (no turn), a thread runs it from ``BEGIN`` to rollback, and hands the
result back with ``call_soon_threadsafe`` (the task resumes two turns later). anyio's
``to_thread.run_sync`` would add two more turns per call (its checkpoint and its capacity
limiter's), which is why the hand-off is written against asyncio here: the store runs on
asyncio only (SQLAlchemy's async engine does).

Cancellation: the awaiting task stops waiting at once; a read still queued is skipped, one
running is stopped with the sqlite3 connection's ``interrupt()`` (a query that keeps running
in a thread nobody waits for would burn a core, see ARCHITECTURE.md). SQLite's interrupt
only stops statements that are running: one that starts after it (the next statement of a
read cancelled between two) runs to its end, which for Knit's reads is milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from knit.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Job(Generic[T]):
    """One read: the function, the future it answers, and the connection it runs on."""

    __slots__ = ("cancelled", "fn", "future", "lock", "loop", "running")

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[[Connection], T]) -> None:
        self.loop = loop
        self.fn = fn
        self.future: asyncio.Future[T] = loop.create_future()
        self.lock = threading.Lock()
        self.cancelled = False
        self.running: sqlite3.Connection | None = None

    def cancel(self) -> None:
        """Skip the read if it has not started; interrupt its query if it runs (any thread)."""
        with self.lock:
            self.cancelled = True
            if self.running is not None:
                self.running.interrupt()

    def run(self, conn: Connection, dbapi: sqlite3.Connection | None) -> None:
        """Run the read on ``conn`` in the calling thread and hand the outcome to the loop."""
        with self.lock:
            if self.cancelled:
                self.fail(StoreError("the read was cancelled"))
                return
            self.running = dbapi
        try:
            result = self.fn(conn)
        except BaseException as exc:  # handed to the awaiting task, which re-raises it
            self.fail(exc)
            return
        finally:
            with self.lock:
                self.running = None
            _end_transaction(conn)
        self._hand_over(result, None)

    def fail(self, error: BaseException) -> None:
        """Hand ``error`` to the awaiting task (any thread)."""
        self._hand_over(None, error)

    def _hand_over(self, result: T | None, error: BaseException | None) -> None:
        # RuntimeError: the event loop is closed, nobody waits any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._settle, result, error)

    def _settle(self, result: T | None, error: BaseException | None) -> None:
        if self.future.done():  # the awaiting task was cancelled
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)  # type: ignore[arg-type]


def _end_transaction(conn: Connection) -> None:
    """Roll back the read's transaction (ends its WAL snapshot); never raises."""
    try:
        if conn.in_transaction():
            conn.rollback()
    except sa_exc.SQLAlchemyError:
        log.debug("rollback of a read failed; the connection is replaced", exc_info=True)
        with contextlib.suppress(sa_exc.SQLAlchemyError):
            conn.invalidate()


class ReadThreads:
    """``size`` threads, each with one connection of ``engine``, running reads in turn.

    Args:
        engine: a synchronous engine whose connections only read (``PRAGMA query_only``)
            and begin a transaction on first use (a WAL snapshot per read).
        size: threads, hence reads running at once.
        name: prefix of the threads' names.
    """

    def __init__(self, engine: Engine, size: int, *, name: str = "knit-store-read") -> None:
        if size < 1:
            raise ValueError("at least one read thread is needed")
        self.engine = engine
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        self._in_flight: set[_Job[Any]] = set()
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` in a read thread, inside one transaction; returns its result.

        Cancellation: returns at once; the read is skipped or its query interrupted.

        Raises:
            StoreError: the threads are closed.
            Exception: what ``fn`` raises, unchanged (SQLAlchemy's errors too).
        """
        if self._closed:
            raise StoreError("the store is closed")
        job = _Job(asyncio.get_running_loop(), fn)
        self._in_flight.add(job)
        self._jobs.put(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancel()
            raise
        finally:
            self._in_flight.discard(job)

    def _serve(self) -> None:
        conn: Connection | None = None
        dbapi: sqlite3.Connection | None = None
        try:
            while (job := self._jobs.get()) is not None:
                if conn is None or conn.closed or conn.invalidated:
                    _close(conn)
                    try:
                        conn = self.engine.connect()
                    except BaseException as exc:  # the job's task gets it; keep serving
                        conn = None
                        job.fail(exc)
                        continue
                    dbapi = _sqlite_connection(conn)
                job.run(conn, dbapi)
        finally:
            _close(conn)

    async def aclose(self) -> None:
        """Stop the threads once the queued reads ran (shielded: runs to the end).

        Reads still waiting are cancelled: their callers get ``StoreError``.
        """
        self._closed = True
        for job in list(self._in_flight):
            job.cancel()
        for _ in self._threads:
            self._jobs.put(None)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()


def _close(conn: Connection | None) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except sa_exc.SQLAlchemyError:
        log.debug("closing a read connection failed", exc_info=True)


def _sqlite_connection(conn: Connection) -> sqlite3.Connection | None:
    """The ``sqlite3.Connection`` under ``conn`` (to interrupt it), or None."""
    try:
        driver = conn.connection.driver_connection
    except sa_exc.SQLAlchemyError:
        return None
    return driver if isinstance(driver, sqlite3.Connection) else None
