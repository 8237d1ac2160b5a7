"""The dispatcher: a small, elastic pool of worker tasks that run actors' turns.

Layer: ``actors``. Imports anyio and the standard library only.

An idle actor owns no task (see ``_cell``), so a message to an idle actor *activates* it: the
actor's incarnation joins a run queue and a worker task runs its *turn* (handling messages
until the mailbox is empty). Keeping workers parked between turns makes an activation a deque
append and an Event, not a task spawn: measured here, about twice as fast on asyncio, which
matters when 10,000 node actors each get a heartbeat now and then.

Progress is guaranteed: while the queue is not empty, one worker is always on its way to it
(woken from its park, or just started): a submission wakes or starts one unless another is
already on its way, and a worker that takes a turn while more are queued first sends the
next one. So an actor whose ``handle`` waits for another actor never waits for a worker,
and a burst of N activations wakes a couple of workers in a chain rather than N (waking a
worker costs a task switch, starting one a task). Busy workers are not limited (a pool of N would
deadlock when N handlers wait on N queued actors); idle ones are: past ``max_parked`` parked
workers, a worker that runs out of work ends.

Workers run in the system's task group, outside the supervisors' groups: supervisors end
their children's turns themselves (``halt``) before they end.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

if TYPE_CHECKING:
    from actors._cell import Incarnation


class Dispatcher:
    """Runs actors' turns on a pool of worker tasks in one task group."""

    __slots__ = ("_parked", "_queue", "_tg", "_waking", "max_parked", "workers")

    def __init__(self, tg: TaskGroup, *, max_parked: int = 64) -> None:
        self._tg = tg
        self._queue: collections.deque[Incarnation] = collections.deque()
        self._parked: list[anyio.Event] = []
        self._waking = 0  # workers woken or started that have not looked at the queue yet
        self.max_parked = max_parked
        self.workers = 0

    def submit(self, inc: Incarnation) -> None:
        """Queue a turn of ``inc`` (never blocks; safe from a plain event-loop callback)."""
        self._queue.append(inc)
        if not self._waking:
            self._wake()

    def _wake(self) -> None:
        """Send one more worker to the queue: a parked one, or a new one."""
        self._waking += 1
        if self._parked:
            self._parked.pop().set()
        else:
            self.workers += 1
            self._tg.start_soon(self._work, name="actors worker")

    async def _work(self) -> None:
        queue = self._queue
        parked = self._parked
        event: anyio.Event | None = None
        self._waking -= 1
        try:
            while True:
                # One cancel scope per worker, not per turn: a halt whose grace period ran out
                # cancels it to end the turn at hand, and the worker starts a fresh one.
                with anyio.CancelScope() as epoch:
                    while not epoch.cancel_called:  # (a turn may swallow the cancellation)
                        if queue:
                            inc = queue.popleft()
                            if queue and not self._waking:
                                self._wake()  # this turn may wait: the rest must not
                            if inc.queued:  # a halt may have withdrawn it
                                inc.queued = False
                                inc.turn_scope = epoch
                                try:
                                    await inc.cell.turn(inc)
                                finally:
                                    inc.turn_scope = None
                            continue
                        if len(parked) >= self.max_parked:
                            return
                        event = anyio.Event()
                        parked.append(event)
                        await event.wait()
                        event = None
                        self._waking -= 1
        finally:
            self.workers -= 1
            if event is not None:
                if event in parked:
                    parked.remove(event)  # cancelled while parked: nobody may wake it
                else:
                    self._waking -= 1  # cancelled after it was woken
