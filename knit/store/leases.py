"""The leader lease and the servers of a database: the SQL of Knit's leader election.

Layer: store (adapter). Imports sqlalchemy and ``knit.store``'s models.

Several servers on one PostgreSQL database elect their leader with one row of ``leases``
(decision 0024): a server *acquires* it when it is free or its deadline has passed (the
``epoch`` grows by one with each new holder), *renews* it well before its deadline, and
*releases* it when it stops. Deadlines are the database's clock, never a server's, so
servers whose clocks disagree still agree on who leads. Every statement here runs in a
write transaction (:meth:`knit.store.db.Database.transaction`): on PostgreSQL that takes
the store's advisory write lock first, so a lease changes hands strictly between two write
transactions, never during one. That is what makes :func:`holds` a fence: a leader's write
transaction that checks it first either sees its own lease still held, or fails.

The statements are portable (SQLite too) so that the single-server default could use them;
only the clock differs (:func:`db_now`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, literal_column, select, text, update
from sqlalchemy import insert as sql_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.store.models import Lease, Server

WRITE_LOCK_KEY = 0x6B6E6974  # "knit"
"""The PostgreSQL advisory lock every write transaction takes first (``knit.store.db``)."""

LEADER = "leader"
"""The name of the leader's lease."""


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A lease as stored: who holds it, since when, until when (database clock, seconds
    since the epoch), and the database's clock when it was read."""

    name: str
    holder: str
    epoch: int
    acquired_at: float
    expires_at: float
    now: float

    @property
    def held(self) -> bool:
        """Whether its deadline has not passed (when it was read)."""
        return self.expires_at > self.now


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """A server that uses the database, as it last wrote itself (``knit servers``)."""

    id: str
    holder: str
    api_url: str
    version: str
    started_at: float
    last_seen: float


def db_now(dialect: str) -> ColumnElement[float]:
    """The database's clock in seconds since the epoch, as a SQL expression (the wall
    clock at the statement, not at the transaction's start)."""
    if dialect == "postgresql":
        return literal_column("extract(epoch from clock_timestamp())", Float)
    return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)


async def acquire(conn: AsyncConnection, holder: str, ttl: float) -> LeaseRecord:
    """Take the leader lease for ``ttl`` seconds if nobody holds it (never held, released,
    or past its deadline); the lease as it is then: ``holder``'s, or another's that holds it.

    A holder that holds it already does not take it again: a server restarted under the
    same id is a new holder (its id and a new nonce) and waits like any other.

    On PostgreSQL it takes the store's write lock first (whatever engine ``conn`` is of):
    the lease changes hands between two write transactions, never during one.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"))
    now = db_now(conn.dialect.name)
    taken = await conn.execute(
        update(Lease)
        .where(Lease.name == LEADER, Lease.expires_at <= now)
        .values(holder=holder, epoch=Lease.epoch + 1, acquired_at=now, expires_at=now + ttl)
        .returning(Lease.epoch)
    )
    if taken.first() is None:
        held = await read_lease(conn)
        if held is not None:
            return held
        await conn.execute(
            sql_insert(Lease).values(
                name=LEADER, holder=holder, epoch=1, acquired_at=now, expires_at=now + ttl
            )
        )
    lease = await read_lease(conn)
    assert lease is not None  # (written in this transaction)
    return lease


def _held_by(holder: str, epoch: int, now: ColumnElement[float]) -> ColumnElement[bool]:
    """The leader lease is ``holder``'s of ``epoch``, its deadline still ahead at ``now``."""
    return and_(
        Lease.name == LEADER,
        Lease.holder == holder,
        Lease.epoch == epoch,
        Lease.expires_at > now,
    )


async def renew(conn: AsyncConnection, holder: str, epoch: int, ttl: float) -> float | None:
    """Move the deadline of a lease ``holder`` still holds to ``ttl`` seconds from now;
    the new deadline, or None if the lease is not its (any more) or its deadline passed."""
    now = db_now(conn.dialect.name)
    renewed = await conn.execute(
        update(Lease)
        .where(_held_by(holder, epoch, now))
        .values(expires_at=now + ttl)
        .returning(Lease.expires_at)
    )
    row = renewed.first()
    return None if row is None else float(row[0])


async def release(conn: AsyncConnection, holder: str, epoch: int) -> bool:
    """End ``holder``'s lease now (a server that stops): another may take it at once.
    False if it was not held by ``holder`` any more."""
    now = db_now(conn.dialect.name)
    released = await conn.execute(
        update(Lease)
        .where(_held_by(holder, epoch, now))
        .values(expires_at=now)
        .returning(Lease.epoch)
    )
    return released.first() is not None


async def read_lease(conn: AsyncConnection) -> LeaseRecord | None:
    """The leader lease as stored (None: never taken)."""
    result = await conn.execute(_lease_query(conn.dialect.name))
    row = result.first()
    return None if row is None else LeaseRecord(*row)


def current_lease(conn: Connection) -> LeaseRecord | None:
    """The leader lease as stored (a read function for ``Store.read``)."""
    row = conn.execute(_lease_query(conn.dialect.name)).first()
    return None if row is None else LeaseRecord(*row)


def _lease_query(dialect: str) -> Any:
    return select(
        Lease.name,
        Lease.holder,
        Lease.epoch,
        Lease.acquired_at,
        Lease.expires_at,
        db_now(dialect),
    ).where(Lease.name == LEADER)


def holds(conn: Connection, holder: str, epoch: int) -> bool:
    """Whether ``holder`` still holds the leader lease of ``epoch`` with its deadline ahead:
    the fence a leader's write transaction checks first (``knit.store.db``)."""
    now = db_now(conn.dialect.name)
    found = conn.execute(select(Lease.epoch).where(_held_by(holder, epoch, now)))
    return found.first() is not None


async def record_server(
    conn: AsyncConnection,
    server_id: str,
    holder: str,
    api_url: str,
    version: str,
    started_at: float,
) -> None:
    """Write (or rewrite) this server's row, seen now by the database's clock."""
    now = db_now(conn.dialect.name)
    values = {
        "holder": holder,
        "api_url": api_url[:512],
        "version": version[:64],
        "started_at": started_at,
        "last_seen": now,
    }
    changed = await conn.execute(update(Server).where(Server.id == server_id).values(**values))
    if changed.rowcount == 0:
        await conn.execute(sql_insert(Server).values(id=server_id, **values))


def all_servers(conn: Connection) -> tuple[list[ServerRecord], float]:
    """Every server row, by id, and the database's clock (a read function)."""
    columns = (
        Server.id,
        Server.holder,
        Server.api_url,
        Server.version,
        Server.started_at,
        Server.last_seen,
    )
    rows = conn.execute(select(*columns).order_by(Server.id)).all()
    now = conn.execute(select(db_now(conn.dialect.name))).scalar_one()
    return [ServerRecord(*row) for row in rows], float(now)


__all__ = [
    "LEADER",
    "LeaseRecord",
    "ServerRecord",
    "acquire",
    "all_servers",
    "current_lease",
    "db_now",
    "holds",
    "read_lease",
    "record_server",
    "release",
    "renew",
]
