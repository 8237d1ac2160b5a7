"""The server's side of log streams: asks the nodes for their instances' logs and merges
them into one text stream per HTTP request.

Layer: server. Imports anyio, ``knit.bus``, ``knit.server.trust`` and ``knit.wire``.

For each instance of a request a *part* opens a stream on the instance's node
(``LogOpen`` on ``knit.logs.to.{node}``, with ``WINDOW`` chunks of credit) and takes its
chunks from ``knit.logs.from.{node}`` (one subscription per node, made the first time a
stream goes there). A part writes each chunk, its lines prefixed with the instance's index
(``[0] ...``), into the request's output buffer (``OUTPUT`` chunks), and grants the node
more credit as it does. Memory per request is therefore bounded by
``(WINDOW + OUTPUT) * chunk size * instances``: a client that reads slowly fills the output
buffer, its parts stop granting credit, and the nodes stop reading the containers' logs
until it reads again. See docs/decisions/0020-log-streams.md.

A part ends with its stream's ``LogEnd`` (an error is written as a line of its own), when
its node is silent for ``SILENCE`` seconds or is declared unhealthy (:meth:`LogHub.node_down`,
whichever comes first: ``[0] -- node ... stopped answering``), or when the client leaves
(the output buffer is closed: ``LogClose`` tells the node).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from knit.bus import Bus, Headers
from knit.domain.logs import LogQuery, LogTarget
from knit.errors import BusError, KnitError
from knit.ids import new_id
from knit.server.trust import BusTrust
from knit.wire import subjects
from knit.wire.logs import (
    KEEPALIVE,
    SILENCE,
    LogChunk,
    LogClose,
    LogCredit,
    LogEnd,
    LogOpen,
    decode_from_node,
)
from knit.wire.messages import WireMessage, encode

log = logging.getLogger(__name__)

WINDOW = 8
"""Chunks a node may send ahead of what a part has written out."""
OUTPUT = 4
"""Chunks of text a request holds for its client."""
REQUEST_TTL = 60.0
"""Seconds a node may take to start serving a request (its ``expires_at``)."""


@dataclass
class _Part:
    stream_id: str
    target: LogTarget
    send: MemoryObjectSendStream[LogChunk | LogEnd]
    receive: MemoryObjectReceiveStream[LogChunk | LogEnd]
    heard: float = field(default_factory=time.monotonic)
    overrun: bool = False
    down: bool = False  # its node was declared unhealthy
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class LogHub:
    """Log streams from the nodes (see the module's docstring).

    Args:
        bus: the server's bus.
        trust: proves requests and checks chunks.
        silence: seconds without a word from a node that end its part.
        keepalive: seconds between two keepalives to the nodes.
    """

    def __init__(
        self,
        bus: Bus,
        trust: BusTrust,
        *,
        silence: float = SILENCE,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.bus = bus
        self.trust = trust
        self.silence = silence
        self.keepalive = keepalive
        self.parts: dict[str, _Part] = {}
        self._subscribed: set[str] = set()
        self._tg: TaskGroup | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the hub's parts and keepalives until cancelled (which ends every stream)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                while True:
                    await anyio.sleep(self.keepalive)
                    for part in list(self.parts.values()):
                        await self._tell(part, LogCredit(stream_id=part.stream_id, credit=0))
            finally:
                self._tg = None

    async def stream(
        self, targets: Sequence[LogTarget], query: LogQuery
    ) -> AsyncGenerator[bytes, None]:
        """The merged text of the targets' logs, chunk by chunk; ends when every part has
        ended. Closing the generator (the client left) closes every part.

        Raises:
            KnitError: the hub does not run (the server is stopping).
        """
        tg = self._tg
        if tg is None:
            raise KnitError("the server is stopping: no log streams")
        out_send, out_receive = anyio.create_memory_object_stream[bytes](OUTPUT)
        parts: list[_Part] = []
        try:
            with out_send:
                for target in targets:
                    part = await self._open(target, query)
                    parts.append(part)
                    name = f"log part {part.stream_id}"
                    tg.start_soon(self._run_part, part, query, out_send.clone(), name=name)
            async with out_receive:
                async for text in out_receive:
                    yield text
        finally:
            for part in parts:  # the client left: those still running end now
                part.scope.cancel()

    async def _open(self, target: LogTarget, query: LogQuery) -> _Part:
        node_id = target.node_id
        if node_id not in self._subscribed:
            self._subscribed.add(node_id)
            try:
                await self._subscribe(node_id)
            except BusError:
                self._subscribed.discard(node_id)
                raise
        send, receive = anyio.create_memory_object_stream[LogChunk | LogEnd](WINDOW + 2)
        part = _Part(new_id(), target, send, receive)
        self.parts[part.stream_id] = part
        return part

    async def _subscribe(self, node_id: str) -> None:
        subject = subjects.logs_from(node_id)

        async def on_message(payload: bytes, reply: str | None, headers: Headers | None) -> None:
            self.take(node_id, subject, payload)

        await self.bus.subscribe(subject, on_message)

    def node_down(self, node_id: str) -> None:
        """``node_id`` missed its heartbeats: end its parts (after what they hold) now rather
        than after ``silence`` (never waits)."""
        for part in list(self.parts.values()):
            if part.target.node_id == node_id:
                part.down = True
                part.send.close()

    def take(self, node_id: str, subject: str, payload: bytes) -> None:
        """Bus handler: hand a node's chunk to its part (never waits)."""
        proved = self.trust.check_up(subject, payload)
        if proved is None or proved[0] not in ("", node_id):
            return
        try:
            message = decode_from_node(proved[1])
        except KnitError:
            return
        part = self.parts.get(message.stream_id)
        if part is None or part.target.node_id != node_id:
            return
        part.heard = time.monotonic()
        if isinstance(message, LogChunk) and not message.lines:
            return  # a keepalive
        try:
            part.send.send_nowait(message)
        except anyio.WouldBlock:  # more than its credit: refuse the node's stream
            part.overrun = True
            part.send.close()
        except anyio.ClosedResourceError:
            pass

    async def _run_part(
        self, part: _Part, query: LogQuery, out: MemoryObjectSendStream[bytes]
    ) -> None:
        ended = False
        try:
            with part.scope:
                ended = await self._relay(part, query, out)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the client left
        finally:
            self.parts.pop(part.stream_id, None)
            part.send.close()
            part.receive.close()
            out.close()
            if not ended:  # the node may still be sending: tell it to stop
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await self._tell(part, LogClose(stream_id=part.stream_id))

    async def _relay(
        self, part: _Part, query: LogQuery, out: MemoryObjectSendStream[bytes]
    ) -> bool:
        """Open the part's stream and write its lines out until it ends; whether the node
        ended it (False: the server gave up on the node).

        Raises:
            BrokenResourceError: the client left.
        """
        prefix = f"[{part.target.index}] "
        node = part.target.node_id
        opening = LogOpen(
            stream_id=part.stream_id,
            node_id=node,
            instance_id=part.target.instance_id,
            follow=query.follow,
            tail=query.tail,
            since=query.since,
            timestamps=query.timestamps,
            credit=WINDOW,
            expires_at=time.time() + REQUEST_TTL,
        )
        try:
            await self._tell(part, opening, fail=True)
        except BusError as exc:
            await out.send(f"{prefix}-- logs unavailable: {exc}\n".encode())
            return True
        written = 0
        while True:
            message: LogChunk | LogEnd | None = None
            with anyio.move_on_after(self.keepalive):
                try:
                    message = await part.receive.receive()
                except anyio.EndOfStream:  # (take closed it: overrun; or node_down)
                    if not part.down:
                        await out.send(f"{prefix}-- node {node} sent past its credit\n".encode())
                        return False
            if message is None:
                if part.down or time.monotonic() - part.heard > self.silence:
                    await out.send(
                        f"{prefix}-- node {node} stopped answering; "
                        "this instance's logs end here\n".encode()
                    )
                    return False
                continue
            if isinstance(message, LogEnd):
                if message.error:
                    await out.send(f"{prefix}-- {message.error}\n".encode())
                return True
            await out.send("".join(f"{prefix}{line}\n" for line in message.lines).encode())
            written += 1
            if written >= WINDOW // 2:
                await self._tell(part, LogCredit(stream_id=part.stream_id, credit=written))
                written = 0

    async def _tell(self, part: _Part, message: WireMessage, *, fail: bool = False) -> None:
        subject = subjects.logs_to(part.target.node_id)
        try:
            payload = self.trust.prove_task(part.target.node_id, subject, encode(message))
            await self.bus.publish(subject, payload)
        except KeyError as exc:
            if fail:
                raise BusError(f"node {part.target.node_id} is not in the cluster") from exc
        except BusError as exc:
            if fail:
                raise
            log.debug("log stream %s: %s", part.stream_id, exc)


__all__ = ["OUTPUT", "WINDOW", "LogHub"]
