"""ActorSystem and open_actor_system: the root of a tree, the registry, introspection.

Layer: ``actors``. Imports anyio and the standard library only.

``open_actor_system`` owns one task group holding the system's clock task, the dispatcher's
workers and the root supervisor (one_for_one). Leaving the block stops the whole tree in
reverse start order, shielded from cancellation (each child's grace period bounds it), then
forgets every actor so their mailboxes are closed and nothing is left running.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from anyio import CancelScope
from anyio.abc import TaskGroup

from actors._actor import Actor, ActorRef
from actors._cell import ActorCell
from actors._clock import Clock
from actors._dispatch import Dispatcher
from actors._errors import ActorStopped, SupervisorGaveUp
from actors._mailbox import Mailbox
from actors._model import ActorInfo, Overflow, Restart, Strategy, SupervisorInfo
from actors._node import Node, current_node
from actors._supervisor import Supervisor, SupervisorRef

log = logging.getLogger(__name__)

M = TypeVar("M")


class ActorSystem:
    """A running actor system: spawn actors and supervisors, find them, stop them.

    Get one from ``open_actor_system``; it is valid inside that block only.
    """

    def __init__(self, name: str, tg: TaskGroup, clock: Clock) -> None:
        self.name = name
        self._tg: TaskGroup | None = tg
        self._clock = clock
        self._dispatcher = Dispatcher(tg)
        self._actors: dict[str, ActorCell] = {}
        self._supervisors: dict[str, Supervisor] = {}
        self._root: Supervisor | None = None
        self._gave_up: SupervisorGaveUp | None = None

    def __repr__(self) -> str:
        return f"<ActorSystem {self.name!r}: {len(self._actors)} actors>"

    @property
    def root(self) -> SupervisorRef:
        """The root supervisor (one_for_one), parent of everything spawned without one."""
        assert self._root is not None
        return self._root.ref

    def _parent(self, supervisor: SupervisorRef | None) -> Supervisor:
        sup = self._root if supervisor is None else supervisor._sup
        assert sup is not None
        if sup.system is not self:
            raise ValueError(f"supervisor {sup.name!r} belongs to another actor system")
        if not sup.accepting:
            raise ActorStopped(f"supervisor {sup.name!r} is not running")
        return sup

    async def spawn(
        self,
        factory: Callable[[], Actor[M]],
        *,
        name: str,
        supervisor: SupervisorRef | None = None,
        restart: Restart = Restart.PERMANENT,
        mailbox_size: int = 1024,
        overflow: Overflow = Overflow.BLOCK,
    ) -> ActorRef[M]:
        """Start an actor under ``supervisor`` (default: the root); return its ref.

        ``factory`` is called again on each restart, so a restarted actor starts fresh.
        Returns once the actor's ``started()`` hook has completed, which runs in this task.

        Raises:
            ValueError: ``name`` is taken, or ``mailbox_size`` < 1.
            ActorCrashed: the factory or ``started()`` raised (the actor is forgotten).
            ActorStopped: the supervisor is not running, or stopped the actor meanwhile.

        Cancellation cancels ``started()``; the actor is forgotten.
        """
        if name in self._actors:
            raise ValueError(f"an actor named {name!r} already exists in {self.name!r}")
        parent = self._parent(supervisor)
        cell = ActorCell(
            self, parent, name, factory, restart, Mailbox(name, mailbox_size, overflow)
        )
        self._actors[name] = cell
        parent.children[cell] = None
        try:
            await cell.start(first=True)
        except BaseException:
            cell.finalize()
            raise
        ref: ActorRef[M] = cell.ref
        return ref

    async def spawn_supervisor(
        self,
        name: str,
        *,
        parent: SupervisorRef | None = None,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 5,
        within: float = 10.0,
        grace: float = 5.0,
        backoff_base: float = 0.01,
        backoff_cap: float = 1.0,
    ) -> SupervisorRef:
        """Start a supervisor under ``parent`` (default: the root); return its ref.

        Args:
            name: unique among supervisors (actors have their own namespace).
            parent: its own supervisor.
            strategy: one_for_one or one_for_all.
            max_restarts: restarts allowed within ``within`` seconds; one more and it gives up.
            within: the intensity window, in seconds.
            grace: seconds each child gets to stop gracefully before it is cancelled.
            backoff_base: delay before a child's first restart; doubles per recent restart.
            backoff_cap: the longest restart delay.

        Raises:
            ValueError: ``name`` is taken, or a number is out of range.
            ActorStopped: ``parent`` is not running.

        Cancellation cancels the start.
        """
        if name in self._supervisors:
            raise ValueError(f"a supervisor named {name!r} already exists in {self.name!r}")
        host = self._parent(parent)
        sup = Supervisor(
            self,
            host,
            name,
            strategy=strategy,
            max_restarts=max_restarts,
            within=within,
            grace=grace,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self._supervisors[name] = sup
        host.children[sup] = None
        try:
            await sup.start(first=True)
        except BaseException:
            sup.finalize()
            raise
        return sup.ref

    def lookup(self, name: str) -> ActorRef[Any] | None:
        """The actor called ``name``, or None (never spawned, or gone for good)."""
        cell = self._actors.get(name)
        return None if cell is None else cell.ref

    def lookup_supervisor(self, name: str) -> SupervisorRef | None:
        """The supervisor called ``name``, or None."""
        sup = self._supervisors.get(name)
        return None if sup is None else sup.ref

    def snapshot(self) -> list[ActorInfo]:
        """Every actor now in the system: mailbox depth, restarts, state (O(actors))."""
        return [
            ActorInfo(
                name=cell.name,
                supervisor=cell.parent.name,
                mailbox_depth=cell.mailbox.depth,
                restarts=cell.restarts,
                state=cell.state,
                mailbox_size=cell.mailbox.size,
                dropped=cell.mailbox.dropped,
            )
            for cell in list(self._actors.values())
        ]

    def supervisors(self) -> list[SupervisorInfo]:
        """Every supervisor now in the system, the root first."""
        return [
            SupervisorInfo(
                name=sup.name,
                parent=None if sup.parent is None else sup.parent.name,
                strategy=sup.strategy,
                children=len(sup.children),
                restarts=sup.restarts,
                state=sup.state,
            )
            for sup in list(self._supervisors.values())
        ]

    async def stop(self, ref: ActorRef[Any] | SupervisorRef) -> None:
        """Stop an actor, or a supervisor and its subtree, for good (never restarted).

        An actor finishes its current message, then runs ``stopping()``; a supervisor stops
        its children in reverse start order. Each gets its supervisor's grace period, then
        is cancelled. Queued asks get ActorStopped. Stopping what is already gone does
        nothing. Called from inside the target (an actor stopping itself or an ancestor),
        it returns at once and the stop completes once the current message is handled.

        Raises:
            ValueError: ``ref`` is the root, or belongs to another system.

        Shielded: cancellation of the caller waits for the stop, which the grace bounds.
        """
        node: Node = ref._cell if isinstance(ref, ActorRef) else ref._sup
        if node.system is not self:
            raise ValueError(f"{ref!r} belongs to another actor system")
        if node.parent is None:
            raise ValueError("the root supervisor stops when open_actor_system's block ends")
        if node.final:
            return
        node.doomed = True
        node.void_restart()
        caller = current_node.get()
        if caller is not None and caller.is_within(node):
            tg = node.parent.tg
            if tg is not None:
                tg.start_soon(_stop_for_good, node, name=f"stop {node.name}")
                return
        await _stop_for_good(node)

    # -- runtime callbacks -----------------------------------------------------------------

    def _forget_actor(self, cell: ActorCell) -> None:
        if self._actors.get(cell.name) is cell:
            del self._actors[cell.name]

    def _forget_supervisor(self, sup: Supervisor) -> None:
        if self._supervisors.get(sup.name) is sup:
            del self._supervisors[sup.name]

    def _root_exited(self, error: SupervisorGaveUp) -> None:
        self._gave_up = error
        if self._tg is not None:
            self._tg.cancel_scope.cancel()


async def _stop_for_good(node: Node) -> None:
    parent = node.parent
    assert parent is not None
    with CancelScope(shield=True):
        await node.halt(parent.grace)
        node.finalize()


@asynccontextmanager
async def open_actor_system(
    name: str = "system",
    *,
    max_restarts: int = 5,
    within: float = 10.0,
    grace: float = 5.0,
    backoff_base: float = 0.01,
    backoff_cap: float = 1.0,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the block.

    The root supervisor is one_for_one with the given intensity (``max_restarts`` within
    ``within`` seconds), ``grace`` and restart backoff. Leaving the block stops the whole
    tree in reverse start order, each child given its grace period, then cancelled.

    Raises:
        SupervisorGaveUp: the root gave up; the block's body is cancelled first.

    An exception raised by the body propagates unchanged, after the shutdown. Cancellation
    of the block still runs the shutdown (shielded, bounded by the grace periods).
    """
    clock = Clock()
    body_error: Exception | None = None
    async with anyio.create_task_group() as tg:
        await tg.start(clock.run, name=f"actors clock {name}")
        system = ActorSystem(name, tg, clock)
        root = Supervisor(
            system,
            None,
            name,
            strategy=Strategy.ONE_FOR_ONE,
            max_restarts=max_restarts,
            within=within,
            grace=grace,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        system._root = root
        system._supervisors[name] = root
        log.debug("actor system %s starting", name, extra={"supervisor": name, "event": "open"})
        try:
            await root.start(first=True)
            try:
                yield system
            except Exception as exc:  # the body's own error: re-raised, unwrapped, below
                body_error = exc
        finally:
            with CancelScope(shield=True):
                await root.halt(grace)
                root.finalize()
            system._tg = None
            tg.cancel_scope.cancel()  # the clock and the idle workers
            log.debug("actor system %s stopped", name, extra={"supervisor": name, "event": "close"})
    gave_up = system._gave_up or root.gave_up  # it may give up while the block ends
    if gave_up is not None:
        raise gave_up
    if body_error is not None:
        raise body_error
