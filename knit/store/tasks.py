"""Tasks: the work sent to agents and every state it went through.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

Reads are :class:`~knit.store.reads.Read` functions; writes are factories returning an
op for the :class:`StoreWriter`. After a restart the server resumes from :func:`list_unfinished`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, RowMapping, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert, Update

from knit.errors import NotFound
from knit.store.models import Task
from knit.store.ops import Op, RowsOp
from knit.store.reads import Read
from knit.store.records import (
    TASK_KINDS,
    TASK_STATES,
    UNFINISHED_TASK_STATES,
    TaskRecord,
    new_id,
)
from knit.store.sql import KEEP, Keep, chunks, now


def _record(row: RowMapping) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        kind=row["kind"],
        instance_id=row["instance_id"],
        deployment_id=row["deployment_id"],
        node_id=row["node_id"],
        state=row["state"],
        attempt=int(row["attempt"]),
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# --- reads ---------------------------------------------------------------------------------


@Read
def find_task(conn: Connection, task_id: str) -> TaskRecord | None:
    """The task ``task_id``, or None."""
    row = conn.execute(select(Task).where(Task.id == task_id)).mappings().first()
    return None if row is None else _record(row)


@Read
def get_task(conn: Connection, task_id: str) -> TaskRecord:
    """The task ``task_id``.

    Raises:
        NotFound: no such task.
    """
    record = find_task.sync(conn, task_id)
    if record is None:
        raise NotFound("task", task_id)
    return record


@Read
def list_tasks(
    conn: Connection,
    *,
    deployment_id: str | None = None,
    instance_id: str | None = None,
    node_id: str | None = None,
    states: Sequence[str] | None = None,
) -> list[TaskRecord]:
    """Tasks matching every filter given, oldest first."""
    stmt = select(Task).order_by(Task.created_at, Task.id)
    if deployment_id is not None:
        stmt = stmt.where(Task.deployment_id == deployment_id)
    if instance_id is not None:
        stmt = stmt.where(Task.instance_id == instance_id)
    if node_id is not None:
        stmt = stmt.where(Task.node_id == node_id)
    if states is not None:
        stmt = stmt.where(Task.state.in_(list(states)))
    return [_record(row) for row in conn.execute(stmt).mappings()]


@Read
def list_unfinished(conn: Connection) -> list[TaskRecord]:
    """Tasks neither succeeded nor failed, oldest first (to resume after a restart)."""
    return list_tasks.sync(conn, states=UNFINISHED_TASK_STATES)


# --- writes (op factories) -----------------------------------------------------------------


def create(
    kind: str,
    instance_id: str,
    deployment_id: str,
    *,
    node_id: str | None = None,
    task_id: str | None = None,
    state: str = "pending",
    attempt: int = 1,
    at: float | None = None,
) -> RowsOp[TaskRecord]:
    """Store a new task (``node_id`` None: a broadcast task); the op returns it.

    Raises:
        ValueError: unknown kind or state (at once, not from the op).
        Conflict (from the op): ``task_id`` is taken.
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}")
    _check_state(state)
    stamp = now() if at is None else at
    record = TaskRecord(
        id=task_id or new_id(),
        kind=kind,
        instance_id=instance_id,
        deployment_id=deployment_id,
        node_id=node_id,
        state=state,
        attempt=attempt,
        error=None,
        created_at=stamp,
        updated_at=stamp,
    )

    row = {
        "id": record.id,
        "kind": kind,
        "instance_id": instance_id,
        "deployment_id": deployment_id,
        "node_id": node_id,
        "state": state,
        "attempt": attempt,
        "error": None,
        "created_at": stamp,
        "updated_at": stamp,
    }
    return RowsOp("tasks.insert", _insert_statement, [row], record)


def _insert_statement(conn: AsyncConnection) -> Insert:
    return insert(Task)


def set_state(
    task_id: str,
    state: str,
    *,
    attempt: int | Keep = KEEP,
    error: str | Keep | None = KEEP,
    node_id: str | Keep | None = KEEP,
    at: float | None = None,
) -> Op[TaskRecord]:
    """Move a task to ``state`` (and change what else is given); the op returns it.

    Raises:
        ValueError: unknown state (at once, not from the op).
        NotFound (from the op): no such task.
    """
    _check_state(state)
    values: dict[str, object] = {"state": state, "updated_at": now() if at is None else at}
    optional: dict[str, object] = {"attempt": attempt, "error": error, "node_id": node_id}
    values.update({k: v for k, v in optional.items() if v is not KEEP})

    async def op(conn: AsyncConnection) -> TaskRecord:
        result = await conn.execute(update(Task).where(Task.id == task_id).values(**values))
        if not result.rowcount:
            raise NotFound("task", task_id)
        return await get_task(conn, task_id)

    return op


def record_state(
    task_id: str,
    state: str,
    *,
    attempt: int,
    error: str | None = None,
    at: float | None = None,
) -> RowsOp[None]:
    """Move a task to ``state`` with this attempt and error, without reading it back.

    The fire-and-forget form of :func:`set_state` (merged with its neighbours into one
    statement by the writer); an unknown task id is skipped.

    Raises:
        ValueError: unknown state (at once).
    """
    _check_state(state)
    row = {
        "b_id": task_id,
        "b_state": state,
        "b_attempt": attempt,
        "b_error": error,
        "b_at": now() if at is None else at,
    }
    return RowsOp("tasks.record_state", _state_statement, [row], None, last_wins=True)


def _state_statement(conn: AsyncConnection) -> Update:
    return (
        update(Task)
        .where(Task.id == bindparam("b_id"))
        .values(
            state=bindparam("b_state"),
            attempt=bindparam("b_attempt"),
            error=bindparam("b_error"),
            updated_at=bindparam("b_at"),
        )
    )


def delete_many(task_ids: Sequence[str]) -> Op[int]:
    """Remove these tasks (unknown ids are skipped); returns how many went."""
    ids = list(dict.fromkeys(task_ids))

    async def op(conn: AsyncConnection) -> int:
        gone = 0
        for part in chunks(ids, 500):
            gone += (await conn.execute(delete(Task).where(Task.id.in_(part)))).rowcount
        return gone

    return op


def prune_finished(before: float, limit: int | None = None) -> Op[int]:
    """Remove succeeded or failed tasks last changed before ``before`` (at most ``limit``
    of them, if given); returns how many."""

    async def op(conn: AsyncConnection) -> int:
        old: ColumnElement[bool] = Task.state.not_in(list(UNFINISHED_TASK_STATES)) & (
            Task.updated_at < before
        )
        if limit is not None:
            some = select(Task.id).where(old).limit(limit)
            old = Task.id.in_(some.scalar_subquery())
        return (await conn.execute(delete(Task).where(old))).rowcount

    return op


def _check_state(state: str) -> None:
    if state not in TASK_STATES:
        raise ValueError(f"unknown task state {state!r}")
