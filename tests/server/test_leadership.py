"""The Elector on a real PostgreSQL database, and notices between servers on a real
nats-server (knit.server.leadership, knit.server.notices; decision 0024)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from sqlalchemy import text

from knit.bus import connect_bus
from knit.domain.leadership import LeaseTiming, Role
from knit.server.leadership import Elector, Term
from knit.server.notices import RETRY_EVERY, Notices
from knit.store import Store, leases, open_store
from knit.wire.servers import NoticeKind, NoticeReply, ServerNotice

pytestmark = pytest.mark.anyio

TTL = 1.0


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[Store]:
    async with open_store(postgres_url) as opened:
        yield opened


class Leading:
    """A ``lead`` that records its terms and whether one runs."""

    def __init__(self) -> None:
        self.terms: list[Term] = []
        self.running = 0
        self.cancelled = 0

    async def __call__(
        self, term: Term, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.terms.append(term)
        self.running += 1
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self.running -= 1
            self.cancelled += 1


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling state no event announces
            await anyio.sleep(0.05)


async def test_one_leads_another_takes_over_when_it_goes_and_none_fights(store: Store) -> None:
    engine = store.db.lease_engine()
    a, b = (Elector(engine, name, LeaseTiming(TTL), version="t") for name in ("a", "b"))
    lead_a, lead_b = Leading(), Leading()
    async with anyio.create_task_group() as tg:
        scope_a = anyio.CancelScope()

        async def run_a() -> None:
            with scope_a:
                await a.run(lead_a)

        tg.start_soon(run_a)
        await wait_for(lambda: lead_a.running == 1)
        await tg.start(b.run, lead_b)
        await anyio.sleep(3 * TTL)  # several renewals: a keeps leading, b follows
        assert (a.role, b.role) == (Role.LEADER, Role.FOLLOWER)
        assert lead_b.terms == [] and len(lead_a.terms) == 1
        await wait_for(lambda: b.leader_json() is not None)
        assert b.leader_json() is not None and b.leader_json()["id"] == "a"  # type: ignore[index]
        ids = {s["id"]: s["role"] for s in b.servers_json()}
        assert ids == {"a": "leader", "b": "follower"}

        scope_a.cancel()  # a stops: it gives the lease back, b takes it within its retry
        await wait_for(lambda: lead_b.running == 1, timeout=3 * TTL)
        assert lead_a.running == 0 and a.role is Role.FOLLOWER
        assert lead_b.terms[0].epoch == lead_a.terms[0].epoch + 1
        tg.cancel_scope.cancel()
    lease = await store.read(leases.current_lease)
    assert lease is not None and not lease.held  # b gave it back too


async def test_a_leader_whose_lease_was_taken_stops_at_once_and_follows(store: Store) -> None:
    engine = store.db.lease_engine()
    a = Elector(engine, "a", LeaseTiming(TTL))
    lead_a = Leading()
    async with anyio.create_task_group() as tg:
        await tg.start(a.run, lead_a)
        await wait_for(lambda: lead_a.running == 1)
        # Another holder takes the lease behind a's back (as after a stall past its end).
        async with store.db.transaction() as conn:
            await conn.execute(
                text(
                    "UPDATE leases SET holder = 'x/1', epoch = epoch + 1, "
                    "expires_at = extract(epoch from clock_timestamp()) + 60"
                )
            )
        await wait_for(lambda: lead_a.running == 0, timeout=TTL)
        assert a.role is Role.FOLLOWER and lead_a.cancelled == 1
        await wait_for(lambda: (a.leader_json() or {}).get("id") == "x")
        tg.cancel_scope.cancel()


async def test_notices_reach_the_leader_and_the_others_caches(nats_url: str) -> None:
    applied: list[ServerNotice] = []
    forgotten: dict[str, list[NoticeKind]] = {"leader": [], "follower": [], "other": []}

    class Leader:
        async def apply(self, notice: ServerNotice) -> NoticeReply:
            applied.append(notice)
            return NoticeReply(rollout={"target": notice.target})

    def forget_into(name: str) -> Any:
        async def forget(notice: ServerNotice) -> None:
            forgotten[name].append(notice.kind)

        return forget

    the_leader = Leader()
    term: dict[str, Leader | None] = {"now": None}
    buses = [await connect_bus(nats_url, name=f"s{i}") for i in range(3)]
    try:
        leader = Notices(
            buses[0], "leader", lambda: term["now"], forget_into("leader"), alone=False
        )
        follower = Notices(buses[1], "follower", lambda: None, forget_into("follower"), alone=False)
        other = Notices(buses[2], "other", lambda: None, forget_into("other"), alone=False)
        async with anyio.create_task_group() as tg:
            for notices in (leader, follower, other):
                await tg.start(notices.run)
            # Nobody leads: NATS says so at once, the call does not wait.
            with anyio.fail_after(1):
                assert await follower.tell(NoticeKind.DEPLOYMENT_CREATED, "d0") is None

            async with leader.serve_leader(lambda: term["now"]):
                # A request that arrives while the term loads waits for it.
                async def load_the_term() -> None:
                    await anyio.sleep(0.3)
                    term["now"] = the_leader

                tg.start_soon(load_the_term)
                reply = await follower.tell(NoticeKind.DEPLOYMENT_UPDATED, "d1")
                # Answered at once (or, on a loaded machine past the request's timeout,
                # taken by the leader when asked again in the background).
                assert reply is None or reply.rollout == {"target": "d1"}
                await wait_for(lambda: len(applied) == 1, timeout=3 * RETRY_EVERY)
                assert [(n.kind, n.target, n.origin) for n in applied] == [
                    (NoticeKind.DEPLOYMENT_UPDATED, "d1", "follower")
                ]
                await follower.tell(NoticeKind.TOKENS)
                # The leader's own change: applied here, published for the others' caches.
                await leader.tell(NoticeKind.NODE_REMOVED, "n1")
                await wait_for(lambda: len(forgotten["other"]) == 2)
            assert forgotten["other"] == [NoticeKind.TOKENS, NoticeKind.NODE_REMOVED]
            assert forgotten["leader"] == [NoticeKind.TOKENS]
            assert forgotten["follower"] == [NoticeKind.NODE_REMOVED]
            assert [n.kind for n in applied] == [
                NoticeKind.DEPLOYMENT_UPDATED,
                NoticeKind.TOKENS,
                NoticeKind.NODE_REMOVED,
            ]
            tg.cancel_scope.cancel()
    finally:
        for bus in buses:
            await bus.close()


async def test_a_leader_without_its_bus_gives_the_lead_to_one_with_it(store: Store) -> None:
    engine = store.db.lease_engine()
    bus_up = {"a": True}
    a = Elector(engine, "a", LeaseTiming(TTL), fit=lambda: bus_up["a"])
    b = Elector(engine, "b", LeaseTiming(TTL))
    lead_a, lead_b = Leading(), Leading()
    async with anyio.create_task_group() as tg:
        await tg.start(a.run, lead_a)
        await wait_for(lambda: lead_a.running == 1)
        await tg.start(b.run, lead_b)
        bus_up["a"] = False  # (fit_to_lead: away for a whole lease)
        await wait_for(lambda: lead_b.running == 1, timeout=4 * TTL)
        assert lead_a.running == 0 and a.role is Role.FOLLOWER
        await anyio.sleep(2 * TTL)
        assert lead_a.terms[1:] == []  # it does not take it back while unfit
        tg.cancel_scope.cancel()
