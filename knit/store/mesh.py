"""The WireGuard mesh's members: addresses handed out, keys and endpoints.

Layer: store (adapter). Imports sqlalchemy, ``knit.domain.mesh`` and ``knit.store``'s own
modules. An address is allocated inside the writer's transaction that pins the joining node
(:func:`admit_member`), so two joins never get the same one; a removed node's row stays
(``removed_at``) and its address is never handed out again.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.domain.mesh import allocate
from knit.store.models import MeshMember
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.sql import now


@dataclass(frozen=True, slots=True)
class MeshMemberRecord:
    """A node's place in the mesh.

    Attributes:
        node_id: the node.
        address: its mesh address (no prefix).
        public_key: its WireGuard public key (base64).
        endpoint: where its WireGuard port is reached (``HOST:PORT``), None if unknown.
        joined_at: when it joined.
        removed_at: when it was removed (None: a member).
    """

    node_id: str
    address: str
    public_key: str
    endpoint: str | None
    joined_at: float
    removed_at: float | None = None


@Read
def all_members(conn: Connection) -> list[MeshMemberRecord]:
    """Every row, removed nodes' included, in address order."""
    rows = conn.execute(select(MeshMember)).mappings()
    records = [MeshMemberRecord(**dict(row)) for row in rows]
    return sorted(records, key=lambda r: ipaddress.IPv4Address(r.address))


def admit_member(
    network: ipaddress.IPv4Network,
    node_id: str,
    public_key: str,
    endpoint: str | None,
) -> Op[MeshMemberRecord]:
    """Give a joining node the lowest address never handed out (run it in the transaction
    that pins the node's keys: ``knit.server.membership``).

    Raises (from the op):
        MeshFull: no address is left.
    """

    async def op(conn: AsyncConnection) -> MeshMemberRecord:
        taken = (await conn.execute(select(MeshMember.address))).scalars().all()
        record = MeshMemberRecord(
            node_id=node_id,
            address=allocate(network, taken),
            public_key=public_key,
            endpoint=endpoint,
            joined_at=now(),
        )
        await conn.execute(
            insert(MeshMember).values(
                node_id=record.node_id,
                address=record.address,
                public_key=record.public_key,
                endpoint=record.endpoint,
                joined_at=record.joined_at,
                removed_at=None,
            )
        )
        return record

    return op


def set_endpoint(node_id: str, endpoint: str) -> Op[None]:
    """Record a member's new endpoint."""

    async def op(conn: AsyncConnection) -> None:
        await conn.execute(
            update(MeshMember).where(MeshMember.node_id == node_id).values(endpoint=endpoint)
        )

    return op


def remove_member(node_id: str, at: float) -> Op[None]:
    """Mark a member removed (its address stays taken)."""

    async def op(conn: AsyncConnection) -> None:
        await conn.execute(
            update(MeshMember)
            .where(MeshMember.node_id == node_id, MeshMember.removed_at.is_(None))
            .values(removed_at=at)
        )

    return op


__all__ = ["MeshMemberRecord", "admit_member", "all_members", "remove_member", "set_endpoint"]
