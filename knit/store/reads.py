"""Read functions: plain synchronous queries that run whole in a read thread.

Layer: store (adapter). Imports sqlalchemy only.

A read function is ``def f(conn: Connection, ...) -> T`` on a *synchronous* SQLAlchemy
connection, wrapped in :class:`Read`. :meth:`knit.store.Store.read` runs it in one of the
database's read threads: checkout, ``BEGIN``, every query, fetching and the end of the
transaction are one hand-off to a thread and one back (see
``docs/decisions/0007-reads-in-threads.md``), where awaiting each step on an async driver
cost a turn of the event loop per step.

The same object is still awaitable on an ``AsyncConnection`` (``await f(conn, ...)``): a
writer's op, which runs inside the writer's transaction, and :meth:`Database.read` blocks
use it that way. ``f.sync(conn, ...)`` calls the plain function, to compose reads inside
another read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

P = ParamSpec("P")
T = TypeVar("T")


class Read(Generic[P, T]):
    """A read function, usable as a decorator::

        @Read
        def find_node(conn: Connection, node_id: str) -> NodeRecord | None: ...

        await store.read(find_node, "n1")      # in a read thread (one hop)
        await find_node(async_conn, "n1")      # on an AsyncConnection (a writer's op)
        find_node.sync(conn, "n1")             # inside another read function

    Args:
        fn: the synchronous function; it must only read, and keep no reference to ``conn``
            or to its results' rows past its return.
    """

    def __init__(self, fn: Callable[Concatenate[Connection, P], T]) -> None:
        self.sync = fn
        functools.update_wrapper(self, fn)

    async def __call__(self, conn: AsyncConnection, /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the read on ``conn`` (through ``run_sync``: SQLAlchemy's greenlet bridge).

        Cancellation: as for any statement on ``conn``.
        """
        return await conn.run_sync(self.sync, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<Read {self.sync.__module__}.{self.sync.__qualname__}>"
