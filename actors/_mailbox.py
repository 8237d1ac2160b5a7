"""Mailboxes: a bounded anyio memory object stream per actor, its overflow policy, envelopes.

Layer: ``actors``. Imports anyio and the standard library only.

A plain ``tell`` puts the message itself in the stream: no envelope, no allocation. Two
envelopes exist for the rarer cases, and the actor's loop tells them apart by exact type:

- :class:`AskSlot` carries an ``ask``'s message and is its one-shot reply slot (an anyio
  Event plus the result or the error). It is also the ask's timeout entry in the system
  clock, so an ask needs no cancel scope of its own.
- :class:`Signal` carries a timer's message, tagged with the incarnation that armed it, so a
  timer message still queued when that incarnation ends is dropped, not handed to the next.

The mailbox outlives restarts: messages queued while an actor restarts wait for the next
incarnation. It is closed only when the actor is gone for good; queued asks then get
ActorStopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream, WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors._errors import ActorStopped, AskTimeout, MailboxFull
from actors._model import Overflow

if TYPE_CHECKING:
    from actors._clock import Clock


class AskSlot:
    """An ``ask`` in flight: the message, and the one-shot slot its reply lands in."""

    __slots__ = ("done", "error", "event", "message", "name", "result")

    def __init__(self, message: object, name: str) -> None:
        self.message = message
        self.name = name  # the actor asked, for error messages
        self.event: anyio.Event | None = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False

    def resolve(self, result: object) -> None:
        """Deliver the reply (ignored if the ask already timed out or was abandoned)."""
        if not self.done:
            self.done = True
            self.result = result
            if self.event is not None:
                self.event.set()

    def fail(self, error: BaseException) -> None:
        """Make the asker raise ``error`` (ignored if the ask is already settled)."""
        if not self.done:
            self.done = True
            self.error = error
            if self.event is not None:
                self.event.set()

    def clock_alive(self, when: float) -> bool:
        """TimedEntry: an answered or abandoned ask needs no timeout."""
        return not self.done

    def clock_fire(self, when: float, now: float, clock: Clock) -> None:
        """TimedEntry: the ask's timeout expired."""
        self.fail(AskTimeout(f"no reply from actor {self.name!r} in time"))


class Signal:
    """A timer's message, tagged with the incarnation that armed the timer."""

    __slots__ = ("message", "target")

    def __init__(self, target: object, message: object) -> None:
        self.target = target
        self.message = message


class Mailbox:
    """One actor's bounded mailbox and its overflow policy (kept across restarts)."""

    __slots__ = ("block", "dropped", "name", "overflow", "rx", "size", "tx")

    def __init__(self, name: str, size: int, overflow: Overflow) -> None:
        if size < 1:
            raise ValueError(f"mailbox_size must be at least 1, not {size}")
        self.name = name
        self.size = size
        self.overflow = overflow
        self.block = overflow is Overflow.BLOCK
        self.dropped = 0
        self.tx: MemoryObjectSendStream[Any]
        self.rx: MemoryObjectReceiveStream[Any]
        self.tx, self.rx = anyio.create_memory_object_stream[Any](size)

    @property
    def depth(self) -> int:
        """Messages waiting (envelopes included)."""
        return self.tx.statistics().current_buffer_used

    def stopped(self) -> ActorStopped:
        """The error for a send to, or an ask left in, a closed mailbox."""
        return ActorStopped(f"actor {self.name!r} is stopped")

    def full(self) -> MailboxFull:
        """The error for a send the overflow policy refuses."""
        return MailboxFull(f"mailbox of actor {self.name!r} is full ({self.size} messages)")

    async def put(self, item: object) -> None:
        """Queue ``item``, waiting for room while the mailbox is full (backpressure).

        Raises:
            ActorStopped: the actor is gone for good (also while waiting).

        Cancellation while waiting withdraws the item: it is not queued.
        """
        try:
            await self.tx.send(item)
        except (ClosedResourceError, BrokenResourceError):
            raise self.stopped() from None

    def put_nowait(self, item: object) -> None:
        """Queue ``item`` now, or apply the overflow policy if the mailbox is full.

        Raises:
            MailboxFull: the policy is BLOCK or FAIL, or it dropped this ``ask``.
            ActorStopped: the actor is gone for good.
        """
        try:
            self.tx.send_nowait(item)
            return
        except WouldBlock:
            pass
        except (ClosedResourceError, BrokenResourceError):
            raise self.stopped() from None
        overflow = self.overflow
        if overflow is Overflow.BLOCK or overflow is Overflow.FAIL:
            raise self.full()
        self.dropped += 1
        if overflow is Overflow.DROP_NEWEST:
            if type(item) is AskSlot:
                raise self.full()
            return
        try:  # DROP_OLDEST
            oldest = self.rx.receive_nowait()
        except (WouldBlock, EndOfStream, ClosedResourceError):
            raise self.full() from None
        if type(oldest) is AskSlot:
            oldest.fail(self.full())
        self.tx.send_nowait(item)

    def close(self) -> None:
        """Close for good: later sends raise ActorStopped, queued asks get ActorStopped."""
        self.tx.close()  # senders blocked on a full mailbox get ActorStopped too
        while True:
            try:
                item = self.rx.receive_nowait()
            except (WouldBlock, EndOfStream, ClosedResourceError):
                break
            if type(item) is AskSlot:
                item.fail(self.stopped())
        self.rx.close()
