"""Nodes: heartbeat upserts (one or thousands per statement), health, drain, lookups.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

Reads are :class:`~knit.store.reads.Read` functions (``f(conn, ...)``, run in a read
thread). Writes are factories returning an op for the :class:`StoreWriter`
(``await writer.submit(op)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import RowMapping, String, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from knit.errors import NotFound
from knit.store.models import Node
from knit.store.ops import Op, RowsOp
from knit.store.reads import Read
from knit.store.records import NODE_STATUSES, HeartbeatUpsert, NodeRecord, str_map
from knit.store.sql import Excluded, chunks, upsert

_HEARTBEAT_UPDATES = (
    "hostname",
    "labels",
    "cpus",
    "memory_bytes",
    "docker_version",
    "agent_version",
    "public_key",
    "status",
    "last_heartbeat",
)
_ALL_BUT_ID = tuple(c.name for c in Node.__table__.columns if c.name != "id")


def _record(row: RowMapping) -> NodeRecord:
    return NodeRecord(
        id=row["id"],
        hostname=row["hostname"],
        status=row["status"],
        last_heartbeat=row["last_heartbeat"],
        eligible=bool(row["eligible"]),
        labels=str_map(row["labels"]),
        cpus=float(row["cpus"]),
        memory_bytes=int(row["memory_bytes"]),
        docker_version=row["docker_version"],
        agent_version=row["agent_version"],
        public_key=row["public_key"],
        address=row["address"],
        registered_at=row["registered_at"],
    )


def _row(node: NodeRecord) -> dict[str, object]:
    return {
        "id": node.id,
        "hostname": node.hostname,
        "status": node.status,
        "last_heartbeat": node.last_heartbeat,
        "eligible": node.eligible,
        "labels": str_map(node.labels),
        "cpus": node.cpus,
        "memory_bytes": node.memory_bytes,
        "docker_version": node.docker_version,
        "agent_version": node.agent_version,
        "public_key": node.public_key,
        "address": node.address,
        "registered_at": node.registered_at,
    }


# --- reads ---------------------------------------------------------------------------------


@Read
def find_node(conn: Connection, node_id: str) -> NodeRecord | None:
    """The node ``node_id``, or None."""
    row = conn.execute(select(Node).where(Node.id == node_id)).mappings().first()
    return None if row is None else _record(row)


@Read
def get_node(conn: Connection, node_id: str) -> NodeRecord:
    """The node ``node_id``.

    Raises:
        NotFound: no such node.
    """
    node = find_node.sync(conn, node_id)
    if node is None:
        raise NotFound("node", node_id)
    return node


@Read
def list_nodes(
    conn: Connection, *, status: str | None = None, eligible: bool | None = None
) -> list[NodeRecord]:
    """Every node (optionally only those with ``status`` / ``eligible``), by hostname."""
    stmt = select(Node).order_by(Node.hostname, Node.id)
    if status is not None:
        stmt = stmt.where(Node.status == status)
    if eligible is not None:
        stmt = stmt.where(Node.eligible == eligible)
    return [_record(row) for row in conn.execute(stmt).mappings()]


# --- writes (op factories) -----------------------------------------------------------------


def record_heartbeats(beats: Iterable[HeartbeatUpsert]) -> RowsOp[int]:
    """Upsert the nodes of many heartbeats in one statement; the op returns how many.

    Each node becomes "healthy" with ``last_heartbeat`` set; new nodes are registered
    (eligible, ``registered_at`` = the heartbeat's time); a known node keeps ``eligible``,
    ``registered_at``, and its ``address`` unless the heartbeat names one. When one node
    appears several times, its newest heartbeat wins. The hostname and the versions an
    agent reports are cut to their columns' lengths: PostgreSQL refuses a longer value
    (SQLite would store it whole), and a heartbeat must not fail for a long name.
    """
    newest: dict[str, HeartbeatUpsert] = {}
    for beat in beats:
        seen = newest.get(beat.node_id)
        if seen is None or beat.at >= seen.at:
            newest[beat.node_id] = beat
    rows = [
        {
            "id": b.node_id,
            "hostname": b.hostname[:_HOSTNAME_LENGTH],
            "status": "healthy",
            "last_heartbeat": b.at,
            "eligible": True,
            "labels": str_map(b.labels),
            "cpus": float(b.cpus),
            "memory_bytes": int(b.memory_bytes),
            "docker_version": b.docker_version[:_VERSION_LENGTH],
            "agent_version": b.agent_version[:_VERSION_LENGTH],
            "public_key": b.public_key,
            "address": b.address,
            "registered_at": b.at,
        }
        for b in newest.values()
    ]

    return RowsOp("nodes.record_heartbeats", _heartbeat_statement, rows, len(rows))


def _length(column: str) -> int:
    """The declared length of a ``VARCHAR`` column of ``nodes``."""
    kind = Node.__table__.c[column].type
    assert isinstance(kind, String) and kind.length is not None, column
    return kind.length


_HOSTNAME_LENGTH = _length("hostname")
_VERSION_LENGTH = min(_length("docker_version"), _length("agent_version"))


def _keep_address(excluded: Excluded) -> Mapping[str, object]:
    return {"address": func.coalesce(excluded["address"], Node.address)}


def _heartbeat_statement(conn: AsyncConnection) -> Insert:
    return upsert(conn, Node, keys=["id"], update=_HEARTBEAT_UPDATES, overrides=_keep_address)


def _upsert_statement(conn: AsyncConnection) -> Insert:
    return upsert(conn, Node, keys=["id"], update=_ALL_BUT_ID)


def record_heartbeat(beat: HeartbeatUpsert) -> RowsOp[int]:
    """:func:`record_heartbeats` for one heartbeat."""
    return record_heartbeats((beat,))


def upsert_nodes(nodes: Sequence[NodeRecord]) -> RowsOp[int]:
    """Store these nodes exactly as given (insert or overwrite every field)."""
    for node in nodes:
        _check_status(node.status)
    rows = [_row(node) for node in nodes]
    return RowsOp("nodes.upsert", _upsert_statement, rows, len(rows), last_wins=True)


def upsert_node(node: NodeRecord) -> RowsOp[int]:
    """:func:`upsert_nodes` for one node (what a NodeActor saves)."""
    return upsert_nodes((node,))


def set_status(node_ids: Sequence[str], status: str) -> Op[int]:
    """Set the status of these nodes (unknown ids are skipped); returns how many changed."""
    _check_status(status)
    ids = list(dict.fromkeys(node_ids))

    async def op(conn: AsyncConnection) -> int:
        changed = 0
        for part in chunks(ids, 500):
            result = await conn.execute(
                update(Node).where(Node.id.in_(part), Node.status != status).values(status=status)
            )
            changed += result.rowcount
        return changed

    return op


def mark_unhealthy(node_ids: Sequence[str]) -> Op[int]:
    """Mark these nodes "unhealthy"; returns how many were healthy."""
    return set_status(node_ids, "unhealthy")


def mark_stale_unhealthy(before: float) -> Op[list[str]]:
    """Mark "unhealthy" every healthy node whose last heartbeat is older than ``before``.

    The op returns the ids it changed (a sweep for when actors are not running).
    """

    async def op(conn: AsyncConnection) -> list[str]:
        stale = select(Node.id).where(
            Node.status == "healthy",
            (Node.last_heartbeat < before) | Node.last_heartbeat.is_(None),
        )
        ids = list((await conn.execute(stale)).scalars())
        for part in chunks(ids, 500):
            await conn.execute(update(Node).where(Node.id.in_(part)).values(status="unhealthy"))
        return ids

    return op


def set_eligible(node_id: str, eligible: bool) -> Op[NodeRecord]:
    """Drain (False) or un-drain (True) a node; the op returns the node.

    Raises (from the op):
        NotFound: no such node.
    """

    async def op(conn: AsyncConnection) -> NodeRecord:
        await conn.execute(update(Node).where(Node.id == node_id).values(eligible=eligible))
        return await get_node(conn, node_id)

    return op


def set_address(node_id: str, address: str | None) -> Op[NodeRecord]:
    """Record where other nodes reach ``node_id`` (e.g. its mesh IP); returns the node.

    Raises (from the op):
        NotFound: no such node.
    """

    async def op(conn: AsyncConnection) -> NodeRecord:
        await conn.execute(update(Node).where(Node.id == node_id).values(address=address))
        return await get_node(conn, node_id)

    return op


def _check_status(status: str) -> None:
    if status not in NODE_STATUSES:
        raise ValueError(f"unknown node status {status!r}")
