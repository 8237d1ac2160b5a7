"""Small SQL helpers shared by the query modules: portable upserts, the KEEP sentinel.

Layer: store (adapter). Imports sqlalchemy and ``knit.errors``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

from sqlalchemy import ColumnElement
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.dml import Insert

from knit.errors import StoreError
from knit.store.models import Base

T = TypeVar("T")

Excluded: TypeAlias = ReadOnlyColumnCollection[str, ColumnElement[Any]]
"""The ``excluded`` pseudo-table of an upsert: the row that conflicted."""


class Keep(enum.Enum):
    """The type of :data:`KEEP`."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP
"""Default of optional update arguments: leave the stored value as it is (None clears)."""


def now() -> float:
    """The current time as float seconds since the epoch: the store's timestamp type."""
    return time.time()


def upsert(
    conn: AsyncConnection,
    model: type[Base],
    *,
    keys: Sequence[str],
    update: Iterable[str],
    overrides: Callable[[Excluded], Mapping[str, object]] | None = None,
) -> Insert:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET col = excluded.col`` for SQLite/PostgreSQL.

    Args:
        conn: the connection the statement is for (its dialect picks the construct).
        model: the table.
        keys: the conflict target (primary key or a unique index's columns).
        update: columns to overwrite from the inserted row on conflict.
        overrides: given the ``excluded`` columns (the row that failed to insert), the
            columns to set to another expression on conflict.

    Raises:
        StoreError: the dialect has no upsert here (neither SQLite nor PostgreSQL).
    """
    name = conn.dialect.name
    if name == "sqlite":
        sqlite_stmt = sqlite.insert(model)
        sets: dict[str, object] = {col: sqlite_stmt.excluded[col] for col in update}
        if overrides is not None:
            sets.update(overrides(sqlite_stmt.excluded))
        return sqlite_stmt.on_conflict_do_update(index_elements=list(keys), set_=sets)
    if name == "postgresql":
        pg_stmt = postgresql.insert(model)
        sets = {col: pg_stmt.excluded[col] for col in update}
        if overrides is not None:
            sets.update(overrides(pg_stmt.excluded))
        return pg_stmt.on_conflict_do_update(index_elements=list(keys), set_=sets)
    raise StoreError(f"upserts are not implemented for the {name} dialect")


def chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (bounded ``IN (...)`` lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
