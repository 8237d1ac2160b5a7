"""Events: an append-only log of what happened, listed newest first.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

Events are ordered by ``(at, id)``: ``at`` is the time they happened, the random id breaks
ties so pages never skip or repeat one. :func:`list_events` pages backwards from a
``before`` cursor (the id of the last event of the previous page). Rows carry the ids of the
entities they mention without foreign keys: events outlive nodes and deployments; prune
them by age with :func:`prune`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, RowMapping, delete, insert, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from knit.errors import NotFound
from knit.store.models import Event
from knit.store.ops import Op, RowsOp
from knit.store.reads import Read
from knit.store.records import EventRecord, new_id
from knit.store.sql import now

MAX_PAGE = 1000
"""The most events one :func:`list_events` call returns."""


def _record(row: RowMapping) -> EventRecord:
    return EventRecord(
        id=row["id"],
        at=row["at"],
        kind=row["kind"],
        message=row["message"],
        node_id=row["node_id"],
        deployment_id=row["deployment_id"],
        instance_id=row["instance_id"],
        task_id=row["task_id"],
    )


@Read
def list_events(
    conn: Connection,
    *,
    deployment_id: str | None = None,
    node_id: str | None = None,
    instance_id: str | None = None,
    kinds: Sequence[str] | None = None,
    limit: int = 100,
    before: str | None = None,
) -> list[EventRecord]:
    """Events matching every filter given, newest first.

    Args:
        conn: a read connection.
        deployment_id: only events about this deployment.
        node_id: only events about this node.
        instance_id: only events about this instance.
        kinds: only events of these kinds.
        limit: at most this many (capped at ``MAX_PAGE``).
        before: the id of an event: only events older than it (the next page).

    Raises:
        NotFound: ``before`` names no event (it was pruned, or never existed).
    """
    stmt = select(Event).order_by(Event.at.desc(), Event.id.desc())
    stmt = stmt.limit(max(0, min(limit, MAX_PAGE)))
    if deployment_id is not None:
        stmt = stmt.where(Event.deployment_id == deployment_id)
    if node_id is not None:
        stmt = stmt.where(Event.node_id == node_id)
    if instance_id is not None:
        stmt = stmt.where(Event.instance_id == instance_id)
    if kinds is not None:
        stmt = stmt.where(Event.kind.in_(list(kinds)))
    if before is not None:
        cursor = conn.execute(select(Event.at, Event.id).where(Event.id == before)).first()
        if cursor is None:
            raise NotFound("event", before)
        stmt = stmt.where(tuple_(Event.at, Event.id) < tuple_(cursor.at, cursor.id))
    return [_record(row) for row in conn.execute(stmt).mappings()]


def append_many(events: Sequence[EventRecord]) -> RowsOp[int]:
    """Append events in one statement; the op returns how many.

    Build each with :meth:`EventRecord.new` (which picks the id).
    """
    rows = [
        {
            "id": e.id,
            "at": e.at,
            "kind": e.kind,
            "message": e.message,
            "node_id": e.node_id,
            "deployment_id": e.deployment_id,
            "instance_id": e.instance_id,
            "task_id": e.task_id,
        }
        for e in events
    ]

    return RowsOp("events.append", _insert_statement, rows, len(rows))


def _insert_statement(conn: AsyncConnection) -> Insert:
    return insert(Event)


def append(
    kind: str,
    message: str,
    *,
    node_id: str | None = None,
    deployment_id: str | None = None,
    instance_id: str | None = None,
    task_id: str | None = None,
    at: float | None = None,
) -> RowsOp[int]:
    """Append one event happening now (or ``at``)."""
    # The row of ``append_many((EventRecord.new(...),))`` without the record: the server
    # appends thousands of events per second.
    row = {
        "id": new_id(),
        "at": now() if at is None else at,
        "kind": kind,
        "message": message,
        "node_id": node_id,
        "deployment_id": deployment_id,
        "instance_id": instance_id,
        "task_id": task_id,
    }
    return RowsOp("events.append", _insert_statement, [row], 1)


def prune(before: float, limit: int | None = None) -> Op[int]:
    """Remove events older than ``before`` (the oldest ``limit`` of them, if given);
    returns how many went."""

    async def op(conn: AsyncConnection) -> int:
        old: ColumnElement[bool] = Event.at < before
        if limit is not None:
            oldest = select(Event.id).where(old).order_by(Event.at).limit(limit)
            old = Event.id.in_(oldest.scalar_subquery())
        return (await conn.execute(delete(Event).where(old))).rowcount

    return op
