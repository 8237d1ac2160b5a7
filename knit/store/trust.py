"""The cluster's keys, the nodes' pinned keys, and the removed nodes.

Layer: store (adapter). Imports sqlalchemy and ``knit.store``'s own modules.

Values here are either public (a node's public keys) or already encrypted by the caller
(``cluster_secrets``): the store never sees a key in clear.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import Double, String, bindparam, delete, exists, insert, select
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


_PIN = insert(NodeKey).from_select(
    ["node_id", "public_key", "nats_key", "join_token_id", "joined_at"],
    select(
        bindparam("node_id", type_=String()),
        bindparam("public_key", type_=String()),
        bindparam("nats_key", type_=String()),
        bindparam("join_token_id", type_=String()),
        bindparam("joined_at", type_=Double()),
    ).where(
        ~exists().where(Node.id == bindparam("node_id"))
        & ~exists().where(
            (RevokedNode.nats_key == bindparam("nats_key"))
            | (RevokedNode.node_id == bindparam("node_id"))
        )
    ),
)
"""Pin a node unless its id was ever a node's or its id or key was revoked. Built once: a
join's cost was mostly building its statements."""


def pin_node(record: NodeKeyRecord, *, admit: Op[str | None] | None = None) -> Op[NodeKeyRecord]:
    """Pin a joining node's keys (after ``admit``, in the same transaction: spending its
    join token, whose id the op records).

    One statement: the insert happens only if the node id was never a node's (no row in
    ``nodes``) and neither the id nor the NATS key was revoked; the table's keys refuse an
    id or a NATS key already pinned.

    Raises (from the op):
        Conflict: the node id is or was a node's (joined, known from heartbeats, or
            removed), or the NATS key is already pinned or was revoked.
        what ``admit`` raises (then nothing is written).
    """

    async def op(conn: AsyncConnection) -> NodeKeyRecord:
        pinned = record
        if admit is not None:
            pinned = replace(record, join_token_id=await admit(conn))
        # (An id or key already pinned breaks the table's keys: IntegrityError, Conflict.)
        inserted = await conn.execute(
            _PIN,
            {
                "node_id": pinned.node_id,
                "public_key": pinned.public_key,
                "nats_key": pinned.nats_key,
                "join_token_id": pinned.join_token_id,
                "joined_at": pinned.joined_at,
            },
        )
        if not inserted.rowcount:
            raise Conflict(
                f"node id {pinned.node_id} or its bus key is, or was, a node's: join as a new node"
            )
        return pinned

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
