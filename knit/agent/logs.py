"""The agent's side of log streams: reads a container's logs and sends them to the server
as the server grants credit (``knit.logs.to.{node}`` in, ``knit.logs.from.{node}`` out).

Layer: agent. Imports anyio, the agent's context, the runtime port and ``knit.wire``.

A request (:class:`~knit.wire.logs.LogOpen`) is answered only if it is proved to come from
the server (its MAC under this node's ``down`` key), is for this node and has not expired.
Each stream runs in a task of the agent's task group: a reader task takes lines from the
runtime into a small bounded buffer (when it is full, the reader waits, and so does the
runtime's socket), and the sender takes what the buffer holds (up to ``MAX_LINES`` lines),
waits for credit, and publishes it as one chunk. A stream ends with a
:class:`~knit.wire.logs.LogEnd`: the lines were all read (the container stopped, when
following), the server closed it, or the server was silent for ``SILENCE`` seconds (it
went away: its credits and keepalives stopped).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from knit.agent.context import LABEL_INSTANCE, LABEL_NODE, AgentContext
from knit.agent.refusals import Refusals
from knit.agent.trust import CLOCK_SKEW
from knit.bus import Headers
from knit.errors import BusError, KnitError
from knit.runtime.base import LogOptions
from knit.wire import subjects
from knit.wire.logs import (
    KEEPALIVE,
    MAX_LINE,
    MAX_LINES,
    SILENCE,
    LogChunk,
    LogClose,
    LogCredit,
    LogEnd,
    LogOpen,
    decode_to_node,
)
from knit.wire.messages import encode

log = logging.getLogger(__name__)

MAX_STREAMS = 64
"""Streams served at once; a request past it is answered with an error."""
BUFFERED_LINES = 2 * MAX_LINES
"""Lines read ahead of the sender, per stream."""
MAX_CHUNK_BYTES = 64 * 1024
"""A chunk is sent once its lines reach this many characters (or ``MAX_LINES``)."""
BATCH_TURNS = 4
"""Turns of the event loop without a new line after which a chunk is sent."""
BATCH_WAIT = 0.005
"""Seconds at most a chunk waits for more lines."""
INBOX = 1024
"""Requests and credits waiting for the dispatcher; more are dropped (the bus's handler
must never wait)."""


class _Silent(Exception):
    """The server has not been heard from for ``SILENCE`` seconds."""


@dataclass
class _Stream:
    stream_id: str
    credit: int
    heard: float = field(default_factory=time.monotonic)
    more: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def grant(self, credit: int) -> None:
        self.heard = time.monotonic()
        if credit:
            self.credit += credit
            self.more.set()
            self.more = anyio.Event()


class LogServer:
    """Serves the server's log requests for this node (see the module's docstring).

    Args:
        ctx: the agent's context (bus, runtime, trust).
        tg: the task group streams run in.
        silence: seconds without credit or keepalive from the server that end a stream.
        keepalive: seconds of an idle stream between two keepalives to the server.
    """

    def __init__(
        self,
        ctx: AgentContext,
        tg: TaskGroup,
        *,
        silence: float = SILENCE,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.ctx = ctx
        self.tg = tg
        self.silence = silence
        self.keepalive = keepalive
        self.subject_in = subjects.logs_to(ctx.node_id)
        self.subject_out = subjects.logs_from(ctx.node_id)
        self.streams: dict[str, _Stream] = {}
        self.refusals = Refusals(log)
        self._send: MemoryObjectSendStream[bytes]
        self._receive: MemoryObjectReceiveStream[bytes]
        self._send, self._receive = anyio.create_memory_object_stream[bytes](INBOX)

    async def subscribe(self) -> None:
        """Subscribe to this node's log requests and start dispatching them.

        Raises:
            BusError: the bus refused the subscription.
        """
        self.tg.start_soon(self._dispatch, name="log requests")

        async def on_message(payload: bytes, reply: str | None, headers: Headers | None) -> None:
            try:
                self._send.send_nowait(payload)
            except anyio.WouldBlock:
                self.refusals.add("log requests arrive faster than they are taken")
            except anyio.ClosedResourceError:
                pass  # the agent is stopping

        await self.ctx.bus.subscribe(self.subject_in, on_message)

    async def _dispatch(self) -> None:
        async with self._send, self._receive:
            async for payload in self._receive:
                try:
                    await self.take(payload)
                except KnitError as exc:
                    log.warning("log request dropped: %s", exc)

    async def take(self, payload: bytes) -> None:
        """Check and apply one message from the server (open, credit or close).

        Raises:
            WireError: not a log request.
        """
        trust = self.ctx.trust
        if trust is not None:
            body = trust.open_task(self.subject_in, payload, broadcast=False)
            if body is None:
                self.refusals.add(f"a log request on {self.subject_in} not proved by the server")
                return
            payload = body
        message = decode_to_node(payload)
        if isinstance(message, LogCredit):
            stream = self.streams.get(message.stream_id)
            if stream is not None:
                stream.grant(message.credit)
        elif isinstance(message, LogClose):
            stream = self.streams.get(message.stream_id)
            if stream is not None:
                stream.scope.cancel()
        else:
            await self.open(message)

    async def open(self, request: LogOpen) -> None:
        """Start serving a stream (or answer why not)."""
        if request.node_id != self.ctx.node_id:
            self.refusals.add(f"a log request for node {request.node_id}, not this one")
            return
        if self.ctx.trust is not None and (
            request.expires_at is None or time.time() > request.expires_at + CLOCK_SKEW
        ):
            self.refusals.add("an expired log request")
            return
        if request.stream_id in self.streams:
            return  # a duplicate
        if len(self.streams) >= MAX_STREAMS:
            busy = f"node {self.ctx.node_id} serves {MAX_STREAMS} log streams already"
            await self._end(request.stream_id, busy)
            return
        stream = _Stream(request.stream_id, request.credit)
        self.streams[request.stream_id] = stream
        self.tg.start_soon(self._serve, request, stream, name=f"log stream {request.stream_id}")

    async def _serve(self, request: LogOpen, stream: _Stream) -> None:
        error: str | None = None
        try:
            with stream.scope:
                error = await self._stream(request, stream)
            if stream.scope.cancelled_caught:
                return  # the server closed it: it wants nothing more, not even an end
        except anyio.get_cancelled_exc_class():  # the agent is stopping: say so, briefly
            self.streams.pop(request.stream_id, None)
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await self._end(request.stream_id, f"the agent of node {self.ctx.node_id} stopped")
            raise
        except _Silent:
            error = f"the server was silent for {self.silence:g} s"
        except KnitError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: end this stream, not the agent
            log.exception("log stream %s failed", request.stream_id)
            error = f"agent error: {type(exc).__name__}"
        finally:
            self.streams.pop(request.stream_id, None)
        await self._end(request.stream_id, error)

    async def _stream(self, request: LogOpen, stream: _Stream) -> str | None:
        runtime = self.ctx.runtime
        labels = {LABEL_INSTANCE: request.instance_id, LABEL_NODE: self.ctx.node_id}
        found = await runtime.list(labels)
        if not found:
            return f"instance {request.instance_id} has no container on node {self.ctx.node_id}"
        options = LogOptions(
            follow=request.follow,
            tail=request.tail,
            since=request.since,
            timestamps=request.timestamps,
        )
        send, receive = anyio.create_memory_object_stream[str](BUFFERED_LINES)
        opened = runtime.open_logs(found[0].id, options)
        try:
            async with opened as lines, anyio.create_task_group() as tg:

                async def read() -> None:
                    async with send:
                        async for line in lines:
                            await send.send(line[:MAX_LINE])

                tg.start_soon(read)
                await self._send_chunks(receive, stream)
        except BaseExceptionGroup as group:
            raise _first(group) from None
        return None

    async def _send_chunks(self, receive: MemoryObjectReceiveStream[str], stream: _Stream) -> None:
        seq = 0
        async with receive:
            ended = False
            while not ended:
                lines: list[str] = []
                with anyio.move_on_after(self.keepalive):
                    try:
                        lines.append(await receive.receive())
                    except anyio.EndOfStream:
                        return
                if not lines:
                    self._check_heard(stream)
                    await self._publish(LogChunk(stream_id=stream.stream_id, seq=seq, lines=[]))
                    continue
                size = len(lines[0])
                # Let the reader add what the runtime has already sent, as long as it keeps
                # coming (until BATCH_TURNS turns of the event loop bring nothing, or for
                # BATCH_WAIT at most): one chunk of many lines costs the bus and both ends
                # far less than many chunks of one, and a lone line waits for next to nothing.
                turns, until = 0, time.monotonic() + BATCH_WAIT
                while len(lines) < MAX_LINES and size < MAX_CHUNK_BYTES:
                    try:
                        line = receive.receive_nowait()
                    except anyio.WouldBlock:
                        if turns == BATCH_TURNS or time.monotonic() > until:
                            break
                        turns += 1
                        await anyio.lowlevel.checkpoint()
                        continue
                    except anyio.EndOfStream:
                        ended = True
                        break
                    lines.append(line)
                    size += len(line)
                    turns = 0
                await self._wait_credit(stream)
                stream.credit -= 1
                await self._publish(LogChunk(stream_id=stream.stream_id, seq=seq, lines=lines))
                seq += 1

    def _check_heard(self, stream: _Stream) -> None:
        if time.monotonic() - stream.heard > self.silence:
            raise _Silent

    async def _wait_credit(self, stream: _Stream) -> None:
        while stream.credit <= 0:
            self._check_heard(stream)
            left = self.silence - (time.monotonic() - stream.heard)
            with anyio.move_on_after(max(left, 0.0) + 0.01):
                await stream.more.wait()

    async def _publish(self, message: LogChunk | LogEnd) -> None:
        await self.ctx.publish(self.subject_out, encode(message))

    async def _end(self, stream_id: str, error: str | None) -> None:
        try:
            await self._publish(LogEnd(stream_id=stream_id, error=error[:1000] if error else None))
        except BusError as exc:
            log.info("log stream %s: its end was not sent: %s", stream_id, exc)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a stream's task group failed with (reader or sender: a runtime
    error, a bus error or the server's silence), or the group if there are several."""
    errors = group.exceptions
    if len(errors) == 1:
        only = errors[0]
        return _first(only) if isinstance(only, BaseExceptionGroup) else only
    return group


__all__ = ["MAX_STREAMS", "LogServer"]
