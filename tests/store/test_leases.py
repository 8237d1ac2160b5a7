"""The leader lease: one holder at a time, by the database's clock, and the fence that
refuses a deposed leader's writes (PostgreSQL; knit.store.leases, knit.store.db)."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.errors import Fenced
from knit.store import Store, leases, open_store
from knit.store.db import LeaseFence

pytestmark = pytest.mark.anyio


async def test_one_holder_at_a_time_until_its_deadline(store: Store) -> None:
    db = store.db
    async with db.transaction() as conn:
        first = await leases.acquire(conn, "a/1", ttl=0.5)
    assert (first.holder, first.epoch) == ("a/1", 1) and first.held
    async with db.transaction() as conn:
        assert (await leases.acquire(conn, "b/1", ttl=5)).holder == "a/1"
        # Holding it already is not taking it again (a restarted server waits too).
        assert (await leases.acquire(conn, "a/1", ttl=5)).epoch == 1
        assert await leases.renew(conn, "a/1", 1, ttl=0.5) is not None
        assert await leases.renew(conn, "b/1", 1, ttl=5) is None
    await anyio.sleep(0.7)
    async with db.transaction() as conn:
        assert await leases.renew(conn, "a/1", 1, ttl=5) is None  # its deadline passed
        second = await leases.acquire(conn, "b/1", ttl=5)
    assert (second.holder, second.epoch) == ("b/1", 2)
    assert second.acquired_at >= first.acquired_at
    async with db.transaction() as conn:
        assert not await leases.release(conn, "a/1", 1)
        assert await leases.release(conn, "b/1", 2)
        third = await leases.acquire(conn, "a/2", ttl=5)  # released: free at once
    assert (third.holder, third.epoch) == ("a/2", 3)
    held = await store.read(leases.current_lease)
    assert held is not None and held.holder == "a/2" and held.held


async def test_servers_are_recorded_and_listed(store: Store) -> None:
    async with store.db.transaction() as conn:
        await leases.record_server(conn, "s1", "s1/x", "http://127.0.0.1:1", "0.1", 10.0)
        await leases.record_server(conn, "s0", "s0/y", "http://127.0.0.1:2", "0.1", 11.0)
        await leases.record_server(conn, "s1", "s1/z", "http://127.0.0.1:3", "0.2", 12.0)
    servers, now = await store.read(leases.all_servers)
    assert [(s.id, s.holder, s.api_url, s.started_at) for s in servers] == [
        ("s0", "s0/y", "http://127.0.0.1:2", 11.0),
        ("s1", "s1/z", "http://127.0.0.1:3", 12.0),
    ]
    assert all(abs(s.last_seen - now) < 5 for s in servers)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_deposed_leaders_writes_are_refused(store: Store, db_url: str) -> None:
    async with store.db.transaction() as conn:
        lease = await leases.acquire(conn, "a/1", ttl=0.5)
    fence = LeaseFence("a/1", lease.epoch)

    async def write_server(conn: AsyncConnection) -> None:
        await leases.record_server(conn, "a", "a/1", "http://x", "0", 1.0)

    async with open_store(db_url, fence=fence) as fenced:
        await fenced.write(write_server)  # held: written
        await anyio.sleep(0.7)
        with pytest.raises(Fenced, match="not the leader any more"):
            await fenced.write(write_server)  # ran out, nobody took it: refused all the same
        async with store.db.transaction() as conn:
            assert (await leases.acquire(conn, "b/1", ttl=5)).holder == "b/1"
        with pytest.raises(Fenced):
            await fenced.write(write_server)
    servers, _ = await store.read(leases.all_servers)
    assert [s.id for s in servers] == ["a"]


def test_a_fence_needs_postgresql(tmp_path: object) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="needs PostgreSQL"):
            async with open_store(f"{tmp_path}/knit.db", fence=LeaseFence("a", 1)):
                pass

    anyio.run(main)
