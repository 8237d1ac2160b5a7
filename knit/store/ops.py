"""The two kinds of write the StoreWriter runs: any op, and RowsOp (mergeable).

Layer: store (adapter). Imports sqlalchemy only. The query modules build these; the writer
(``knit.store.writer``) runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

Op: TypeAlias = Callable[[AsyncConnection], Awaitable[T]]
"""A write: an async callable run inside the writer's transaction, returning a value."""

MAX_MERGED_ROWS = 10_000
"""The most rows the writer merges into one executemany."""


@dataclass(frozen=True, eq=False)
class RowsOp(Generic[T]):
    """An op that runs one statement over a list of rows (an executemany).

    The writer merges *adjacent* queued ``RowsOp``s with the same ``key`` into one
    executemany: running the same statement over their rows in queue order is exactly
    running them one after another, with one round trip to the database instead of many.
    That is what lets thousands of single heartbeats, events or status changes per second
    through. If the merged statement fails, the ops are retried one by one (savepoints).

    Attributes:
        key: names the statement; equal keys must mean equal statements.
        statement: builds the statement for a connection (its dialect may matter).
        rows: the parameters, one mapping per execution.
        result: what the op returns once committed.
    """

    key: str
    statement: Callable[[AsyncConnection], Executable]
    rows: Sequence[Mapping[str, object]]
    result: T

    async def __call__(self, conn: AsyncConnection) -> T:
        """Execute the statement over ``rows`` (nothing when there are none)."""
        if self.rows:
            await conn.execute(self.statement(conn), [dict(r) for r in self.rows])
        return self.result
