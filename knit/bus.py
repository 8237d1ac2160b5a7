"""The message bus adapter: one NATS connection per process, many subscriptions.

Layer: adapter. The only module of Knit that imports ``nats``. Server and agent actors get a
``Bus`` through their constructor; the simulation harness shares one ``Bus`` between many
simulated agents.

nats-py runs subscription callbacks in its own asyncio tasks, outside anyio's task groups, so
a handler given to :meth:`Bus.subscribe` must only hand the message over (a mailbox
``tell``) and return; it must never do the work itself.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from knit.errors import BusError, NoResponders
from knit.trust.nkeys import NKey

log = logging.getLogger(__name__)

Headers = Mapping[str, str]
"""A message's NATS headers."""

Handler = Callable[[bytes, str | None, Headers | None], Awaitable[None]]
"""A subscription handler: (payload, reply subject or None, headers or None)."""


@dataclass(frozen=True)
class BusCredentials:
    """A NATS user: its JWT and the seed of the key the JWT names (a secret).

    nats-py asks for them at every (re)connection: the JWT, then a signature of the
    server's nonce by the seed's key.
    """

    jwt: str
    seed: str = field(repr=False)

    @classmethod
    def from_creds_file(cls, path: Path) -> BusCredentials:
        """Read a NATS ``.creds`` file (as ``nsc`` writes them).

        Raises:
            BusError: the file cannot be read or holds no JWT and seed.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BusError(f"cannot read {path}: {exc.strerror}") from exc
        blocks = re.findall(r"-{3,}BEGIN[^\n]*-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}END", text)
        if len(blocks) < 2:
            raise BusError(f"{path} is not a NATS credentials file (a JWT and a seed)")
        return cls(jwt=blocks[0], seed=blocks[1])

    def callbacks(self) -> tuple[Callable[[], bytes], Callable[[str], bytes]]:
        """nats-py's ``user_jwt_cb`` and ``signature_cb`` presenting these credentials.

        Raises:
            BusError: the seed is not a valid user seed.
        """
        try:
            key = NKey.from_seed(self.seed)
        except ValueError as exc:
            raise BusError(f"invalid NATS credentials: {exc}") from exc
        jwt = self.jwt.encode()

        def sign(nonce: str) -> bytes:
            return base64.b64encode(key.sign(nonce.encode()))

        return (lambda: jwt), sign


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
    last_disconnect: float = 0.0
    """``time.monotonic()`` of the last disconnection (0: never)."""


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

    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None:
        """Publish one message (with NATS headers if given). While disconnected, nats-py
        buffers it (up to its pending size).

        Raises:
            BusError: the connection is closed or the buffer is full.
        """
        try:
            await self.client.publish(
                subject, payload, headers=dict(headers) if headers is not None else None
            )
        except NatsError as exc:
            raise BusError(f"publish to {subject} failed: {exc}") from exc
        self.stats.published += 1

    async def request(self, subject: str, payload: bytes, *, timeout: float) -> bytes:
        """Send a request and wait for one reply.

        Cancellation abandons the wait; a late reply is dropped by nats-py.

        Raises:
            NoResponders: nobody subscribes to ``subject`` (NATS answers at once).
            BusError: no reply within ``timeout``, or the connection is closed.
        """
        try:
            reply = await self.client.request(subject, payload, timeout=timeout)
        except NoRespondersError as exc:
            raise NoResponders(f"nobody answers on {subject}") from exc
        except NatsError as exc:
            raise BusError(f"request on {subject} failed: {type(exc).__name__} {exc}") from exc
        return bytes(reply.data)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        """Call ``handler`` for every message on ``subject`` (in queue group ``queue`` if given)
        until :meth:`unsubscribe` is given the subscription returned.

        The handler runs in nats-py's own task: it should only pass the message to a mailbox.
        An exception in it is logged (subject and type only, never the payload) and counted.
        """
        stats = self.stats

        async def callback(msg: Msg) -> None:
            stats.received += 1
            try:
                await handler(msg.data, msg.reply or None, msg.headers)
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
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """End a subscription (messages already received are dropped). Runs shielded; a
        closed connection is not an error."""
        if sub in self._subs:
            self._subs.remove(sub)
        with anyio.CancelScope(shield=True):
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closed or broken connection has nothing to end
                log.debug("unsubscribe from %s: %s", sub.subject, type(exc).__name__)

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
    credentials: BusCredentials | None = None,
    on_refused: Callable[[str], None] | None = None,
) -> Bus:
    """Connect to NATS, retrying every second until connected (or ``retry_for`` passed).

    Once connected, nats-py reconnects by itself forever (no busy loop: it waits between
    attempts) and re-establishes every subscription.

    Args:
        url: a ``nats://host:port`` URL (comma-separated for several servers).
        name: the connection's name, shown in NATS monitoring.
        retry_for: give up after this many seconds; ``None`` retries forever.
        credentials: the NATS user to connect as (None: user and password from the URL,
            or none).
        on_refused: called with the reason when the server refuses these credentials
            (revoked, unknown, expired) or closes the connection for good (nats-py does
            not reconnect after a protocol error): retrying will not help, the caller
            decides.

    Raises:
        BusError: not connected within ``retry_for`` seconds; the server refused the
            credentials (unknown, revoked), or they are invalid.

    Cancellation stops the retries at once.
    """
    stats = BusStats()

    async def on_disconnect() -> None:
        if stats.closing:
            return
        stats.disconnects += 1
        stats.last_disconnect = time.monotonic()
        log.warning("NATS disconnected from %s", url)

    async def on_reconnect() -> None:
        stats.reconnects += 1
        stats.last_reconnect = time.monotonic()
        log.info("NATS reconnected to %s", url)

    connecting = True
    refused: list[str] = []
    failures = 0
    scope = anyio.CancelScope(
        deadline=math.inf if retry_for is None else anyio.current_time() + retry_for
    )

    async def on_error(exc: Exception) -> None:
        nonlocal failures
        reason = refusal(exc)
        if reason is not None:
            if connecting:  # retrying will not help: nats-py raises it instead of retrying
                refused.append(reason)
                client.options["allow_reconnect"] = False
            elif on_refused is not None:
                on_refused(reason)
            return
        if connecting:
            failures += 1
            if failures == 1 or failures % 10 == 0:
                log.info("NATS at %s not reachable yet (%s); retrying", url, type(exc).__name__)
        else:
            log.debug("NATS error: %s", type(exc).__name__)

    client = Client()

    async def on_closed() -> None:
        if stats.closing or connecting or on_refused is None:
            return
        error = client.last_error
        reason = refusal(error) if error is not None else None
        on_refused(reason or f"the connection was closed ({error or 'no reason given'})")

    jwt_cb, sign_cb = credentials.callbacks() if credentials is not None else (None, None)
    servers = [u.strip() for u in url.split(",") if u.strip()]
    with scope:
        # nats-py retries the first connection by itself (every ``reconnect_time_wait``)
        # as long as reconnecting is allowed; the scope bounds it.
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
                closed_cb=on_closed,
                error_cb=on_error,
                ping_interval=5,
                max_outstanding_pings=3,
                user_jwt_cb=jwt_cb,
                signature_cb=sign_cb,
            )
        except (NatsError, OSError) as exc:
            if not refused:
                with anyio.CancelScope(shield=True):
                    await client.close()
                raise BusError(f"cannot connect to NATS at {url}: {exc}") from exc
        else:
            connecting = False
            return Bus(client=client, url=url, stats=stats)
    with anyio.CancelScope(shield=True):
        await client.close()
    if refused:
        raise BusError(f"NATS at {url} refused this connection's credentials: {refused[0]}")
    raise BusError(f"cannot connect to NATS at {url} within {retry_for:g} s")


_REFUSALS = ("authorization", "authentication", "revoked", "expired")


def refusal(exc: BaseException) -> str | None:
    """The server's reason if ``exc`` says it refused the connection's credentials."""
    text = str(exc).strip()
    lowered = text.lower()
    if any(word in lowered for word in _REFUSALS):
        return text.removeprefix("nats: ").strip("'\" ")
    return None


__all__ = ["Bus", "BusCredentials", "BusStats", "Handler", "Headers", "connect_bus", "refusal"]
