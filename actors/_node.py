"""What every member of a supervision tree has: actor cells and supervisors alike.

Layer: ``actors``. Imports anyio and the standard library only.

A node is the long-lived record of one spawned child. It survives restarts (each restart is a
new *incarnation* of the same node) and ends when the node is *finalized*: stopped for good,
never to run again. Its supervisor drives it through four operations, which both kinds of
node implement: ``start`` (a new incarnation), ``halt`` (end the current incarnation, gracefully
then by cancellation), ``finalize`` and ``state``.
"""

from __future__ import annotations

import collections
from contextvars import ContextVar
from typing import TYPE_CHECKING

import anyio

from actors._model import Restart

if TYPE_CHECKING:
    from actors._clock import Clock
    from actors._supervisor import Supervisor
    from actors._system import ActorSystem

# The node whose code the current task is running (an actor's turn, its started()/stopping()
# hooks, a supervisor's own tasks). ``ActorSystem.stop`` uses it to notice an actor stopping
# itself or one of its ancestors, which must not wait for its own end.
current_node: ContextVar[Node | None] = ContextVar("actors_current_node", default=None)


class Node:
    """Base of ActorCell and Supervisor: identity, place in the tree, restart bookkeeping."""

    __slots__ = (
        "_recent",
        "clock",
        "doomed",
        "final",
        "name",
        "parent",
        "pending_restart",
        "restart",
        "restart_gen",
        "restart_scope",
        "restarts",
        "system",
    )

    def __init__(
        self, system: ActorSystem, parent: Supervisor | None, name: str, restart: Restart
    ) -> None:
        self.system = system
        self.clock: Clock = system._clock
        self.parent = parent
        self.name = name
        self.restart = restart
        self.restarts = 0
        self.final = False  # finalized: will never run again
        self.doomed = False  # being stopped for good: must not be restarted
        self.pending_restart = False
        self.restart_gen = 0  # bumped to void a scheduled restart
        self.restart_scope: anyio.CancelScope | None = None  # a restart's backoff sleep
        self._recent: collections.deque[float] | None = None  # own restart times (backoff)

    @property
    def running(self) -> bool:
        """Whether an incarnation exists (starting, running or ending)."""
        raise NotImplementedError

    @property
    def state(self) -> str:
        """``running``, ``starting``, ``restarting`` or ``stopped``, for introspection."""
        raise NotImplementedError

    async def start(self, *, first: bool) -> None:
        """Run a new incarnation; return once it is up (an actor's started() completed)."""
        raise NotImplementedError

    async def halt(self, grace: float) -> None:
        """End the current incarnation: gracefully, cancelled after ``grace`` seconds.

        Not reported to the supervisor as an exit. Shielded: cancellation of the caller waits
        for the halt to complete, which the grace period bounds.
        """
        raise NotImplementedError

    def finalize(self) -> None:
        """Forget the node for good (its incarnation must have ended). Idempotent."""
        raise NotImplementedError

    def is_within(self, other: Node) -> bool:
        """Whether this node is ``other`` or a descendant of it."""
        node: Node | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def void_restart(self) -> None:
        """Cancel a scheduled restart (its backoff sleep, or the start it leads to)."""
        self.restart_gen += 1
        self.pending_restart = False
        scope = self.restart_scope
        if scope is not None:
            self.restart_scope = None
            scope.cancel()

    def backoff(self, now: float, within: float, base: float, cap: float) -> float:
        """The delay before the next restart: doubles with each restart in ``within`` s."""
        recent = self._recent
        if recent is None:
            recent = self._recent = collections.deque()
        while recent and recent[0] <= now - within:
            recent.popleft()
        delay = min(cap, base * (2.0 ** len(recent))) if len(recent) < 64 else cap
        recent.append(now)
        return delay
