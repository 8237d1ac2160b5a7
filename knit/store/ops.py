"""The two kinds of write the StoreWriter runs: any op, and RowsOp (mergeable).

Layer: store (adapter). Imports sqlalchemy only. The query modules build these; the writer
(``knit.store.writer``) runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeAlias, TypeVar

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

Op: TypeAlias = Callable[[AsyncConnection], Awaitable[T]]
"""A write: an async callable run inside the writer's transaction, returning a value."""

MAX_MERGED_ROWS = 10_000
"""The most rows the writer merges into one executemany."""

REFERENCES: dict[str, frozenset[str]] = {
    "instances": frozenset({"nodes", "deployments"}),
    "deployments": frozenset({"registry_credentials"}),
    "node_networks": frozenset({"nodes", "networks"}),
}
"""The tables (as ``RowsOp.table`` names them) each table's foreign keys point to."""


@dataclass(frozen=True, eq=False)
class RowsOp(Generic[T]):
    """An op that runs one statement over a list of rows (an executemany).

    The writer merges queued ``RowsOp``s with the same ``key`` into one executemany:
    running the same statement over their rows in queue order is exactly running them one
    after another, with one round trip to the database instead of many. That is what lets
    thousands of single heartbeats, events or status changes per second through. If the
    merged statement fails, the ops are retried one by one (savepoints).

    An op may join an earlier group of its key across the ops queued in between when it
    commutes with each of them (see :meth:`commutes_with`): actors interleave instance
    upserts, events and task states, so adjacency alone would merge almost nothing.

    Attributes:
        key: ``<table>.<statement>``; equal keys must mean equal statements.
        statement: builds the statement for a connection (its dialect may matter).
        rows: the parameters, one mapping per execution.
        result: what the op returns once committed.
        last_wins: the statement sets every column it writes from the row alone (a full
            upsert, or an update of fixed columns by id), so of several rows with one id
            only the last matters: a merged group writes that one only.
    """

    key: str
    statement: Callable[[AsyncConnection], Executable]
    rows: Sequence[Mapping[str, object]]
    result: T
    last_wins: bool = False

    @cached_property
    def table(self) -> str:
        """The table the statement writes (the key's first part)."""
        return self.key.partition(".")[0]

    @cached_property
    def row_ids(self) -> frozenset[object] | None:
        """The ids of the rows written: each row's ``id`` (inserts, upserts) or ``b_id``
        (updates and deletes by id) parameter; None if a row has neither (any row)."""
        ids = set()
        for row in self.rows:
            if "id" in row:
                ids.add(row["id"])
            elif "b_id" in row:
                ids.add(row["b_id"])
            else:
                return None
        return frozenset(ids)

    def commutes_with(self, table: str, ids: AbstractSet[object] | None) -> bool:
        """Whether running this op before a write of rows ``ids`` of ``table`` (None: any
        rows) that was queued ahead of it gives the same result.

        It does unless both write the same rows of one table, or this op's table refers
        to ``table`` (a child row must not move ahead of the parent row it may need).
        """
        if table == self.table:
            mine = self.row_ids
            return mine is not None and ids is not None and not (mine & ids)
        return table not in REFERENCES.get(self.table, frozenset())

    async def __call__(self, conn: AsyncConnection) -> T:
        """Execute the statement over ``rows`` (nothing when there are none)."""
        if self.rows:
            await conn.execute(self.statement(conn), [dict(r) for r in self.rows])
        return self.result
