"""``Subscriptions``: the event streams a simulated host's runtime delivers its events to.

Layer: simulations. Imports anyio, the standard library and ``knit.runtime.base``.

A subscription is live from the moment it is opened; its buffer is unbounded, so the runtime
never waits for a reader. An event goes to every open subscription whose labels the container
carries. Ending the streams (the engine restarts, becomes unavailable or is closed) ends every
iteration; its subscribers must subscribe again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from knit.runtime.base import RuntimeEvent


@dataclass(frozen=True, eq=False)
class _Subscription:
    labels: dict[str, str]
    send: MemoryObjectSendStream[RuntimeEvent]


class Events:
    """One subscription's events as an async iterator.

    Buffered events come without a checkpoint, so a reader keeps up with a burst (a host
    starting tens of containers) in one turn of the event loop instead of one event per
    turn: on a busy loop the latter left readers seconds behind. Waiting for the next event
    is a checkpoint, as ``MemoryObjectReceiveStream`` iteration is.

    Args:
        receive: the subscription's end of the stream.
        next_change: when the runtime's next health change is due (None: none is planned).
        change: makes the runtime's health changes that are due.
    """

    __slots__ = ("_change", "_next_change", "_receive")

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[RuntimeEvent],
        next_change: Callable[[], float | None],
        change: Callable[[], None],
    ) -> None:
        self._receive = receive
        self._next_change = next_change
        self._change = change

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> RuntimeEvent:
        while True:
            try:
                return self._receive.receive_nowait()
            except anyio.WouldBlock:
                pass
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            # The wait ends at the next health change too: the runtime has no task of its
            # own, so its readers make the change happen (and hear of it) when it is due.
            due = self._next_change()
            try:
                if due is None:
                    return await self._receive.receive()
                with anyio.CancelScope(deadline=due):
                    return await self._receive.receive()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            self._change()


class Subscriptions:
    """The open event subscriptions of one simulated host; true while there is one."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: list[_Subscription] = []

    def __bool__(self) -> bool:
        return bool(self._open)

    @contextmanager
    def open(
        self,
        labels: Mapping[str, str] | None,
        next_change: Callable[[], float | None],
        change: Callable[[], None],
    ) -> Iterator[Events]:
        """Subscribe to the events of containers carrying all of ``labels``.

        Args:
            labels: the labels a container must carry (None: any container).
            next_change: when the runtime's next health change is due, see :class:`Events`.
            change: makes the runtime's health changes that are due.
        """
        send, receive = anyio.create_memory_object_stream[RuntimeEvent](math.inf)
        subscription = _Subscription(dict(labels or {}), send)
        self._open.append(subscription)
        try:
            with receive:
                yield Events(receive, next_change, change)
        finally:
            send.close()
            if subscription in self._open:
                self._open.remove(subscription)

    def deliver(self, event: RuntimeEvent, labels: Mapping[str, str]) -> None:
        """Send ``event``, of a container carrying ``labels``, to the subscriptions it matches."""
        for subscription in list(self._open):
            # A subset test of the items (C code, no generator for the garbage collector).
            if subscription.labels.items() <= labels.items():
                try:
                    subscription.send.send_nowait(event)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._open.remove(subscription)

    def end(self) -> None:
        """End every open subscription's iteration."""
        subscriptions, self._open = self._open, []
        for subscription in subscriptions:
            subscription.send.close()


__all__ = ["Events", "Subscriptions"]
