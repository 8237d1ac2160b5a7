"""Who leads: the Elector takes and keeps the leader lease and runs the leader's work while
it holds it.

Layer: server. Several servers share one PostgreSQL database; exactly one leads at a time
(it runs the node, deployment and task actors), the others answer the API and wait
(decision 0024, docs/high-availability.md). The lease is a row in the database
(``knit.store.leases``), with the database's clock for deadlines; the Elector

- tries to take it every ``LeaseTiming.retry`` seconds while another holds it,
- once it has it, runs ``lead(term)`` and renews every third of the lease,
- stops ``lead`` the moment it cannot be sure it still holds the lease (a renewal
  refused, or none confirmed before its own deadline: ``acting_deadline``), and goes back
  to following. The leader's writes are fenced in the database as well
  (``knit.store.db``): a leader that stalled past its lease cannot write as leader.
- gives the lease back when the server stops, so that a follower takes over at once.

It also writes this server's row in ``servers`` every few seconds, and keeps what it last
read of the lease and the servers for ``GET /status`` and ``GET /servers``.

On SQLite there is one server and no lease: :class:`SoleLeader` is the same interface,
always leading.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from sqlalchemy.ext.asyncio import AsyncEngine

from knit.domain.leadership import LeaseTiming, Presence, Role, acting_deadline, presence
from knit.server.records import iso
from knit.store import leases
from knit.store.leases import LeaseRecord, ServerRecord

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Term:
    """One stretch of leadership: the lease's holder and epoch, and when it began (the
    database's clock, seconds since the epoch)."""

    holder: str
    epoch: int
    since: float


Lead = Callable[..., Coroutine[Any, Any, None]]
"""The leader's work, ``lead(term, *, task_status)``: reports through ``task_status`` once
it runs, then runs until cancelled (the lease lost, the server stopping)."""


