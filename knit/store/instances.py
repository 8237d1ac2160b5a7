"""Container instances: bulk inserts, upserts, status updates (one or many), lookups.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

Reads are :class:`~knit.store.reads.Read` functions; writes are factories returning an
op for the :class:`StoreWriter`. Bulk variants are one Core statement for the whole list
(executemany), which is what keeps up with thousands of instances.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Delete, Insert, Update

from knit.errors import NotFound
from knit.store.models import ContainerInstance, Deployment
from knit.store.ops import Op, RowsOp
from knit.store.reads import Read
from knit.store.records import (
    INSTANCE_STATUSES,
    RESERVING_STATUSES,
    InstanceRecord,
    InstanceStatusUpdate,
)
from knit.store.sql import KEEP, Keep, chunks, now, upsert

LIVE_STATUSES = ("pending", "running", "unknown", "error", "lost")
"""Statuses of an instance that still occupies (or may occupy) its node."""

_ALL_BUT_ID = tuple(c.name for c in ContainerInstance.__table__.columns if c.name != "id")


def _record(row: RowMapping) -> InstanceRecord:
    return InstanceRecord(
        id=row["id"],
        container_id=row["container_id"],
        node_id=row["node_id"],
        deployment_id=row["deployment_id"],
        index=int(row["index"]),
        status=row["status"],
        error=row["error"],
        exit_code=row["exit_code"],
        desired=bool(row["desired"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=int(row["version"]),
        health=row["health"],
        restarts=int(row["restarts"]),
    )


def _row(inst: InstanceRecord) -> dict[str, object]:
    _check_status(inst.status)
    return {
        "id": inst.id,
        "container_id": inst.container_id,
        "node_id": inst.node_id,
        "deployment_id": inst.deployment_id,
        "index": inst.index,
        "status": inst.status,
        "error": inst.error,
        "exit_code": inst.exit_code,
        "desired": inst.desired,
        "created_at": inst.created_at,
        "updated_at": inst.updated_at,
        "version": inst.version,
        "health": inst.health,
        "restarts": inst.restarts,
    }


# --- reads ---------------------------------------------------------------------------------


@Read
def find_instance(conn: Connection, instance_id: str) -> InstanceRecord | None:
    """The instance ``instance_id`` (Knit's id), or None."""
    stmt = select(ContainerInstance).where(ContainerInstance.id == instance_id)
    row = conn.execute(stmt).mappings().first()
    return None if row is None else _record(row)


@Read
def get_instance(conn: Connection, instance_id: str) -> InstanceRecord:
    """The instance ``instance_id`` (Knit's id).

    Raises:
        NotFound: no such instance.
    """
    record = find_instance.sync(conn, instance_id)
    if record is None:
        raise NotFound("instance", instance_id)
    return record


@Read
def find_by_container(conn: Connection, container_id: str) -> InstanceRecord | None:
    """The instance whose Docker container id is ``container_id``, or None."""
    stmt = select(ContainerInstance).where(ContainerInstance.container_id == container_id)
    row = conn.execute(stmt).mappings().first()
    return None if row is None else _record(row)


@Read
def list_instances(
    conn: Connection,
    *,
    deployment_id: str | None = None,
    node_id: str | None = None,
    statuses: Sequence[str] | None = None,
    desired: bool | None = None,
) -> list[InstanceRecord]:
    """Instances matching every filter given, by deployment, index, then age."""
    stmt = select(ContainerInstance).order_by(
        ContainerInstance.deployment_id, ContainerInstance.index, ContainerInstance.created_at
    )
    if deployment_id is not None:
        stmt = stmt.where(ContainerInstance.deployment_id == deployment_id)
    if node_id is not None:
        stmt = stmt.where(ContainerInstance.node_id == node_id)
    if statuses is not None:
        stmt = stmt.where(ContainerInstance.status.in_(list(statuses)))
    if desired is not None:
        stmt = stmt.where(ContainerInstance.desired.is_(desired))
    return [_record(row) for row in conn.execute(stmt).mappings()]


@Read
def count_by_node(conn: Connection, *, statuses: Sequence[str] = LIVE_STATUSES) -> dict[str, int]:
    """How many instances in ``statuses`` each node holds (nodes with none are absent)."""
    stmt = (
        select(ContainerInstance.node_id, func.count())
        .where(ContainerInstance.node_id.is_not(None))
        .where(ContainerInstance.status.in_(list(statuses)))
        .group_by(ContainerInstance.node_id)
    )
    return {str(node): int(count) for node, count in conn.execute(stmt).all()}


def reserved_by_node(conn: Connection) -> dict[str, tuple[float, int]]:
    """The cores and bytes that the instances on each node reserve (their deployments'
    ``resources``; nodes whose instances reserve nothing are absent).

    An instance reserves what its deployment's current spec asks: an instance of an older
    version that asked for other amounts counts at the new ones until it is replaced.
    """
    stmt = (
        select(ContainerInstance.node_id, Deployment.resources, func.count())
        .join(Deployment, Deployment.id == ContainerInstance.deployment_id)
        .where(ContainerInstance.node_id.is_not(None))
        .where(ContainerInstance.status.in_(RESERVING_STATUSES))
        .group_by(ContainerInstance.node_id, Deployment.id)
    )
    reserved: dict[str, tuple[float, int]] = {}
    for node_id, resources, count in conn.execute(stmt).all():
        cpu, memory = (resources or {}).get("cpu"), (resources or {}).get("memory")
        held = reserved.get(str(node_id), (0.0, 0))
        reserved[str(node_id)] = (
            held[0] + count * (float(cpu) if isinstance(cpu, int | float) else 0.0),
            held[1] + count * (int(memory) if isinstance(memory, int | float) else 0),
        )
    return {node: held for node, held in reserved.items() if held != (0.0, 0)}


# --- writes (op factories) -----------------------------------------------------------------


def insert_many(records: Sequence[InstanceRecord]) -> RowsOp[int]:
    """Insert new instances in one statement; the op returns how many.

    Raises (from the op):
        Conflict: an id exists already, or a deployment / node does not exist.
    """
    rows = [_row(r) for r in records]
    return RowsOp("instances.insert", _insert_statement, rows, len(rows))


def upsert_many(records: Sequence[InstanceRecord]) -> RowsOp[int]:
    """Store these instances exactly as given (insert or overwrite every field).

    Raises (from the op):
        Conflict: a deployment / node they name does not exist.
    """
    rows = [_row(r) for r in records]
    return RowsOp("instances.upsert", _upsert_statement, rows, len(rows), last_wins=True)


def _insert_statement(conn: AsyncConnection) -> Insert:
    return insert(ContainerInstance)


def _upsert_statement(conn: AsyncConnection) -> Insert:
    return upsert(conn, ContainerInstance, keys=["id"], update=_ALL_BUT_ID)


def upsert_one(record: InstanceRecord) -> RowsOp[int]:
    """:func:`upsert_many` for one instance (what a DeploymentActor saves)."""
    return upsert_many((record,))


def update_status(
    instance_id: str,
    status: str,
    *,
    at: float | None = None,
    container_id: str | Keep | None = KEEP,
    error: str | Keep | None = KEEP,
    exit_code: int | Keep | None = KEEP,
    node_id: str | Keep | None = KEEP,
    desired: bool | Keep = KEEP,
) -> Op[InstanceRecord]:
    """Change one instance's status (and what else is given); the op returns it.

    Arguments left at ``KEEP`` keep their stored value; None clears a field.

    Raises (from the op):
        NotFound: no such instance.
    """
    _check_status(status)
    values: dict[str, object] = {"status": status, "updated_at": now() if at is None else at}
    optional: dict[str, object] = {
        "container_id": container_id,
        "error": error,
        "exit_code": exit_code,
        "node_id": node_id,
        "desired": desired,
    }
    values.update({k: v for k, v in optional.items() if v is not KEEP})

    async def op(conn: AsyncConnection) -> InstanceRecord:
        result = await conn.execute(
            update(ContainerInstance).where(ContainerInstance.id == instance_id).values(**values)
        )
        if not result.rowcount:
            raise NotFound("instance", instance_id)
        return await get_instance(conn, instance_id)

    return op


def update_statuses(updates: Sequence[InstanceStatusUpdate]) -> RowsOp[int]:
    """Apply many status changes in one statement; the op returns how many were given.

    Unknown instance ids are skipped (an instance removed meanwhile is not an error).
    """
    for u in updates:
        _check_status(u.status)
    params = [
        {
            "b_id": u.instance_id,
            "b_status": u.status,
            "b_container_id": u.container_id,
            "b_error": u.error,
            "b_exit_code": u.exit_code,
            "b_at": u.at,
        }
        for u in updates
    ]
    return RowsOp("instances.update_statuses", _status_statement, params, len(params))


def _status_statement(conn: AsyncConnection) -> Update:
    return (
        update(ContainerInstance)
        .where(ContainerInstance.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            container_id=func.coalesce(bindparam("b_container_id"), ContainerInstance.container_id),
            error=bindparam("b_error"),
            exit_code=bindparam("b_exit_code"),
            updated_at=bindparam("b_at"),
        )
    )


def set_desired(instance_ids: Sequence[str], desired: bool, *, at: float | None = None) -> Op[int]:
    """Say whether the server still wants these instances; returns how many changed."""
    ids = list(dict.fromkeys(instance_ids))
    stamp = now() if at is None else at

    async def op(conn: AsyncConnection) -> int:
        changed = 0
        for part in chunks(ids, 500):
            result = await conn.execute(
                update(ContainerInstance)
                .where(ContainerInstance.id.in_(part), ContainerInstance.desired != desired)
                .values(desired=desired, updated_at=stamp)
            )
            changed += result.rowcount
        return changed

    return op


def delete_many(instance_ids: Sequence[str]) -> Op[int]:
    """Remove these instances (unknown ids are skipped); returns how many went."""
    ids = list(dict.fromkeys(instance_ids))

    async def op(conn: AsyncConnection) -> int:
        gone = 0
        for part in chunks(ids, 500):
            result = await conn.execute(
                delete(ContainerInstance).where(ContainerInstance.id.in_(part))
            )
            gone += result.rowcount
        return gone

    return op


def delete_one(instance_id: str) -> RowsOp[None]:
    """Remove one instance (an unknown id is skipped), without counting.

    The fire-and-forget form of :func:`delete_many`: the writer merges it with its queued
    neighbours into one statement.
    """
    return RowsOp("instances.delete", _delete_statement, [{"b_id": instance_id}], None)


def _delete_statement(conn: AsyncConnection) -> Delete:
    return delete(ContainerInstance).where(ContainerInstance.id == bindparam("b_id"))


def _check_status(status: str) -> None:
    if status not in INSTANCE_STATUSES:
        raise ValueError(f"unknown instance status {status!r}")
