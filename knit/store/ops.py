"""The two kinds of write the StoreWriter runs: any op, and RowsOp (mergeable).

Layer: store (adapter). Imports sqlalchemy only. The query modules build these; the writer
(``knit.store.writer``) runs them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Generic, TypeAlias, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import ClauseElement, Executable
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler

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

_NOT_YET: Any = object()


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

    Treat an op as frozen once built (a plain class with slots rather than a frozen
    dataclass: thousands are built per second).

    Attributes:
        key: ``<table>.<statement>``; equal keys must mean equal statements.
        statement: builds the statement for a connection (its dialect may matter).
        rows: the parameters, one mapping per execution.
        result: what the op returns once committed.
        last_wins: the statement sets every column it writes from the row alone (a full
            upsert, or an update of fixed columns by id), so of several rows with one id
            only the last matters: a merged group writes that one only.
        table: the table the statement writes (the key's first part).
    """

    __slots__ = ("_row_ids", "key", "last_wins", "result", "rows", "statement", "table")

    def __init__(
        self,
        key: str,
        statement: Callable[[AsyncConnection], Executable],
        rows: Sequence[Mapping[str, object]],
        result: T,
        last_wins: bool = False,
    ) -> None:
        self.key = key
        self.statement = statement
        self.rows = rows
        self.result = result
        self.last_wins = last_wins
        self.table = key.partition(".")[0]
        self._row_ids: frozenset[object] | None = _NOT_YET

    def __repr__(self) -> str:
        return f"RowsOp({self.key!r}, {len(self.rows)} rows)"

    @property
    def row_ids(self) -> frozenset[object] | None:
        """The ids of the rows written: each row's ``id`` (inserts, upserts) or ``b_id``
        (updates and deletes by id) parameter; None if a row has neither (any row)."""
        if self._row_ids is _NOT_YET:
            self._row_ids = _row_ids(self.rows)
        return self._row_ids

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
            await execute_rows(conn, self, self.rows)
        return self.result


def _row_ids(rows: Sequence[Mapping[str, object]]) -> frozenset[object] | None:
    ids = set()
    for row in rows:
        if "id" in row:
            ids.add(row["id"])
        elif "b_id" in row:
            ids.add(row["b_id"])
        else:
            return None
    return frozenset(ids)


async def execute_rows(
    conn: AsyncConnection, op: RowsOp[Any], rows: Sequence[Mapping[str, object]]
) -> None:
    """Run ``op``'s statement over ``rows`` (at least one; its rows or a merged group's).

    On SQLite, the statement is compiled once per key and dialect and run as SQL text over
    parameter tuples (:class:`Prepared`): the per-row work of a Core ``execute`` (cache
    key, parameter dicts, positional conversion) is most of the writer's CPU. Elsewhere,
    and for statements that need more than bind processors, through Core.

    Cancellation: as the connection's ``execute`` (see ``knit.store.db``).
    """
    prepared = prepare_rows(conn, op, rows)
    if prepared is None:
        await conn.execute(op.statement(conn), [dict(row) for row in rows])
        return
    await conn.exec_driver_sql(prepared[0].sql, prepared[1])


def prepare_rows(
    conn: AsyncConnection, op: RowsOp[Any], rows: Sequence[Mapping[str, object]]
) -> tuple[Prepared, list[tuple[Any, ...]]] | None:
    """``op``'s statement compiled for SQL text, and ``rows`` (at least one) as its
    parameter tuples; None if it must run through Core (not SQLite, or a statement that
    needs more than bind processors).

    Raises:
        sqlalchemy.exc.StatementError: a value a bind processor refused, or a missing key
            (what Core raises for the same rows).
    """
    prepared = _prepared(conn, op, rows[0])
    if prepared is None:
        return None
    try:
        return prepared, prepared.params(rows)
    except Exception as exc:
        raise sa_exc.StatementError(str(exc), prepared.sql, None, exc, True) from exc


_UPDATE_BY_KEY = re.compile(r"UPDATE (\S+) SET ((?:\S+=\?, )*\S+=\?) WHERE (\S+) = \?")
"""An update of fixed columns of one row by its key, as SQLAlchemy compiles it."""
MULTI_ROW_SIZES = (256, 32, 4)
"""Rows per multi-row ``INSERT ... VALUES`` statement, largest first (a few fixed sizes, so
that the driver's statement cache keeps each text compiled); fewer rows go one by one."""


