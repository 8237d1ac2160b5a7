"""The message bus adapter: one NATS connection per process, many subscriptions.

Layer: adapter. The only module of Knit that imports ``nats``. Server and agent actors get a
``Bus`` through their constructor; the simulation harness shares one ``Bus`` between many
simulated agents.

nats-py runs subscription callbacks in its own asyncio tasks, outside anyio's task groups, so
a handler given to :meth:`Bus.subscribe` must only hand the message over (a mailbox
``tell``) and return; it must never do the work itself.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from knit.errors import BusError

log = logging.getLogger(__name__)

Handler = Callable[[bytes, str | None], Awaitable[None]]
"""A subscription handler: (payload, reply subject or None)."""


@dataclass
class BusStats:
    """Counters for introspection (dashboard, simulation reports)."""

    closing: bool = False
    published: int = 0
    received: int = 0
    handler_errors: int = 0
    disconnects: int = 0
    reconnects: int = 0
    last_reconnect: float = 0.0
    """``time.monotonic()`` of the last reconnection (0: never)."""


@dataclass
class Bus:
    """A connected NATS client with Knit's conventions.

    Use :func:`connect_bus` to make one.
    """

    client: Client
    url: str
    stats: BusStats = field(default_factory=BusStats)
    _subs: list[Subscription] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now (it reconnects by itself)."""
        return bool(self.client.is_connected)

    async def publish(self, subject: str, payload: bytes) -> None:
        """Publish one message. While disconnected, nats-py buffers it (up to its pending size).

        Raises:
            BusError: the connection is closed or the buffer is full.
        """
        try:
            await self.client.publish(subject, payload)
        except NatsError as exc:
            raise BusError(f"publish to {subject} failed: {exc}") from exc
        self.stats.published += 1

    async def request(self, subject: str, payload: bytes, *, timeout: float) -> bytes:
        """Send a request and wait for one reply.

        Cancellation abandons the wait; a late reply is dropped by nats-py.

        Raises:
            BusError: no reply within ``timeout``, no responder, or the connection is closed.
        """
        try:
            reply = await self.client.request(subject, payload, timeout=timeout)
        except NatsError as exc:
            raise BusError(f"request on {subject} failed: {type(exc).__name__} {exc}") from exc
        return bytes(reply.data)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> None:
        """Call ``handler`` for every message on ``subject`` (in queue group ``queue`` if given).

        The handler runs in nats-py's own task: it should only pass the message to a mailbox.
        An exception in it is logged (subject and type only, never the payload) and counted.
        """
        stats = self.stats

        async def callback(msg: Msg) -> None:
            stats.received += 1
            try:
                await handler(msg.data, msg.reply or None)
            except Exception as exc:
                stats.handler_errors += 1
                log.warning("handler for %s failed: %s", subject, type(exc).__name__)

        try:
            sub = await self.client.subscribe(
                subject, queue=queue, cb=callback, pending_msgs_limit=1_000_000
            )
        except NatsError as exc:
            raise BusError(f"subscribe to {subject} failed: {exc}") from exc
        self._subs.append(sub)

    def pending(self, subject: str) -> int:
        """Messages received on ``subject`` that wait for their handler (read from the
        connection, not yet handed over): how far behind this process is."""
        return sum(sub.pending_msgs for sub in self._subs if sub.subject == subject)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has processed everything sent so far.

        Raises:
            BusError: the server did not answer within ``timeout``.
        """
        try:
            await self.client.flush(timeout=int(max(1, timeout)))
        except NatsError as exc:
            raise BusError(f"flush failed: {exc}") from exc

    async def close(self) -> None:
        """Drain subscriptions and close. Runs shielded: cancellation cannot cut it short."""
        self.stats.closing = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                if not self.client.is_closed:
                    await self.client.drain()
            except Exception as exc:  # closing a broken connection must not raise
                log.debug("drain failed: %s", type(exc).__name__)
                if not self.client.is_closed:
                    await self.client.close()


async def connect_bus(
    url: str,
    *,
    name: str,
    retry_for: float | None = None,
    max_backoff: float = 5.0,
) -> Bus:
    """Connect to NATS, retrying with capped exponential backoff and jitter.

    Once connected, nats-py reconnects by itself forever (no busy loop: it waits between
    attempts) and re-establishes every subscription.

    Args:
        url: a ``nats://host:port`` URL (comma-separated for several servers).
        name: the connection's name, shown in NATS monitoring.
        retry_for: give up after this many seconds; ``None`` retries forever.
        max_backoff: the longest wait between two attempts.

    Raises:
        BusError: not connected within ``retry_for`` seconds.

    Cancellation stops the retries at once.
    """
    stats = BusStats()

    async def on_disconnect() -> None:
        if stats.closing:
            return
        stats.disconnects += 1
        log.warning("NATS disconnected from %s", url)

    async def on_reconnect() -> None:
        stats.reconnects += 1
        stats.last_reconnect = time.monotonic()
        log.info("NATS reconnected to %s", url)

    async def on_error(exc: Exception) -> None:
        log.debug("NATS error: %s", type(exc).__name__)

    servers = [u.strip() for u in url.split(",") if u.strip()]
    deadline = None if retry_for is None else anyio.current_time() + retry_for
    backoff = 0.05
    while True:
        client = Client()
        try:
            await client.connect(
                servers=servers,
                name=name,
                connect_timeout=2,
                reconnect_time_wait=1,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
                ping_interval=5,
                max_outstanding_pings=3,
            )
            return Bus(client=client, url=url, stats=stats)
        except (NatsError, OSError) as exc:
            with anyio.CancelScope(shield=True):
                await client.close()
            if deadline is not None and anyio.current_time() + backoff > deadline:
                raise BusError(f"cannot connect to NATS at {url}: {exc}") from exc
            log.info("NATS at %s not reachable yet (%s); retrying", url, type(exc).__name__)
        await anyio.sleep(backoff * (0.5 + random.random()))
        backoff = min(backoff * 2, max_backoff)


__all__ = ["Bus", "BusStats", "Handler", "connect_bus"]
