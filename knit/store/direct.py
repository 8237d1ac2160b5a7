"""A writer batch of row statements as one call to SQLite's thread.

Layer: store (adapter). Imports anyio, sqlalchemy and ``knit.store.ops``.

Through SQLAlchemy's async engine, every statement of a batch (``BEGIN``, one executemany
per merged group, ``COMMIT``) is a round trip to aiosqlite's thread and back through the
event loop, and an executemany gives up and takes back Python's lock for every row: while
the event loop's thread is busy, each take-back waits (a 20,000-row executemany took 10x
longer next to a busy thread). At 100,000 placements the writer fell tens of thousands of
writes behind. When a batch is only :class:`~knit.store.ops.RowsOp` groups whose SQL runs
as text over parameter tuples (the hot writes: instances, tasks, events, heartbeats),
:func:`write_direct` runs the whole transaction in one call in aiosqlite's thread, as
multi-row statements where the statement allows (``Prepared.statements``).

It reaches under SQLAlchemy's aiosqlite adapter (aiosqlite's ``_connection`` and
``_execute``), like ``knit.store.db.interrupt_connection``; if that layout ever changes, it
returns False and the writer takes the statement-by-statement path.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.store.ops import prepare_rows

Statements = list[tuple[str, Sequence[Any], bool]]


async def write_direct(
    conn: AsyncConnection,
    groups: Sequence[tuple[Any, Sequence[Any]]],
    begin: str,
    timeout: float,
) -> bool:
    """Run ``groups`` (a ``RowsOp`` and the rows to run it over, each) in one transaction
    that begins with ``begin``, in one call to the driver's thread; False (nothing ran) if
    some group cannot run as SQL text or the driver is not aiosqlite.

    ``conn`` must not be in a transaction. Past ``timeout`` seconds the running statement
    is interrupted and the transaction rolled back. The outcome is always the thread's
    own: the call waits for it (a cancellation waits too), so a transaction that committed
    is never reported failed, nor the other way round.

    Raises:
        TimeoutError: interrupted at ``timeout`` (nothing was written).
        sqlite3.Error: a statement or the commit failed (the transaction is rolled back).
        sqlalchemy.exc.StatementError: a value a bind processor refused.
    """
    statements: Statements = []
    for op, rows in groups:
        if not rows:
            continue
        prepared = prepare_rows(conn, op, rows)
        if prepared is None:
            return False
        statements.extend(prepared[0].statements(prepared[1]))
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    run_in_thread = getattr(driver, "_execute", None)
    sqlite_conn = getattr(driver, "_connection", None)
    if run_in_thread is None or not isinstance(sqlite_conn, sqlite3.Connection):
        return False
    timed_out = False
    deadline = time.monotonic() + timeout

    async def watchdog() -> None:
        # A statement that waits long in one step (a lock, a huge scan) is interrupted;
        # between the many short steps of an executemany, ``_until`` stops it.
        nonlocal timed_out
        if math.isinf(timeout):
            await anyio.sleep_forever()
        else:
            await anyio.sleep(timeout)
        timed_out = True
        sqlite_conn.interrupt()

    with anyio.CancelScope(shield=True):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watchdog)
            try:
                await run_in_thread(_transaction, sqlite_conn, begin, statements, deadline)
            except sqlite3.OperationalError:
                if timed_out:
                    raise TimeoutError from None
                raise
            finally:
                tg.cancel_scope.cancel()
    return True


def _transaction(
    conn: sqlite3.Connection, begin: str, statements: Statements, deadline: float
) -> None:
    """In the driver's thread: the statements in one transaction, rolled back on failure
    (and past ``deadline``, ``time.monotonic()``)."""
    cursor = conn.cursor()
    try:
        cursor.execute(begin)
        try:
            for sql, params, many in statements:
                if many:
                    cursor.executemany(sql, _until(params, deadline))
                elif time.monotonic() > deadline:
                    raise TimeoutError
                else:
                    cursor.execute(sql, params)
            cursor.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
    finally:
        cursor.close()


def _until(params: Sequence[Any], deadline: float) -> Iterator[tuple[Any, ...]]:
    """``params``, raising ``TimeoutError`` once ``deadline`` passed (looked at every
    ``CHECK_EVERY`` rows)."""
    for start in range(0, len(params), CHECK_EVERY):
        if time.monotonic() > deadline:
            raise TimeoutError
        yield from params[start : start + CHECK_EVERY]


CHECK_EVERY = 256