class Prepared:
    """A statement compiled once: its SQL text, and how to turn a row into its parameters
    exactly as Core would (the compiled statement's own bind processors, in its order).

    An ``INSERT`` (or upsert) whose only parameters are one ``VALUES`` row, and an
    ``UPDATE`` of fixed columns by key, also run as multi-row statements
    (:meth:`statements`; the update as ``UPDATE ... FROM (VALUES ...)``, for rows of
    distinct keys): SQLite's driver releases and takes back Python's lock around every
    step of an ``executemany``, so a row at a time crawls while the event loop's thread is
    busy (measured: 10x slower); a statement of 256 rows takes it back once.
    """

    __slots__ = (
        "_by_key",
        "_get",
        "_head",
        "_processors",
        "_row",
        "_single",
        "_tail",
        "_texts",
        "sql",
    )

    def __init__(
        self, sql: str, names: Sequence[str], processors: Mapping[str, Callable[[Any], Any]]
    ) -> None:
        self.sql = sql
        self._single = len(names) == 1
        self._get = operator.itemgetter(*names)
        self._processors = tuple(
            (i, processors[name]) for i, name in enumerate(names) if name in processors
        )
        self._row = "(" + ", ".join("?" * len(names)) + ")"
        values = f"VALUES {self._row}"
        self._head: str | None = None
        self._tail = ""
        self._by_key = False
        by_key = _UPDATE_BY_KEY.fullmatch(sql)
        if sql.count("?") != len(names):
            pass
        elif sql.startswith("INSERT ") and sql.count(values) == 1:
            self._head, self._tail = sql.split(values)
        elif by_key is not None:
            # UPDATE t SET a=?, b=? WHERE t.id = ?  ->  UPDATE t SET a=v.column1,
            # b=v.column2 FROM (VALUES (?, ?, ?), ...) AS v WHERE t.id = v.column3
            table, sets, key = by_key.groups()
            columns = [part.removesuffix("=?") for part in sets.split(", ")]
            assign = ", ".join(f"{c}=v.column{i}" for i, c in enumerate(columns, 1))
            self._head = f"UPDATE {table} SET {assign} FROM ("
            self._tail = f") AS v WHERE {key} = v.column{len(columns) + 1}"
            self._by_key = True  # a key twice in one statement: SQLite picks either row
        self._texts: dict[int, str] = {}

    def statements(self, params: list[tuple[Any, ...]]) -> list[tuple[str, Sequence[Any], bool]]:
        """What runs ``params``: ``(sql, parameters, many)`` each, ``many`` meaning an
        ``executemany`` over a list of tuples, else one execution over flat parameters."""
        if self._head is None or len(params) < MULTI_ROW_SIZES[-1]:
            return [(self.sql, params, True)]
        out: list[tuple[str, Sequence[Any], bool]] = []
        start, left = 0, len(params)
        for size in MULTI_ROW_SIZES:
            while left >= size:
                chunk = params[start : start + size]
                if self._by_key and len({row[-1] for row in chunk}) < size:
                    out.append((self.sql, chunk, True))
                else:
                    out.append((self._text(size), [v for row in chunk for v in row], False))
                start, left = start + size, left - size
        if left:
            out.append((self.sql, params[start:], True))
        return out

    def _text(self, rows: int) -> str:
        text = self._texts.get(rows)
        if text is None:
            values = ", ".join([self._row] * rows)
            text = self._texts[rows] = f"{self._head}VALUES {values}{self._tail}"
        return text

    def params(self, rows: Sequence[Mapping[str, object]]) -> list[tuple[Any, ...]]:
        """One parameter tuple per row."""
        get, processors = self._get, self._processors
        if self._single:
            if processors:
                process = processors[0][1]
                return [(process(get(row)),) for row in rows]
            return [(get(row),) for row in rows]
        if not processors:
            return [get(row) for row in rows]
        params = []
        for row in rows:
            values = list(get(row))
            for i, process in processors:
                values[i] = process(values[i])
            params.append(tuple(values))
        return params


_PREPARED: WeakKeyDictionary[Dialect, dict[tuple[str, tuple[str, ...]], Prepared | None]] = (
    WeakKeyDictionary()
)


def _prepared(
    conn: AsyncConnection, op: RowsOp[Any], first_row: Mapping[str, object]
) -> Prepared | None:
    """The prepared form of ``op``'s statement for rows like ``first_row`` on ``conn``'s
    dialect; None if it must run through Core."""
    dialect = conn.dialect
    if dialect.name != "sqlite":
        return None
    by_key = _PREPARED.get(dialect)
    if by_key is None:
        by_key = _PREPARED[dialect] = {}
    # Core compiles for the keys of the first row; so must we.
    cache_key = (op.key, tuple(first_row))
    try:
        return by_key[cache_key]
    except KeyError:
        pass
    by_key[cache_key] = prepared = _prepare(op.statement(conn), dialect, list(first_row))
    return prepared


def _prepare(statement: Executable, dialect: Dialect, keys: list[str]) -> Prepared | None:
    """``statement`` compiled as Core compiles it for an executemany over rows with
    ``keys``; None if running it needs more than its SQL text and bind processors."""
    if not isinstance(statement, ClauseElement):
        return None
    compiled = statement.compile(dialect=dialect, column_keys=keys, for_executemany=True)
    if not (
        isinstance(compiled, SQLCompiler)
        and compiled.positional
        and compiled.positiontup
        and not compiled.insert_prefetch  # Python-side defaults
        and not compiled.update_prefetch
        and not compiled.literal_execute_params
        and not compiled.post_compile_params  # IN lists expanded per execution
        and not compiled.escaped_bind_names
        and compiled._insertmanyvalues is None
        and not compiled.effective_returning
    ):
        return None
    processors: dict[str, Callable[[Any], Any]] = {}
    for name, process in compiled._bind_processors.items():
        if not callable(process):  # one per element of a tuple value
            return None
        processors[name] = process
    return Prepared(compiled.string, compiled.positiontup, processors)
