"""Supervisor: owns children in a task group, restarts them, gives up past an intensity.

Layer: ``actors``. Imports anyio and the standard library only.

A supervisor is itself a node of the tree (the root's parent is the system). Its one task,
``_main``, owns the task group in which its children's turns, its sub-supervisors and its
restart helpers run, and waits for the signal to stop. Decisions are synchronous
(``child_exited``); anything that waits (a backoff sleep, a one_for_all round) runs in a
helper task of its own, so one restarting child never delays another.

Restart intensity is Erlang's: more than ``max_restarts`` restarts within ``within`` seconds
and the supervisor gives up: it stops its children (reverse start order), forgets its
TEMPORARY ones, and ends with SupervisorGaveUp, which its own supervisor treats as a crash.
Restarting a supervisor starts its remaining children again, in start order.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

import anyio
from anyio import CancelScope
from anyio.abc import TaskGroup, TaskStatus

from actors._errors import SupervisorGaveUp
from actors._model import Restart, Strategy
from actors._node import Node, current_node

if TYPE_CHECKING:
    from actors._system import ActorSystem

log = logging.getLogger(__name__)

NEW, STARTING, RUNNING, HALTING, ENDED = range(5)


class SupervisorRef:
    """The handle of a supervisor: pass it to ``spawn``/``spawn_supervisor``/``stop``."""

    __slots__ = ("_sup", "name")

    def __init__(self, sup: Supervisor) -> None:
        self.name = sup.name
        self._sup = sup

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.name!r}{'' if self.alive else ' (stopped)'}>"

    @property
    def alive(self) -> bool:
        """False once the supervisor is gone for good."""
        return not self._sup.final


class Supervisor(Node):
    """A supervisor node: its children, policy, and restart history."""

    __slots__ = (
        "backoff_base",
        "backoff_cap",
        "children",
        "ended_event",
        "gave_up",
        "grace",
        "history",
        "intended",
        "lock",
        "max_restarts",
        "phase",
        "ref",
        "stop_event",
        "strategy",
        "tg",
        "within",
    )

    def __init__(
        self,
        system: ActorSystem,
        parent: Supervisor | None,
        name: str,
        *,
        strategy: Strategy,
        max_restarts: int,
        within: float,
        grace: float,
        backoff_base: float,
        backoff_cap: float,
    ) -> None:
        super().__init__(system, parent, name, Restart.PERMANENT)
        if max_restarts < 0 or within <= 0 or grace < 0 or backoff_base < 0 or backoff_cap < 0:
            raise ValueError("max_restarts, grace and backoff must be >= 0, within > 0")
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.grace = grace
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.children: dict[Node, None] = {}  # insertion-ordered: start order
        self.tg: TaskGroup | None = None
        self.phase = NEW
        self.ref = SupervisorRef(self)
        self.history: collections.deque[float] = collections.deque()
        self.stop_event: anyio.Event | None = None
        self.ended_event: anyio.Event | None = None
        self.intended = False  # halted on purpose: its end is not reported as a crash
        self.gave_up: SupervisorGaveUp | None = None
        self.lock: anyio.Lock | None = None  # serialises one_for_all rounds

    @property
    def running(self) -> bool:
        """Whether its task is alive (starting, running or halting)."""
        return self.phase in (STARTING, RUNNING, HALTING)

    @property
    def accepting(self) -> bool:
        """Whether it takes new children and restarts old ones."""
        stop = self.stop_event
        return self.phase in (STARTING, RUNNING) and stop is not None and not stop.is_set()

    @property
    def state(self) -> str:
        """``running``, ``starting``, ``restarting`` or ``stopped``, for introspection."""
        if self.final:
            return "stopped"
        if self.phase == STARTING:
            return "restarting" if self.restarts else "starting"
        if self.phase == RUNNING:
            return "running"
        return "restarting" if self.pending_restart else "stopped"

    def forget(self, child: Node) -> None:
        """Drop a finalized child."""
        self.children.pop(child, None)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, first: bool) -> None:
        """Start the supervisor's task (and, on a restart, its remaining children).

        Cancellation of the caller cancels the start.
        """
        self.pending_restart = False
        self.stop_event = anyio.Event()
        self.ended_event = anyio.Event()
        self.intended = False
        self.gave_up = None
        self.history.clear()
        self.phase = STARTING
        host = self.parent.tg if self.parent is not None else self.system._tg
        assert host is not None
        try:
            await host.start(self._main, first, name=f"supervisor {self.name}")
        except BaseException:
            if self.phase == STARTING and self.tg is None:  # its task never ran
                self.phase = ENDED
                self.ended_event.set()
            raise

    async def _main(self, first: bool, *, task_status: TaskStatus[None]) -> None:
        current_node.set(self)
        stop = self.stop_event
        ended = self.ended_event
        assert stop is not None and ended is not None
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                if not first:
                    for child in list(self.children):
                        if stop.is_set():
                            break
                        if child.restart is Restart.TEMPORARY:
                            child.finalize()  # temporary children are never restarted
                        elif not child.doomed and not child.running:
                            child.restarts += 1
                            await child.start(first=False)
                if self.phase == STARTING:
                    self.phase = RUNNING
                log.debug(
                    "supervisor %s %s",
                    self.name,
                    "started" if first else "restarted",
                    extra={"supervisor": self.name, "event": "started"},
                )
                task_status.started()
                try:
                    await stop.wait()
                finally:  # also when cancelled from outside: stopping() hooks still run
                    self.phase = HALTING
                    for child in reversed(list(self.children)):
                        await child.halt(self.grace)  # shielded
                    if self.gave_up is not None and not self.intended:
                        for child in list(self.children):
                            if child.restart is Restart.TEMPORARY:
                                child.finalize()  # never restarted: gone now
                    tg.cancel_scope.cancel()  # restart helpers still sleeping
        finally:
            self.phase = ENDED
            self.tg = None
            ended.set()
        if not self.intended:
            error = self.gave_up or SupervisorGaveUp(f"supervisor {self.name!r} ended")
            if self.parent is not None:
                self.parent.child_exited(self, error)
            else:
                self.system._root_exited(error)

    async def halt(self, grace: float) -> None:
        """Stop the supervisor: its children in reverse start order, each given the
        supervisor's own grace period (``grace`` is not used: the children's bound it).

        Shielded: a cancelled caller still waits for the halt to complete.
        """
        with CancelScope(shield=True):
            self.void_restart()
            if self.phase in (NEW, ENDED):
                return
            assert self.stop_event is not None and self.ended_event is not None
            self.intended = True
            self.stop_event.set()
            await self.ended_event.wait()

    def finalize(self) -> None:
        """Forget the supervisor and its whole subtree for good. Idempotent."""
        if self.final:
            return
        self.final = self.doomed = True
        self.void_restart()
        for child in list(self.children):
            child.finalize()
        if self.parent is not None:
            self.parent.forget(self)
        self.system._forget_supervisor(self)

    # -- decisions -------------------------------------------------------------------------

    def child_exited(self, child: Node, exc: BaseException | None) -> None:
        """A child's incarnation ended on its own (``exc`` None: a normal exit). Decide."""
        if not self.accepting or child.doomed:
            return  # we are stopping it ourselves
        if exc is None:
            again = child.restart is Restart.PERMANENT
        else:
            again = child.restart is not Restart.TEMPORARY
        if not again:
            log.info(
                "supervisor %s: %s ended, not restarted",
                self.name,
                child.name,
                extra={"supervisor": self.name, "actor": child.name, "event": "forget"},
            )
            child.finalize()
            return
        now = anyio.current_time()
        history = self.history
        while history and history[0] <= now - self.within:
            history.popleft()
        if len(history) >= self.max_restarts:
            self._give_up(child, exc)
            return
        history.append(now)
        delay = child.backoff(now, self.within, self.backoff_base, self.backoff_cap)
        child.pending_restart = True
        log.warning(
            "supervisor %s: restarting %s in %.3f s (%s)",
            self.name,
            child.name,
            delay,
            "crashed" if exc is not None else "exited",
            extra={"supervisor": self.name, "actor": child.name, "event": "restart"},
        )
        tg = self.tg
        assert tg is not None
        if self.strategy is Strategy.ONE_FOR_ONE:
            tg.start_soon(self._restart_one, child, delay, child.restart_gen)
        else:
            tg.start_soon(self._restart_all, child, delay)

    def _give_up(self, child: Node, exc: BaseException | None) -> None:
        error = SupervisorGaveUp(
            f"supervisor {self.name!r} gave up: {child.name!r} ended and more than "
            f"{self.max_restarts} restarts within {self.within} s would follow"
        )
        error.__cause__ = exc
        self.gave_up = error
        log.error(
            "%s", error, extra={"supervisor": self.name, "actor": child.name, "event": "gave_up"}
        )
        assert self.stop_event is not None
        self.stop_event.set()

    async def _restart_one(self, child: Node, delay: float, gen: int) -> None:
        current_node.set(self)
        with CancelScope() as scope:
            child.restart_scope = scope
            await anyio.sleep(delay)
        if child.restart_scope is scope:
            child.restart_scope = None
        if child.restart_gen != gen or child.doomed or child.running or not self.accepting:
            return
        child.restarts += 1
        await child.start(first=False)

    async def _restart_all(self, crashed: Node, delay: float) -> None:
        current_node.set(self)
        if self.lock is None:
            self.lock = anyio.Lock()
        async with self.lock:
            if not self.accepting:
                return
            for child in reversed(list(self.children)):
                if child is not crashed and not child.doomed:
                    child.pending_restart = True
                    await child.halt(self.grace)  # shielded
                    child.pending_restart = True
            for child in list(self.children):
                if child.restart is Restart.TEMPORARY and not child.running:
                    child.finalize()
            await anyio.sleep(delay)
            for child in list(self.children):
                if not self.accepting:
                    return
                if not child.doomed and not child.running:
                    child.restarts += 1
                    await child.start(first=False)
