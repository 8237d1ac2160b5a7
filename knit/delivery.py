"""Telling an actor without a trip through the event loop when its mailbox has room.

Layer: shared by ``knit.server`` and ``knit.agent``; imports ``actors`` only.

``ActorRef.tell`` always yields to the event loop (it is a checkpoint). On a busy loop each
yield waits behind every other ready task, so an actor that forwards messages one ``tell``
at a time (the bus bridge, a directory, a task intake) handles at most one per turn of the
loop; with thousands of heartbeats, statuses or tasks a second that hop became the limit
(docs/performance.md). ``deliver`` tells at once when there is room, as there nearly always
is, and waits for room (backpressure) only when the mailbox is full.
"""

from __future__ import annotations

from typing import TypeVar

from actors import ActorRef, MailboxFull

M = TypeVar("M")


async def deliver(ref: ActorRef[M], message: M) -> None:
    """Tell ``message`` to ``ref``: at once if its mailbox has room, else wait for room.

    Raises:
        ActorStopped: the actor is gone.
        MailboxFull: the mailbox is full and its overflow policy refuses to wait.

    Cancellation while waiting for room withdraws the message.
    """
    try:
        ref.tell_nowait(message)
    except MailboxFull:
        await ref.tell(message)
