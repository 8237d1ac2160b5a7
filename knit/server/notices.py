"""Notices between the servers of one database: what one stored reaches the leader at once.

Layer: server. Every server answers the API and writes desired state to the database
itself; the leader's actors must hear of it at once (decision 0024). Two subjects:

- ``knit.servers.leader``: only the leader subscribes, for as long as it leads
  (:meth:`Notices.serve_leader`). A follower that stored a change asks it there; the leader
  applies it to its actors (``LeaderTerm.apply``) and answers. With nobody leading (a
  failover under way) NATS says so at once and the follower's API call does not wait: the
  next leader builds everything from the database, so nothing is lost.
- ``knit.servers.notices``: every server subscribes; a server publishes there the changes
  that the others keep in memory (API tokens, node pins, the references deployments may
  name), and they read those again.

The leader applies its own changes directly. With one server (SQLite) nothing is sent.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Protocol

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from knit.bus import Bus, Headers
from knit.errors import KnitError, NoResponders
from knit.wire import subjects
from knit.wire.errors import WireError
from knit.wire.messages import encode
from knit.wire.servers import (
    NoticeKind,
    NoticeReply,
    ServerNotice,
    decode_notice,
    decode_reply,
)

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 2.0
"""Seconds a server waits for the leader's answer (a leader that stalled holds its
subscription until its lease ends; past this, the API answers without it)."""
CACHED = frozenset(
    {NoticeKind.TOKENS, NoticeKind.REFERENCES, NoticeKind.NODE_JOINED, NoticeKind.NODE_REMOVED}
)
"""Changes that every server keeps in memory (the others are the leader's only)."""
INBOX = 1024
"""Notices received and not yet handled (beyond it they are dropped, and logged)."""
RETRIES = 5
RETRY_EVERY = 2.0
"""A leader that did not answer in time is asked again this many times, this far apart."""


class Applier(Protocol):
    """The leader's side: applies a notice to its actors."""

    async def apply(self, notice: ServerNotice) -> NoticeReply: ...


Forget = Callable[[ServerNotice], Awaitable[None]]
"""What a server forgets (or reloads) when another tells it of a change."""

Received = tuple[ServerNotice, str | None]


class Notices:
    """Sends this server's notices and handles the others' (see the module's docstring).

    Args:
        bus: the bus.
        server_id: this server's id.
        leader: the applier of this server's term while it leads (None: it follows).
        forget: what this server does with another's change to what it keeps in memory.
        alone: the only server of its database (SQLite): nothing is sent or received.
    """

    def __init__(
        self,
        bus: Bus,
        server_id: str,
        leader: Callable[[], Applier | None],
        forget: Forget,
        *,
        alone: bool,
    ) -> None:
        self.bus = bus
        self.server_id = server_id
        self.leader = leader
        self.forget = forget
        self.alone = alone
        self._retries: MemoryObjectSendStream[ServerNotice] | None = None

    def _receiver(
        self, send: MemoryObjectSendStream[Received]
    ) -> Callable[[bytes, str | None, Headers | None], Awaitable[None]]:
        """A bus handler that decodes another server's notices into ``send``."""

        async def on_notice(payload: bytes, reply: str | None, _headers: Headers | None) -> None:
            try:
                notice = decode_notice(payload)
            except WireError as exc:
                log.warning("a server notice was refused: %s", exc)
                return
            if notice.origin == self.server_id:
                return
            try:
                send.send_nowait((notice, reply))
            except anyio.WouldBlock:
                log.error("server notices arrive faster than handled: one dropped")
            except anyio.ClosedResourceError:
                pass  # (the server is stopping)

        return on_notice

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take the other servers' changes to what this one keeps in memory, until
        cancelled."""
        if self.alone:
            task_status.started()
            return
        send, inbox = anyio.create_memory_object_stream[Received](INBOX)
        retry_send, retries = anyio.create_memory_object_stream[ServerNotice](INBOX)
        with send, inbox, retry_send, retries:
            self._retries = retry_send
            sub = await self.bus.subscribe(subjects.SERVER_NOTICES, self._receiver(send))
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._retry_all, retries)
                    task_status.started()
                    async for notice, _reply in inbox:
                        try:
                            await self.forget(notice)
                        except KnitError as exc:
                            log.warning("cannot take another server's %s: %s", notice.kind, exc)
            finally:
                self._retries = None
                await self.bus.unsubscribe(sub)

    async def _retry_all(self, retries: anyio.abc.ObjectReceiveStream[ServerNotice]) -> None:
        """Ask again, in the background, a leader that did not answer in time (stalled,
        or busy): up to :data:`RETRIES` times, until nobody leads (then the next leader
        reads the store)."""
        async for notice in retries:
            for _ in range(RETRIES):
                await anyio.sleep(RETRY_EVERY)
                if self.leader() is not None:
                    break  # (this server leads now: its term read the store)
                try:
                    await self.bus.request(
                        subjects.SERVER_LEADER, encode(notice), timeout=REQUEST_TIMEOUT
                    )
                except NoResponders:
                    break
                except KnitError:
                    continue
                log.info("the leader took %s of %s, late", notice.kind, notice.target)
                break

    @asynccontextmanager
    async def serve_leader(self, applier: Callable[[], Applier | None]) -> AsyncIterator[None]:
        """Answer the other servers' requests on ``knit.servers.leader`` for the block (a
        term of this server's). Subscribed first: a request that arrives while the term's
        actors load from the store waits until ``applier()`` gives them (a change stored
        after they read the store must not pass unheard)."""
        if self.alone:
            yield
            return
        send, inbox = anyio.create_memory_object_stream[Received](INBOX)
        with send, inbox:
            sub = await self.bus.subscribe(subjects.SERVER_LEADER, self._receiver(send))
            with suppress(KnitError):  # (the subscription is live at the nats-server now)
                await self.bus.flush(timeout=2)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._apply_all, applier, inbox)
                    yield
                    tg.cancel_scope.cancel()
            finally:
                await self.bus.unsubscribe(sub)

    async def _apply_all(
        self,
        applier: Callable[[], Applier | None],
        inbox: anyio.abc.ObjectReceiveStream[Received],
    ) -> None:
        async for notice, reply in inbox:
            while (term := applier()) is None:  # noqa: ASYNC110 (the term's actors, loading)
                await anyio.sleep(0.05)
            try:
                answer = await term.apply(notice)
            except KnitError as exc:
                log.warning("cannot apply %s of %s: %s", notice.kind, notice.target, exc)
                answer = NoticeReply(applied=False)
            if reply is None:
                continue
            try:
                await self.bus.publish(reply, answer.model_dump_json().encode())
            except KnitError as exc:
                log.debug("cannot answer a notice: %s", exc)

    async def tell(
        self, kind: NoticeKind, target: str | None = None, *, eligible: bool | None = None
    ) -> NoticeReply | None:
        """Make a change stored by this server known: applied by the leader (here, or asked
        over the bus), read again by the others. The leader's answer (None: nobody leads
        now, no answer in time, or there is one server and it is not leading yet)."""
        notice = ServerNotice(kind=kind, target=target, eligible=eligible, origin=self.server_id)
        if notice.kind in CACHED and not self.alone:
            await self._publish(notice)
        leader = self.leader()
        if leader is not None:
            return await leader.apply(notice)
        if self.alone:
            return None
        try:
            return decode_reply(
                await self.bus.request(
                    subjects.SERVER_LEADER, encode(notice), timeout=REQUEST_TIMEOUT
                )
            )
        except NoResponders:
            # Nobody leads: the next leader reads the store.
            log.info("nobody leads now: %s of %s waits in the store", kind, target)
        except (KnitError, WireError) as exc:
            log.warning("the leader did not answer %s of %s: %s (asking again)", kind, target, exc)
            if self._retries is not None:
                with suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                    self._retries.send_nowait(notice)
        return None

    async def _publish(self, notice: ServerNotice) -> None:
        try:
            await self.bus.publish(subjects.SERVER_NOTICES, encode(notice))
        except KnitError as exc:
            log.warning("cannot tell the other servers of %s: %s", notice.kind, exc)


__all__ = ["CACHED", "INBOX", "REQUEST_TIMEOUT", "RETRIES", "RETRY_EVERY", "Applier", "Notices"]
