"""``HealthSchedule``: when a simulated container's health check changes its health.

Layer: simulations. Imports anyio, the standard library and ``knit.runtime.base``.

``SimRuntime`` plans a change for each start of a container created with a health check: it
is "starting" from the start, then "healthy" once its first check ran (``interval`` after the
start), unless its command is exactly ``["false"]`` or ``["CMD", "false"]``: then "unhealthy"
once ``retries`` checks failed after ``start_period``, as Docker's checks would go. There is no
task of its own: the runtime makes the changes that are due on its next call, or in the wait of
an event subscription, which ends at :meth:`HealthSchedule.next_due`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from knit.runtime.base import HealthCheck

_FAILING_CHECKS = (("false",), ("CMD", "false"))
_health_order = itertools.count()


@dataclass(frozen=True, order=True)
class HealthChange:
    """A health status a container's run reaches at ``due`` (``anyio.current_time()``)."""

    due: float
    order: int
    container_id: str = field(compare=False)
    run: int = field(compare=False)
    status: str = field(compare=False)


class HealthSchedule:
    """The planned health changes of one simulated host's containers, soonest first."""

    __slots__ = ("_changes",)

    def __init__(self) -> None:
        self._changes: list[HealthChange] = []  # a heap

    def plan(self, container_id: str, run: int, check: HealthCheck) -> None:
        """Plan the health change of the run just started (as Docker's checks would go)."""
        if check.command in _FAILING_CHECKS:
            # Checks run every interval; those within the start period do not count.
            first = max(1, math.ceil(check.start_period / check.interval))
            delay, status = (first + check.retries - 1) * check.interval, "unhealthy"
        else:
            delay, status = check.interval, "healthy"
        change = HealthChange(
            anyio.current_time() + delay, next(_health_order), container_id, run, status
        )
        heapq.heappush(self._changes, change)

    def next_due(self) -> float | None:
        """When the next planned health change is due (None: none is planned)."""
        return self._changes[0].due if self._changes else None

    def pop_due(self) -> Sequence[HealthChange]:
        """Take the changes that are due, soonest first; the caller skips those of a run
        that ended."""
        changes = self._changes
        if not changes:
            return ()
        now = anyio.current_time()
        due = []
        while changes and changes[0].due <= now:
            due.append(heapq.heappop(changes))
        return due


__all__ = ["HealthChange", "HealthSchedule"]