class Leadership:
    """What a server knows of who leads: this server (``server_id``), its ``term`` while it
    leads, and the views of ``GET /status`` and ``GET /servers``."""

    def __init__(self, server_id: str, version: str) -> None:
        self.server_id = server_id
        self.version = version
        self.api_url = ""
        self.started_at = time.time()
        self.term: Term | None = None
        """The term this server leads now (None: it follows)."""
        self.terms = 0
        """Terms this server has led."""

    @property
    def role(self) -> Role:
        return Role.LEADER if self.term is not None else Role.FOLLOWER

    async def run(
        self, lead: Lead, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Lead (``lead(term)``) whenever this server may, until cancelled."""
        raise NotImplementedError

    def leader_json(self) -> dict[str, object] | None:
        """Who leads and since when (None: nobody, as far as this server knows)."""
        raise NotImplementedError

    def servers_json(self) -> list[dict[str, object]]:
        """Every server of the database."""
        raise NotImplementedError


class Elector(Leadership):
    """Takes, keeps and gives back the leader lease (see the module's docstring).

    Args:
        engine: the database's lease engine (``Database.lease_engine()``).
        server_id: this server's name (``--server-id``).
        timing: the lease's rhythm.
        version: Knit's version, shown by ``knit servers``.
        fit: whether this server may lead now (its bus: ``fit_to_lead``); one that is not
            does not take the lease, and gives it up if it holds it.
        clock: the monotonic clock (tests give their own).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        server_id: str,
        timing: LeaseTiming,
        *,
        version: str = "",
        fit: Callable[[], bool] = lambda: True,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(server_id, version)
        self.engine = engine
        self.fit = fit
        self.holder = f"{server_id}/{secrets.token_hex(4)}"
        self.timing = timing
        self.clock = clock
        self.lease: LeaseRecord | None = None
        """The lease as last read (who leads)."""
        self.servers: list[ServerRecord] = []
        self.servers_read_at = 0.0
        """The database's clock when ``servers`` was read."""

    async def run(
        self, lead: Lead, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Contend for the lease until cancelled; lead while holding it. The lease is
        given back on the way out."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._announce)
            task_status.started()
            while True:
                if not self.fit():
                    await anyio.sleep(self.timing.retry)
                    continue
                asked_at = self.clock()
                term = await self._try_take()
                if term is None:
                    await anyio.sleep(self.timing.retry)
                    continue
                await self._lead(term, asked_at, lead)

    async def _try_take(self) -> Term | None:
        try:
            async with self.engine.begin() as conn:
                lease = await leases.acquire(conn, self.holder, self.timing.ttl)
        except Exception as exc:  # the database is away: try again
            log.warning("cannot reach the database for the leader lease: %s", _one_line(exc))
            return None
        self.lease = lease
        if lease.holder != self.holder:
            return None
        return Term(self.holder, lease.epoch, lease.acquired_at)

    async def _lead(self, term: Term, asked_at: float, lead: Lead) -> None:
        self.term = term
        self.terms += 1
        log.warning("this server (%s) leads now (lease epoch %d)", self.server_id, term.epoch)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lead, term)
                await self._keep(term, asked_at)
                tg.cancel_scope.cancel()
            log.error(
                "this server (%s) lost the leader lease (epoch %d): it stopped acting and follows",
                self.server_id,
                term.epoch,
            )
        finally:
            self.term = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._give_back(term)

    async def _keep(self, term: Term, asked_at: float) -> None:
        """Renew the lease until it is lost; returns then (at once: the caller stops
        acting)."""
        deadline = acting_deadline(asked_at, self.timing)
        while True:
            await anyio.sleep(
                max(0.0, min(asked_at + self.timing.renew_every, deadline) - self.clock())
            )
            while True:
                left = deadline - self.clock()
                if left <= 0:
                    log.error("no renewal of the leader lease confirmed in time")
                    return
                if not self.fit():
                    log.error("NATS has been away for a whole lease: giving the lead up")
                    return
                asking = self.clock()
                renewed: float | None = None
                failed = False
                with anyio.move_on_after(left):
                    try:
                        async with self.engine.begin() as conn:
                            renewed = await leases.renew(
                                conn, term.holder, term.epoch, self.timing.ttl
                            )
                    except Exception as exc:
                        failed = True
                        log.warning("cannot renew the leader lease: %s", _one_line(exc))
                if renewed is not None:
                    asked_at = asking
                    deadline = acting_deadline(asked_at, self.timing)
                    break
                if not failed and deadline - self.clock() > 0:
                    log.error("the leader lease is not this server's any more")
                    return
                await anyio.sleep(min(0.25, max(0.0, deadline - self.clock())))

    async def _give_back(self, term: Term) -> None:
        try:
            async with self.engine.begin() as conn:
                if await leases.release(conn, term.holder, term.epoch):
                    log.info("gave the leader lease back (epoch %d)", term.epoch)
        except Exception as exc:
            log.warning("cannot give the leader lease back: %s", _one_line(exc))

    async def _announce(self) -> None:
        """Write this server's row, and read the lease and the servers, now and then."""
        while True:
            try:
                async with self.engine.begin() as conn:
                    await leases.record_server(
                        conn,
                        self.server_id,
                        self.holder,
                        self.api_url,
                        self.version,
                        self.started_at,
                    )
                    self.lease = await leases.read_lease(conn)
                async with self.engine.connect() as conn:
                    self.servers, self.servers_read_at = await conn.run_sync(leases.all_servers)
            except Exception as exc:
                log.debug("cannot write this server's row: %s", _one_line(exc))
            await anyio.sleep(self.timing.announce_every)

    # views ------------------------------------------------------------------------------

    def leader_json(self) -> dict[str, object] | None:
        """Who leads and since when, as last read (None: nobody holds the lease)."""
        lease = self.lease
        if self.term is not None:
            return {
                "id": self.server_id,
                "since": iso(self.term.since),
                "epoch": self.term.epoch,
                "api_url": self.api_url or None,
            }
        if lease is None or not lease.held:
            return None
        server_id = lease.holder.rsplit("/", 1)[0]
        api_url = next((s.api_url for s in self.servers if s.holder == lease.holder), None)
        return {
            "id": server_id,
            "since": iso(lease.acquired_at),
            "epoch": lease.epoch,
            "api_url": api_url or None,
        }

    def servers_json(self) -> list[dict[str, object]]:
        """Every server of the database as last read: ``id``, ``role``, ``status``
        (``alive`` or ``gone``), ``api_url``, ``version``, ``started_at``, ``last_seen``."""
        leader = self.leader_json()
        leading = None if leader is None else leader["id"]
        rows: list[dict[str, object]] = []
        for server in self.servers:
            status = presence(server.last_seen, self.servers_read_at, self.timing)
            is_leader = server.id == leading and status is Presence.ALIVE
            rows.append(
                {
                    "id": server.id,
                    "role": str(Role.LEADER if is_leader else Role.FOLLOWER),
                    "status": str(status),
                    "api_url": server.api_url or None,
                    "version": server.version,
                    "started_at": iso(server.started_at),
                    "last_seen": iso(server.last_seen),
                    "this": server.id == self.server_id,
                }
            )
        return rows


class SoleLeader(Leadership):
    """The server of a SQLite database: the one server, always leading (no lease)."""

    def __init__(self, server_id: str, *, version: str = "") -> None:
        super().__init__(server_id, version)

    async def run(
        self, lead: Lead, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Lead until cancelled; reports once ``lead`` runs."""
        self.term = Term(self.server_id, 0, self.started_at)
        self.terms = 1
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(lead, self.term)
                task_status.started()
        finally:
            self.term = None

    def leader_json(self) -> dict[str, object] | None:
        if self.term is None:
            return None
        return {
            "id": self.server_id,
            "since": iso(self.term.since),
            "epoch": 0,
            "api_url": self.api_url or None,
        }

    def servers_json(self) -> list[dict[str, object]]:
        now = iso(time.time())
        rows: list[dict[str, object]] = [
            {
                "id": self.server_id,
                "role": str(self.role),
                "status": str(Presence.ALIVE),
                "api_url": self.api_url or None,
                "version": self.version,
                "started_at": iso(self.started_at),
                "last_seen": now,
                "this": True,
            }
        ]
        return rows


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["Elector", "Lead", "Leadership", "SoleLeader", "Term"]
