"""StoreWriter: the one writer of the state store, committing queued writes in batches.

Layer: store (adapter). Imports anyio, sqlalchemy, ``knit.errors``, ``knit.store.db`` and
``knit.store.ops``.

Why one writer: SQLite allows one writer at a time, and concurrent read-then-write
transactions either lose updates or fail with "database is locked" (ARCHITECTURE.md). So
every write is an *op* — ``async def op(conn) -> result`` — queued to this writer, which runs
whatever is queued (up to ``max_batch`` ops) in one ``BEGIN IMMEDIATE`` transaction and one
commit. Ops run one after another, so an op's read-then-write is atomic: no lost updates.

Ops that are one statement over many rows (:class:`RowsOp`: heartbeats, events, instance
inserts and status changes) are merged with the other queued ops of the same kind into one
executemany, so single writes from many actors still cost one round trip per batch. An op
joins an earlier group of its kind only across ops it commutes with (other tables, other
rows; never across a plain op), so the batch means what the queue order meant.

A batch of nothing but such ops (the common case under load) runs as one call to SQLite's
thread, its rows as multi-row statements (``knit.store.direct``): no round trip through the
busy event loop per statement, no take-back of Python's lock per row. On PostgreSQL every
batch runs through Core, in one transaction that first takes the store's advisory write
lock (``knit.store.db``), the stand-in for ``BEGIN IMMEDIATE``.

A failing op does not cost the others: the batch is rolled back and run again with a
SAVEPOINT around each op; the failing op's savepoint is rolled back, its error goes to its
caller only, and the rest commit. Hence the contract for ops:

* an op only touches the connection it is given: it may run twice (the first run rolled
  back), so it must have no other side effect;
* an op never commits, rolls back or begins a transaction (``conn.begin_nested()`` is fine);
* an op is short: it runs while every other writer waits.

Use it with plain anyio::

    writer = StoreWriter(db)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        record = await writer.submit(deployments.create(...))
        writer.submit_nowait(nodes.record_heartbeats([...]))
        await writer.aclose()       # drains the queue, then ``run`` returns
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Fenced, StoreError
from knit.store.db import WRITE_BEGIN, Database, translate_error
from knit.store.direct import write_direct
from knit.store.ops import MAX_MERGED_ROWS, REFERENCES, Op, RowsOp, execute_rows

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Request(Generic[T]):
    """One queued op and, once run, its outcome."""

    __slots__ = ("done", "error", "has_result", "op", "result", "settled")

    def __init__(self, op: Op[T], waited: bool) -> None:
        self.op = op
        self.done: anyio.Event | None = anyio.Event() if waited else None
        self.result: T | None = None
        self.has_result = False
        self.error: BaseException | None = None
        self.settled = False

    def succeed(self, value: T) -> None:
        self.result, self.has_result, self.error = value, True, None
        self.settled = True
        if self.done is not None:
            self.done.set()

    def fail(self, error: BaseException, *, quiet: bool = False) -> None:
        self.result, self.has_result, self.error = None, False, error
        self.settled = True
        if self.done is not None:
            self.done.set()
        elif not quiet:
            # Nobody awaits a fire-and-forget op: log it (the kind of op, not its data).
            log.warning("store write %s failed: %s", _op_name(self.op), error)


@dataclass
class WriterStats:
    """Counters of a writer, for status pages and benchmarks."""

    batches: int = 0
    ops: int = 0
    statements_saved: int = 0
    failed_ops: int = 0
    retried_batches: int = 0
    largest_batch: int = 0
    direct_batches: int = 0
    write_s: float = 0.0


class StoreWriter:
    """Serialises writes to the store and commits them in batches.

    Args:
        db: the open database.
        max_batch: most ops in one transaction.
        linger: seconds to wait for more ops when fewer than ``max_batch`` are queued.
            0 (the default) commits at once whatever is queued: while one batch commits,
            the next one queues, so batches grow with load without adding latency.
        buffer: ops that may wait in the queue; beyond it ``submit`` waits and
            ``submit_nowait`` raises.
        batch_timeout: seconds a batch may take; past it the running query is interrupted
            and every op of the batch fails with ``StoreError``.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 512,
        linger: float = 0.0,
        buffer: int = 10_000,
        batch_timeout: float = 30.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.db = db
        self.max_batch = max_batch
        self.linger = linger
        self.batch_timeout = batch_timeout
        self.stats = WriterStats()
        send, receive = anyio.create_memory_object_stream[_Request[object]](max_buffer_size=buffer)
        self._send: MemoryObjectSendStream[_Request[object]] = send
        self._receive: MemoryObjectReceiveStream[_Request[object]] = receive
        self._running = False
        self._stopped: anyio.Event | None = None  # made in ``run``: an Event needs a loop

    # --- callers -------------------------------------------------------------------------

    async def submit(self, op: Op[T]) -> T:
        """Queue ``op`` and wait until its batch has committed; return what it returned.

        Cancellation: while the queue is full, cancelling ``submit`` withdraws the op (it
        never runs). Once queued, the op is not withdrawn: it runs and commits (or fails)
        exactly as if the caller had waited; the cancelled caller just does not see the
        outcome. Callers that need to know must re-read the store.

        Raises:
            Conflict: the op hit a unique or foreign key constraint.
            NotFound: the op raised it (an entity it needs does not exist).
            StoreError: the database failed, or the writer is stopped.
            Exception: whatever else the op raised (a bug in the op).
        """
        request: _Request[T] = _Request(op, waited=True)
        try:
            await self._send.send(request)  # type: ignore[arg-type]
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise StoreError("the store writer is stopped") from None
        assert request.done is not None
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.has_result
        return request.result  # type: ignore[return-value]

    def submit_nowait(self, op: Op[object]) -> None:
        """Queue ``op`` without waiting for it (heartbeats, events, status changes).

        The op commits with its batch; if it fails, the error is logged and counted in
        ``stats.failed_ops``, nobody else sees it. Ops queued by one task run in the order
        they were queued, before any op that task queues later.

        Raises:
            StoreError: the queue is full (the writer cannot keep up) or the writer is
                stopped.
        """
        try:
            self._send.send_nowait(_Request(op, waited=False))
        except anyio.WouldBlock:
            raise StoreError("the store writer is overloaded: too many queued writes") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise StoreError("the store writer is stopped") from None

    async def aclose(self) -> None:
        """Stop accepting ops, let ``run`` commit everything queued, and wait until it returns.

        If ``run`` never started, queued ops fail with ``StoreError``. Cancellation stops the
        waiting only; ``run`` still drains the queue.
        """
        self._send.close()
        if self._stopped is not None:
            await self._stopped.wait()
        else:
            self._fail_queued()
            self._receive.close()

    @property
    def queued(self) -> int:
        """Ops waiting in the queue now."""
        return self._receive.statistics().current_buffer_used

    # --- the loop ------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run queued ops in batches until :meth:`aclose` (returns) or cancellation.

        Cancellation: the batch being written is finished first (shielded, bounded by
        ``batch_timeout``): its ops commit or fail, never stay in doubt. Ops still queued then
        fail with ``StoreError`` ("stopped"), and the writer accepts no more.
        """
        if self._running:
            raise RuntimeError("StoreWriter.run is already running")
        self._running = True
        self._stopped = anyio.Event()
        task_status.started()
        batch: list[_Request[object]] = []
        try:
            while True:
                try:
                    first = await self._receive.receive()
                except anyio.EndOfStream:
                    return
                batch = await self._collect(first)
                with anyio.CancelScope(shield=True):
                    await self._write(batch)
        finally:
            # Only a BaseException from an op (not a cancellation: the batch is shielded)
            # can leave requests of the batch unsettled; their callers must not hang.
            for request in batch:
                if not request.settled:
                    request.fail(StoreError("the store writer crashed during this write"))
            self._send.close()
            self._fail_queued()
            self._receive.close()
            self._stopped.set()

    async def _collect(self, first: _Request[object]) -> list[_Request[object]]:
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        if self.linger > 0 and len(batch) < self.max_batch:
            with anyio.move_on_after(self.linger):
                while len(batch) < self.max_batch:
                    try:
                        batch.append(await self._receive.receive())
                    except anyio.EndOfStream:
                        break
        return batch

    def _fail_queued(self) -> None:
        while True:
            try:
                request = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            self.stats.failed_ops += 1
            request.fail(StoreError("the store writer stopped before this write ran"))

    async def _write(self, batch: list[_Request[object]]) -> None:
        """Commit ``batch``: all together, or one savepoint per op if any op fails."""
        self.stats.batches += 1
        self.stats.ops += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        timeout = self.batch_timeout if self.batch_timeout > 0 else math.inf
        started = time.monotonic()
        try:
            await self._write_groups(batch, self._merge(batch), timeout)
        finally:
            self.stats.write_s += time.monotonic() - started

    async def _write_groups(
        self, batch: list[_Request[object]], groups: list[list[_Request[object]]], timeout: float
    ) -> None:
        if all(isinstance(group[0].op, RowsOp) for group in groups):
            try:
                async with self.db.write_engine.connect() as conn:
                    direct = [(g[0].op, _merged_rows(g)) for g in groups]
                    ran = await write_direct(conn, direct, WRITE_BEGIN, timeout)
                if ran:
                    self.stats.direct_batches += 1
                    for group in groups:
                        for request in group:
                            request.succeed(request.op.result)  # type: ignore[attr-defined]
                    return
            except TimeoutError as exc:
                self._fail_all(batch, exc)
                return
            except Exception:
                # Run again statement by statement: that path tells which op failed.
                log.debug("a direct batch failed; writing it statement by statement", exc_info=True)
        results: list[tuple[_Request[object], object]] = []
        failed: BaseException | None = None
        op_failed = False
        try:
            with anyio.fail_after(timeout):
                async with self.db.write_engine.begin() as conn:
                    for group in groups:
                        try:
                            if len(group) == 1:
                                results.append((group[0], await group[0].op(conn)))
                            else:
                                values = await _run_merged(conn, group)
                                results.extend(zip(group, values, strict=True))
                        except Exception:
                            op_failed = True
                            raise
        except Exception as exc:
            failed = exc
        if failed is None:
            for request, value in results:
                request.succeed(value)
            return
        if not op_failed or len(batch) == 1:
            # One op that failed, or the transaction itself failed (begin, commit, timeout):
            # every op of the batch shares the error.
            self._fail_all(batch, failed)
            return
        self.stats.retried_batches += 1
        await self._write_one_by_one(batch, timeout)

    async def _write_one_by_one(self, batch: list[_Request[object]], limit_s: float) -> None:
        outcomes: list[tuple[bool, object]] = []
        try:
            with anyio.fail_after(limit_s):
                async with self.db.write_engine.begin() as conn:
                    for request in batch:
                        try:
                            async with conn.begin_nested():
                                outcomes.append((True, await request.op(conn)))
                        except Exception as exc:
                            outcomes.append((False, exc))
        except Exception as exc:
            self._fail_all(batch, exc)
            return
        for request, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                request.succeed(value)
            else:
                assert isinstance(value, BaseException)
                self.stats.failed_ops += 1
                request.fail(translate_error(value))

    def _merge(self, batch: list[_Request[object]]) -> list[list[_Request[object]]]:
        """The batch as groups run in order: each ``RowsOp`` joins the open group of its
        key when it commutes with every op queued after that group began (that is what
        it moves ahead of); anything else starts a group of its own."""
        groups: list[list[_Request[object]]] = []
        open_by_key: dict[str, _MergeGroup] = {}
        saved = 0
        for request in batch:
            op = request.op
            if not isinstance(op, RowsOp):
                groups.append([request])
                open_by_key.clear()  # nothing moves ahead of a plain op
                continue
            group = open_by_key.get(op.key)
            if (
                group is not None
                and group.rows + len(op.rows) <= MAX_MERGED_ROWS
                and group.admits(op)
            ):
                group.requests.append(request)
                group.rows += len(op.rows)
                saved += 1
            else:
                group = _MergeGroup(op, request, len(groups))
                groups.append(group.requests)
                open_by_key[op.key] = group
            # Ops of open groups that began before this op's place would move ahead of it.
            at = group.index
            for other in open_by_key.values():
                if other.index < at:
                    other.note_passed(op)
        self.stats.statements_saved += saved
        return groups

    def _fail_all(self, batch: list[_Request[object]], exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            error: BaseException = StoreError(
                f"a batch of {len(batch)} writes took longer than {self.batch_timeout:g} s"
            )
        else:
            error = translate_error(exc)
        self.stats.failed_ops += len(batch)
        if len(batch) == 1:
            batch[0].fail(error)  # keep the traceback of the op's own error
            return
        # A fenced batch (a leader that lost its lease) is thousands of ops: one line.
        quiet = isinstance(error, Fenced)
        if quiet:
            log.warning("a batch of %d store writes was refused: %s", len(batch), error)
        for request in batch:
            request.fail(_copy_error(error), quiet=quiet)


class _MergeGroup:
    """Requests run as one statement, and what later ops joining it would move ahead of.

    All its ops write one table (one key); an op joining it moves ahead of the ops that
    passed it. It commutes with them unless one wrote the same rows of that table, or a
    table it refers to (:meth:`RowsOp.commutes_with`): so only the ids of the same table
    are kept, and a write of a referred table closes the group.
    """

    __slots__ = ("closed", "index", "passed_ids", "references", "requests", "rows", "table")

    def __init__(self, op: RowsOp[object], first: _Request[object], index: int) -> None:
        self.requests = [first]
        self.index = index
        self.rows = len(op.rows)
        self.table = op.table
        self.references = REFERENCES.get(op.table, frozenset())
        self.passed_ids: set[object] | None = None  # None: no write of ``table`` passed
        self.closed = False

    def admits(self, op: RowsOp[object]) -> bool:
        """Whether ``op`` (of this group's key) may join it: it commutes with every op
        that passed it."""
        if self.closed:
            return False
        if self.passed_ids is None:
            return True
        mine = op.row_ids
        return mine is not None and self.passed_ids.isdisjoint(mine)

    def note_passed(self, op: RowsOp[object]) -> None:
        """``op`` now runs after this group."""
        if op.table == self.table:
            ids = op.row_ids
            if ids is None:
                self.closed = True
            elif self.passed_ids is None:
                self.passed_ids = set(ids)
            else:
                self.passed_ids.update(ids)
        elif op.table in self.references:
            self.closed = True


def _copy_error(error: BaseException) -> BaseException:
    """A copy of ``error`` for one more caller (raising one object in many tasks would
    splice their tracebacks together)."""
    try:
        clone = copy.copy(error)
    except Exception:  # an exception class that cannot be copied: share it
        return error
    clone.__cause__ = error.__cause__
    clone.__traceback__ = None
    return clone


def _merged_rows(group: list[_Request[object]]) -> list[Mapping[str, object]]:
    """The rows of a group of ``RowsOp``s, in order (of one id's, only the last when the
    statement is ``last_wins``)."""
    ops = [r.op for r in group if isinstance(r.op, RowsOp)]  # all of them
    rows = [row for op in ops for row in op.rows]
    if ops[0].last_wins and len(rows) > 1:
        ids = [row["id"] if "id" in row else row.get("b_id") for row in rows]
        if None not in ids:  # rows of distinct ids commute; of one id's, the last counts
            rows = list(dict(zip(ids, rows, strict=True)).values())
    return rows


async def _run_merged(conn: AsyncConnection, group: list[_Request[object]]) -> list[object]:
    rows = _merged_rows(group)
    if rows:
        await execute_rows(conn, group[0].op, rows)  # type: ignore[arg-type]
    return [r.op.result for r in group]  # type: ignore[attr-defined]


def _op_name(op: Callable[..., object]) -> str:
    if isinstance(op, RowsOp):
        return op.key
    return getattr(op, "__qualname__", None) or type(op).__name__
