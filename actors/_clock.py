"""Time in the actor runtime: one timer task per system, timers, and resettable deadlines.

Layer: ``actors``. Imports anyio and the standard library only.

Every timed thing an actor system needs (``after``/``every`` timers, deadlines, ``ask``
timeouts) is an entry in one heap owned by one task, :class:`Clock`. That task sleeps in a
cancel scope whose deadline is the earliest entry, so a system with 10,000 armed deadlines
costs one sleeping task, not 10,000. Entries are deleted lazily: a cancelled timer, an answered
ask or a moved deadline stays in the heap, marked dead, until it surfaces or until the heap is
compacted (when it has doubled since the last compaction; amortised O(1) per push).

A :class:`Deadline` is the heartbeat primitive. ``reset()`` stores a new expiry float and, in
the usual case of moving the deadline *later*, touches nothing else: when the old heap entry
surfaces, the clock sees that the deadline moved and files it again at its new expiry. Only a
reset that moves the deadline *earlier* than its heap entry pushes a new entry (O(log n)).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

log = logging.getLogger(__name__)


class TimedEntry(Protocol):
    """What the clock's heap holds: something that fires, or knows it is dead."""

    def clock_alive(self, when: float) -> bool:
        """Whether the heap entry filed at ``when`` still matters (False: drop it)."""
        ...

    def clock_fire(self, when: float, now: float, clock: Clock) -> None:
        """The entry filed at ``when`` is due (``now >= when``); must not raise."""
        ...


class TimerTarget(Protocol):
    """Where timers deliver: an actor's incarnation (timers die with it)."""

    ended: bool

    def deliver_signal(self, message: object) -> None:
        """Queue ``message`` for the incarnation that armed the timer (never blocks)."""
        ...


class Clock:
    """The timer task of one actor system: a heap of entries and one sleeping task."""

    __slots__ = ("_compact_at", "_heap", "_seq", "_sleeping_until", "_wake")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimedEntry]] = []
        self._seq = itertools.count()
        self._wake: anyio.Event | None = None
        self._sleeping_until = -math.inf
        self._compact_at = 1024

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, entry: TimedEntry) -> None:
        """File ``entry`` to fire at ``when`` (on the ``anyio.current_time()`` scale)."""
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), entry))
        if len(heap) >= self._compact_at:
            self._compact()
        if when < self._sleeping_until:
            self._sleeping_until = when
            if self._wake is not None:
                self._wake.set()

    def _compact(self) -> None:
        heap = [item for item in self._heap if item[2].clock_alive(item[0])]
        heapq.heapify(heap)
        self._heap[:] = heap
        self._compact_at = max(1024, 2 * len(heap))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fire entries as they come due, until cancelled.

        Cancellation ends the task at once; entries still in the heap never fire.
        """
        heap = self._heap
        self._wake = anyio.Event()
        task_status.started()
        while True:
            now = anyio.current_time()
            self._sleeping_until = -math.inf  # entries filed while firing need no wake-up
            while heap and heap[0][0] <= now:
                when, _, entry = heapq.heappop(heap)
                try:
                    entry.clock_fire(when, now, self)
                except Exception:  # a timer must never take the clock down
                    log.exception("timer entry %s failed", type(entry).__name__)
            wake = self._wake = anyio.Event()
            if heap:
                self._sleeping_until = heap[0][0]
                with anyio.CancelScope(deadline=heap[0][0]):
                    await wake.wait()
            else:
                self._sleeping_until = math.inf
                await wake.wait()


class Timer:
    """A one-shot (``Actor.after``) or repeating (``Actor.every``) timer of one actor.

    It delivers its message to the actor that armed it, and dies with that actor's
    incarnation (a crash, a restart or a stop cancels it).
    """

    __slots__ = ("_cancelled", "_interval", "_message", "_target")

    def __init__(self, target: TimerTarget, message: object, interval: float | None) -> None:
        self._target = target
        self._message = message
        self._interval = interval
        self._cancelled = False

    @property
    def active(self) -> bool:
        """Whether the timer will still fire (not cancelled, not spent, actor alive)."""
        return not self._cancelled and not self._target.ended

    def cancel(self) -> None:
        """Stop the timer; a message it already queued is still delivered. Idempotent."""
        self._cancelled = True

    def clock_alive(self, when: float) -> bool:
        """TimedEntry: dead once cancelled, spent, or its actor is gone."""
        return not self._cancelled and not self._target.ended

    def clock_fire(self, when: float, now: float, clock: Clock) -> None:
        """TimedEntry: deliver, and file the next tick of a repeating timer."""
        if self._cancelled or self._target.ended:
            return
        interval = self._interval
        if interval is None:
            self._cancelled = True  # spent
        else:
            following = when + interval
            # Fixed rate; ticks missed while the loop was busy are skipped, not bunched up.
            clock.add(following if following > now else now + interval, self)
        self._target.deliver_signal(self._message)


class Deadline:
    """A resettable deadline of one actor: delivers its message when it expires.

    ``reset()`` is O(1) and spawns nothing, so it can run on every heartbeat. A deadline
    that fired, or was cancelled, is armed again by ``reset()``. It dies with the actor's
    incarnation, like a :class:`Timer`.
    """

    __slots__ = ("_clock", "_expires_at", "_message", "_scheduled", "_target", "_timeout")

    def __init__(self, target: TimerTarget, clock: Clock, timeout: float, message: object) -> None:
        self._target = target
        self._clock = clock
        self._message = message
        self._timeout = timeout
        self._expires_at: float | None = None
        self._scheduled = math.inf  # when its live heap entry fires (inf: none)
        self.reset()

    @property
    def expires_at(self) -> float | None:
        """When it expires, on the ``anyio.current_time()`` scale; None if fired or cancelled."""
        return self._expires_at

    @property
    def timeout(self) -> float:
        """The timeout the last ``reset()`` used (or the one given at creation)."""
        return self._timeout

    def reset(self, timeout: float | None = None) -> None:
        """Expire ``timeout`` seconds from now (default: the last timeout used).

        O(1) when the deadline moves later; a move earlier files one heap entry.
        """
        if timeout is not None:
            self._timeout = timeout
        at = anyio.current_time() + self._timeout
        self._expires_at = at
        if at < self._scheduled and not self._target.ended:
            self._scheduled = at
            self._clock.add(at, self)

    def cancel(self) -> None:
        """Disarm it (``reset()`` arms it again). Idempotent."""
        self._expires_at = None

    def clock_alive(self, when: float) -> bool:
        """TimedEntry: only the newest entry of a live deadline counts."""
        return when == self._scheduled and not self._target.ended

    def clock_fire(self, when: float, now: float, clock: Clock) -> None:
        """TimedEntry: deliver if expired, or file again if the deadline moved later."""
        if when != self._scheduled:
            return  # superseded by an earlier entry
        self._scheduled = math.inf
        at = self._expires_at
        if at is None or self._target.ended:
            return
        if at > now:  # moved later since this entry was filed: file it again
            self._scheduled = at
            clock.add(at, self)
            return
        self._expires_at = None
        self._target.deliver_signal(self._message)
