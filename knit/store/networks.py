"""Networks and their Docker ids per node.

Layer: store (adapter). Imports sqlalchemy, ``knit.errors`` and ``knit.store``'s own modules.

Reads are :class:`~knit.store.reads.Read` functions; writes are factories returning an
op for the :class:`StoreWriter`. A network cannot be deleted while a deployment row names it in its
``network_attachments`` — including a deployment being deleted, whose containers may
still be attached.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping, delete, exists, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Conflict, NotFound
from knit.store.models import Deployment, Network, NodeNetwork
from knit.store.ops import Op
from knit.store.reads import Read
from knit.store.records import NetworkRecord, NodeNetworkRecord, new_id
from knit.store.sql import now, upsert


def _record(row: RowMapping) -> NetworkRecord:
    return NetworkRecord(
        id=row["id"],
        name=row["name"],
        driver=row["driver"],
        subnet=row["subnet"],
        created_at=row["created_at"],
    )


def _node_network(row: RowMapping) -> NodeNetworkRecord:
    return NodeNetworkRecord(
        node_id=row["node_id"],
        network_id=row["network_id"],
        docker_id=row["docker_id"],
        updated_at=row["updated_at"],
    )


# --- reads ---------------------------------------------------------------------------------


@Read
def find_network(conn: Connection, network_id: str) -> NetworkRecord | None:
    """The network ``network_id``, or None."""
    row = conn.execute(select(Network).where(Network.id == network_id)).mappings().first()
    return None if row is None else _record(row)


@Read
def get_network(conn: Connection, network_id: str) -> NetworkRecord:
    """The network ``network_id``.

    Raises:
        NotFound: no such network.
    """
    record = find_network.sync(conn, network_id)
    if record is None:
        raise NotFound("network", network_id)
    return record


@Read
def get_network_by_name(conn: Connection, name: str) -> NetworkRecord:
    """The network named ``name``.

    Raises:
        NotFound: no such network.
    """
    row = conn.execute(select(Network).where(Network.name == name)).mappings().first()
    if row is None:
        raise NotFound("network", name)
    return _record(row)


@Read
def list_networks(conn: Connection, *, names: Sequence[str] | None = None) -> list[NetworkRecord]:
    """Every network (or those named in ``names``; unknown names are skipped), by name."""
    stmt = select(Network).order_by(Network.name)
    if names is not None:
        stmt = stmt.where(Network.name.in_(list(names)))
    return [_record(row) for row in conn.execute(stmt).mappings()]


@Read
def list_node_networks(
    conn: Connection, *, node_id: str | None = None, network_id: str | None = None
) -> list[NodeNetworkRecord]:
    """Docker ids of networks on nodes, filtered by node and/or network."""
    stmt = select(NodeNetwork).order_by(NodeNetwork.network_id, NodeNetwork.node_id)
    if node_id is not None:
        stmt = stmt.where(NodeNetwork.node_id == node_id)
    if network_id is not None:
        stmt = stmt.where(NodeNetwork.network_id == network_id)
    return [_node_network(row) for row in conn.execute(stmt).mappings()]


# --- writes (op factories) -----------------------------------------------------------------


def create(
    name: str,
    *,
    driver: str = "bridge",
    subnet: str | None = None,
    network_id: str | None = None,
    at: float | None = None,
) -> Op[NetworkRecord]:
    """Store a new network; the op returns it.

    Raises (from the op):
        Conflict: a network with this name exists.
    """
    record = NetworkRecord(
        id=network_id or new_id(),
        name=name,
        driver=driver,
        subnet=subnet,
        created_at=now() if at is None else at,
    )

    async def op(conn: AsyncConnection) -> NetworkRecord:
        if await conn.scalar(select(exists().where(Network.name == name))):
            raise Conflict(f"a network named {name!r} already exists")
        await conn.execute(insert(Network).values(**record.to_json()))
        return record

    return op


def delete_network(network_id: str) -> Op[None]:
    """Remove a network that no deployment uses (with its per-node Docker ids).

    Raises (from the op):
        NotFound: no such network.
        Conflict: a deployment (live or being deleted) attaches to it.
    """

    async def op(conn: AsyncConnection) -> None:
        network = await get_network(conn, network_id)
        # The attachments are a JSON list: scanning them here keeps the SQL portable, and
        # there are few deployments compared with instances.
        rows = await conn.execute(select(Deployment.name, Deployment.network_attachments))
        users = sorted(name for name, attached in rows if network.name in (attached or ()))
        if users:
            raise Conflict(f"network {network.name!r} is used by deployment(s) {', '.join(users)}")
        await conn.execute(delete(NodeNetwork).where(NodeNetwork.network_id == network_id))
        await conn.execute(delete(Network).where(Network.id == network_id))

    return op


def set_node_network(
    node_id: str, network_id: str, docker_id: str, *, at: float | None = None
) -> Op[NodeNetworkRecord]:
    """Record Docker's id of ``network_id`` on ``node_id`` (insert or replace).

    Raises (from the op):
        Conflict: the node or the network does not exist.
    """
    record = NodeNetworkRecord(
        node_id=node_id,
        network_id=network_id,
        docker_id=docker_id,
        updated_at=now() if at is None else at,
    )

    async def op(conn: AsyncConnection) -> NodeNetworkRecord:
        stmt = upsert(
            conn,
            NodeNetwork,
            keys=["node_id", "network_id"],
            update=("docker_id", "updated_at"),
        )
        await conn.execute(stmt, [record.to_json()])
        return record

    return op


def forget_node_network(node_id: str, network_id: str) -> Op[bool]:
    """Forget Docker's id of ``network_id`` on ``node_id``; False if none was recorded."""

    async def op(conn: AsyncConnection) -> bool:
        result = await conn.execute(
            delete(NodeNetwork).where(
                NodeNetwork.node_id == node_id, NodeNetwork.network_id == network_id
            )
        )
        return bool(result.rowcount)

    return op
