"""The two classes actor code touches: Actor (subclass it) and ActorRef (send to it).

Layer: ``actors``. Imports anyio and the standard library only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
from anyio import BrokenResourceError, ClosedResourceError, WouldBlock
from anyio.lowlevel import checkpoint

from actors._clock import Deadline, Timer
from actors._errors import AskTimeout
from actors._mailbox import AskSlot

if TYPE_CHECKING:
    from actors._cell import ActorCell, Incarnation
    from actors._system import ActorSystem

MsgT = TypeVar("MsgT")


class Actor(Generic[MsgT]):
    """Base class of actors: state plus a ``handle`` method that sees one message at a time.

    Subclasses may define ``__init__`` freely (no need to call ``super().__init__()``); the
    factory given to ``spawn`` builds a fresh instance for every (re)start. Before
    ``started()`` runs, the runtime sets:

    Attributes:
        ref: this actor's ActorRef (stable across restarts).
        name: its unique name.
        system: the ActorSystem it lives in.
    """

    ref: ActorRef[MsgT]
    name: str
    system: ActorSystem
    _actors_incarnation: Incarnation

    async def started(self) -> None:
        """Hook run once per incarnation before the first message; ``spawn`` waits for it.

        Rebuild state here (a restarted actor starts fresh). Raising counts as a crash.
        It is cancelled if the actor is stopped and the grace period runs out.
        """

    async def stopping(self) -> None:
        """Hook run on a graceful stop (or after ``finish()``), not after a crash.

        It gets what is left of the supervisor's grace period, then is cancelled.
        """

    async def handle(self, message: MsgT) -> object:
        """Handle one message; the return value is the reply to ``ask``.

        Raising crashes this actor (its supervisor decides what next); an asker of this
        message gets ActorCrashed. Cancelled if the actor is stopped and its grace runs out.
        """
        raise NotImplementedError(f"{type(self).__name__} does not handle messages")

    def _incarnation(self) -> Incarnation:
        try:
            return self._actors_incarnation
        except AttributeError:
            raise RuntimeError("timers need a running actor: use them from started()") from None

    def after(self, delay: float, message: MsgT) -> Timer:
        """Tell ``message`` to this actor once, ``delay`` seconds from now.

        Timer messages wait for room in a full mailbox rather than follow the overflow policy.
        """
        inc = self._incarnation()
        timer = Timer(inc, message, None)
        if not inc.ended:
            inc.cell.clock.add(anyio.current_time() + max(0.0, delay), timer)
        return timer

    def every(self, interval: float, message: MsgT) -> Timer:
        """Tell ``message`` to this actor every ``interval`` seconds (first one after one
        interval). Ticks missed while the event loop was busy are skipped, not bunched."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        inc = self._incarnation()
        timer = Timer(inc, message, interval)
        if not inc.ended:
            inc.cell.clock.add(anyio.current_time() + interval, timer)
        return timer

    def deadline(self, timeout: float, message: MsgT) -> Deadline:
        """Arm a resettable deadline: ``message`` is told to this actor when it expires.

        ``Deadline.reset()`` moves it (O(1)); heartbeat timeouts are the use case.
        """
        inc = self._incarnation()
        return Deadline(inc, inc.cell.clock, timeout, message)

    def finish(self) -> None:
        """End this actor normally once the current message (or ``started()``) is done.

        ``stopping()`` runs; a PERMANENT actor is then restarted, others are not.
        """
        inc = self._incarnation()
        inc.finishing = inc.leaving = True


def bind(actor: Actor[Any], cell: ActorCell, inc: Incarnation) -> None:
    """Give a freshly built actor its ref, name and system (runtime use)."""
    actor.ref = cell.ref
    actor.name = cell.name
    actor.system = cell.system
    actor._actors_incarnation = inc


class ActorRef(Generic[MsgT]):
    """The address of an actor: send it messages with ``tell``/``tell_nowait``/``ask``.

    A ref stays valid across restarts (messages go to the current incarnation; those queued
    while it restarts wait for the next one). Refs compare by identity: one per actor.
    """

    __slots__ = ("_cell", "_mailbox", "name")

    def __init__(self, cell: ActorCell) -> None:
        self.name = cell.name
        self._cell = cell
        self._mailbox = cell.mailbox

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r}{'' if self.alive else ' (stopped)'}>"

    @property
    def alive(self) -> bool:
        """False once the actor is gone for good (stopped, or not restarted)."""
        return not self._cell.final

    @property
    def mailbox_depth(self) -> int:
        """Messages waiting in the mailbox."""
        return self._mailbox.depth

    async def tell(self, message: MsgT) -> None:
        """Send ``message`` without waiting for it to be handled.

        On a full mailbox, ``Overflow.BLOCK`` waits for room (backpressure); the other
        policies act at once (see ``tell_nowait``). Always a checkpoint.

        Raises:
            ActorStopped: the actor is gone for good.
            MailboxFull: ``Overflow.FAIL`` and the mailbox is full.

        Cancellation while waiting for room withdraws the message.
        """
        mailbox = self._mailbox
        if mailbox.block:
            try:
                await mailbox.tx.send(message)
            except (ClosedResourceError, BrokenResourceError):
                raise mailbox.stopped() from None
        else:
            await checkpoint()
            mailbox.put_nowait(message)
        cell = self._cell
        if cell.idle:
            cell.activate()

    def tell_nowait(self, message: MsgT) -> None:
        """Send ``message`` now; never blocks (safe from a plain event-loop callback).

        On a full mailbox the overflow policy applies; for ``Overflow.BLOCK`` that is
        MailboxFull.

        Raises:
            ActorStopped: the actor is gone for good.
            MailboxFull: the mailbox is full and the policy is BLOCK or FAIL.
        """
        self._mailbox.put_nowait(message)
        cell = self._cell
        if cell.idle:
            cell.activate()

    async def ask(self, message: MsgT, *, timeout: float = 5.0) -> Any:
        """Send ``message`` and wait for the value ``handle`` returns for it.

        The timeout covers waiting for room in a full mailbox too.

        Raises:
            AskTimeout: no reply within ``timeout`` seconds (the message may still be
                handled later).
            ActorCrashed: ``handle`` raised for this message (the original is the cause).
            ActorStopped: the actor is gone, or was stopped before it replied.
            MailboxFull: the overflow policy refused or dropped the message.

        Cancellation abandons the reply; the message may still be handled.
        """
        mailbox = self._mailbox
        slot = AskSlot(message, self.name)
        if mailbox.block:
            try:
                mailbox.tx.send_nowait(slot)
            except WouldBlock:
                began = anyio.current_time()
                with anyio.move_on_after(timeout) as scope:
                    await mailbox.put(slot)
                if scope.cancelled_caught:
                    raise AskTimeout(f"no room in the mailbox of {self.name!r} in time") from None
                timeout -= anyio.current_time() - began
            except (ClosedResourceError, BrokenResourceError):
                raise mailbox.stopped() from None
        else:
            mailbox.put_nowait(slot)
        cell = self._cell
        if cell.idle:
            cell.activate()
        if timeout < math.inf:
            cell.clock.add(anyio.current_time() + timeout, slot)
        event = slot.event
        assert event is not None
        try:
            await event.wait()
        finally:
            slot.done = True  # abandoned if cancelled; either way the clock can drop it
            slot.event = None
        if slot.error is not None:
            raise slot.error
        return slot.result
