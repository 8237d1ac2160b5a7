"""The cluster's keys, the nodes' pinned keys, and the removed nodes.

Layer: store (adapter). Imports sqlalchemy and ``knit.store``'s own modules.

Values here are either public (a node's public keys) or already encrypted by the caller
(``cluster_secrets``): the store never sees a key in clear.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict, NotFound
from knit.store.models import ClusterSecret, Node, NodeKey, RevokedNode
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.sql import now


@dataclass(frozen=True, slots=True)
class NodeKeyRecord:
    """A joined node's pinned keys.

    Attributes:
        node_id: the id the server gave it.
        public_key: its X25519 public key (base64): secrets are sealed to it, and the keys
            of its messages' MACs are derived from it.
        nats_key: its NATS user public key (``U...``), named by its user JWT.
        join_token_id: the join token it came with (None: joined by the server itself).
        joined_at: when.
    """

    node_id: str
    public_key: str
    nats_key: str
    join_token_id: str | None
    joined_at: float


# --- reads ---------------------------------------------------------------------------------


@Read
def find_secret(conn: Connection, name: str) -> str | None:
    """The encrypted value of the cluster secret ``name``, or None."""
    stmt = select(ClusterSecret.value_encrypted).where(ClusterSecret.name == name)
    return conn.execute(stmt).scalar()


@Read
def all_node_keys(conn: Connection) -> list[NodeKeyRecord]:
    """Every joined node's keys."""
    rows = conn.execute(select(NodeKey)).mappings()
    return [
        NodeKeyRecord(
            node_id=row["node_id"],
            public_key=row["public_key"],
            nats_key=row["nats_key"],
            join_token_id=row["join_token_id"],
            joined_at=row["joined_at"],
        )
        for row in rows
    ]


@Read
def revocations(conn: Connection) -> dict[str, float]:
    """Removed nodes' NATS user keys → when they were removed."""
    rows = conn.execute(select(RevokedNode.nats_key, RevokedNode.revoked_at))
    return {key: at for key, at in rows}


# --- writes --------------------------------------------------------------------------------


def put_secret(name: str, value_encrypted: str) -> Op[str]:
    """Store a cluster secret unless one of that name exists; the op returns the stored one
    (the existing one if another server stored it first)."""

    async def op(conn: AsyncConnection) -> str:
        existing = await find_secret(conn, name)
        if existing is not None:
            return existing
        await conn.execute(
            insert(ClusterSecret).values(
                name=name, value_encrypted=value_encrypted, created_at=now()
            )
        )
        return value_encrypted

    return op


def pin_node(record: NodeKeyRecord) -> Op[NodeKeyRecord]:
    """Pin a joining node's keys.

    Raises (from the op):
        Conflict: the node id is or was a node's (joined, known from heartbeats, or
            removed), or the NATS key is already pinned or was revoked.
    """

    async def op(conn: AsyncConnection) -> NodeKeyRecord:
        taken = await conn.execute(
            select(NodeKey.node_id).where(
                (NodeKey.node_id == record.node_id) | (NodeKey.nats_key == record.nats_key)
            )
        )
        if taken.first() is not None:
            raise Conflict(f"node {record.node_id} or its bus key has joined already")
        known = await conn.execute(select(Node.id).where(Node.id == record.node_id))
        if known.first() is not None:
            raise Conflict(f"node id {record.node_id} is taken")
        revoked = await conn.execute(
            select(RevokedNode.nats_key).where(
                (RevokedNode.nats_key == record.nats_key) | (RevokedNode.node_id == record.node_id)
            )
        )
        if revoked.first() is not None:
            raise Conflict("this node id or bus key belongs to a removed node")
        await conn.execute(
            insert(NodeKey).values(
                node_id=record.node_id,
                public_key=record.public_key,
                nats_key=record.nats_key,
                join_token_id=record.join_token_id,
                joined_at=record.joined_at,
            )
        )
        return record

    return op


def remove_node(node_id: str, at: float | None = None) -> Op[NodeKeyRecord | None]:
    """Remove a node: forget its row and its keys, and revoke its bus identity.

    The op returns the keys it had (None for a node that never joined: an open bus's).

    Raises (from the op):
        NotFound: no node and no joined keys with this id.
    """
    stamp = now() if at is None else at

    async def op(conn: AsyncConnection) -> NodeKeyRecord | None:
        row = (
            (await conn.execute(select(NodeKey).where(NodeKey.node_id == node_id)))
            .mappings()
            .first()
        )
        deleted = await conn.execute(delete(Node).where(Node.id == node_id))
        if row is None:
            if not deleted.rowcount:
                raise NotFound("node", node_id)
            return None
        await conn.execute(delete(NodeKey).where(NodeKey.node_id == node_id))
        await conn.execute(
            insert(RevokedNode).values(nats_key=row["nats_key"], node_id=node_id, revoked_at=stamp)
        )
        return NodeKeyRecord(
            node_id=row["node_id"],
            public_key=row["public_key"],
            nats_key=row["nats_key"],
            join_token_id=row["join_token_id"],
            joined_at=row["joined_at"],
        )

    return op


__all__ = [
    "NodeKeyRecord",
    "all_node_keys",
    "find_secret",
    "pin_node",
    "put_secret",
    "remove_node",
    "revocations",
]
