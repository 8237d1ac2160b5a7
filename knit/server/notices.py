"""Notices between the servers of one database: what one stored reaches the leader at once.

Layer: server. Every server answers the API and writes desired state to the database
itself; the leader's actors must hear of it at once (decision 0024). A server that is not
the leader sends a ``ServerNotice`` on ``knit.servers.notices`` as a request: the leader
applies it to its actors (``LeaderTerm.apply``) and answers; every other server that
receives it forgets what it keeps in memory of the change (API tokens, the references
deployments may name, node pins). The leader itself applies its own changes directly and
publishes only those that other servers keep in memory.

A notice that no leader answers (none at the moment: a failover under way) is not lost
work: the next leader builds everything from the database.

With one server (SQLite) nothing is sent: the leader is this process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from knit.bus import Bus
from knit.errors import KnitError
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

REQUEST_TIMEOUT = 3.0
"""Seconds a server waits for the leader's answer to a notice."""
ATTEMPTS = 3
"""Times a notice is sent before the server gives up (the next leader reads the store)."""
CACHED = frozenset(
    {NoticeKind.TOKENS, NoticeKind.REFERENCES, NoticeKind.NODE_JOINED, NoticeKind.NODE_REMOVED}
)
"""Changes that every server keeps in memory (the others are the leader's only)."""
INBOX = 1024
"""Notices received and not yet handled (beyond it they are dropped, and logged)."""


class Applier(Protocol):
    """The leader's side: applies a notice to its actors."""

    async def apply(self, notice: ServerNotice) -> NoticeReply: ...


Forget = Callable[[ServerNotice], Awaitable[None]]
"""What a server forgets (or reloads) when another tells it of a change."""


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
        self.unanswered = 0
        """Notices no leader answered."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Receive the other servers' notices until cancelled."""
        if self.alone:
            task_status.started()
            return
        send, inbox = anyio.create_memory_object_stream[tuple[ServerNotice, str | None]](INBOX)

        async def on_notice(payload: bytes, reply: str | None, _headers: object) -> None:
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

        with send, inbox:
            sub = await self.bus.subscribe(subjects.SERVER_NOTICES, on_notice)
            try:
                task_status.started()
                async for notice, reply in inbox:
                    await self._handle(notice, reply)
            finally:
                await self.bus.unsubscribe(sub)

    async def _handle(self, notice: ServerNotice, reply: str | None) -> None:
        if notice.kind in CACHED:
            try:
                await self.forget(notice)
            except KnitError as exc:
                log.warning("cannot take another server's %s: %s", notice.kind, exc)
        leader = self.leader()
        if leader is None or reply is None:
            return
        try:
            answer = await leader.apply(notice)
        except KnitError as exc:
            log.warning("the leader cannot apply %s of %s: %s", notice.kind, notice.target, exc)
            answer = NoticeReply(applied=False)
        try:
            await self.bus.publish(reply, answer.model_dump_json().encode())
        except KnitError as exc:
            log.debug("cannot answer a notice: %s", exc)

    async def tell(
        self, kind: NoticeKind, target: str | None = None, *, eligible: bool | None = None
    ) -> NoticeReply | None:
        """Make a change stored by this server known: applied by the leader (here, or
        asked over the bus), forgotten by the others. The leader's answer (None: no leader
        answered, or there is one server and it is not leading yet)."""
        notice = ServerNotice(kind=kind, target=target, eligible=eligible, origin=self.server_id)
        leader = self.leader()
        if leader is not None:
            answer = await leader.apply(notice)
            if notice.kind in CACHED and not self.alone:
                await self._publish(notice)
            return answer
        if self.alone:
            return None
        payload = encode(notice)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return decode_reply(
                    await self.bus.request(
                        subjects.SERVER_NOTICES, payload, timeout=REQUEST_TIMEOUT
                    )
                )
            except (KnitError, WireError) as exc:
                log.info("no leader answered %s (attempt %d): %s", kind, attempt, exc)
        self.unanswered += 1
        log.warning(
            "no leader answered %s of %s: the next leader takes it from the store", kind, target
        )
        return None

    async def _publish(self, notice: ServerNotice) -> None:
        try:
            await self.bus.publish(subjects.SERVER_NOTICES, encode(notice))
        except KnitError as exc:
            log.warning("cannot tell the other servers of %s: %s", notice.kind, exc)


__all__ = ["ATTEMPTS", "CACHED", "REQUEST_TIMEOUT", "Applier", "Notices"]
