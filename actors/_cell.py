"""ActorCell: one spawned actor across its incarnations, and the loop that runs it.

Layer: ``actors``. Imports anyio and the standard library only.

An idle actor owns no task. Measured on this machine, an anyio task costs about 4.7 KB and a
receiver parked in a memory stream another 1.7 KB, which would put 100,000 idle actors near
800 MB. So the first message sent to an idle actor *activates* it: the sender hands the
actor to the dispatcher (``_dispatch``), whose worker runs a *turn*: it handles messages one at
a time for as long as the mailbox has any, yields once or twice when it runs dry (a busy
sender refills it meanwhile, so a steady stream costs nothing per message), then ends and
leaves the actor idle again.

The per-message path of a turn is lean: ``receive_nowait``, a type check that tells a plain
message from an ask or timer envelope, ``await handle(message)``. No task, cancel scope, event
or lock per message; a checkpoint every 64 messages keeps a busy actor from starving others.

Hooks run in the task that drives the lifecycle: ``started()`` in the spawner's (or the
restarting supervisor's), ``stopping()`` in the stopper's, each under ``current_node``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio import CancelScope, ClosedResourceError, EndOfStream, WouldBlock
from anyio.lowlevel import checkpoint

from actors._actor import Actor
from actors._errors import ActorCrashed, ActorStopped
from actors._mailbox import AskSlot, Mailbox, Signal
from actors._model import Restart
from actors._node import Node, current_node

if TYPE_CHECKING:
    from actors._actor import ActorRef
    from actors._supervisor import Supervisor
    from actors._system import ActorSystem

log = logging.getLogger(__name__)

STARTING, RUNNING, ENDED = 0, 1, 2
# A turn that finds the mailbox empty yields up to SPIN times before it ends: a steady
# sender (a producer loop, an asker awaiting each reply) refills it meanwhile, so the stream
# costs no activation per message. Yielding in vain lowers a cell's patience, down to zero
# for sparse traffic (heartbeats), with one probe in eight activations to notice a change.
SPIN = 2
FAIRNESS = 64  # messages a turn handles between forced checkpoints


def type_name(message: object) -> str:
    """The message's type for log lines: never the message itself (it may hold secrets)."""
    cls = type(message)
    return f"{cls.__module__}.{cls.__qualname__}"


class Incarnation:
    """One life of an actor: from its factory call to its crash or stop."""

    __slots__ = (
        "actor",
        "cell",
        "ended",
        "ended_event",
        "finishing",
        "leaving",
        "phase",
        "queued",
        "start_scope",
        "stopping",
        "turn_scope",
        "turning",
        "waiter",
    )

    def __init__(self, cell: ActorCell) -> None:
        self.cell = cell
        self.actor: Actor[Any] | None = None
        self.phase = STARTING
        self.ended = False
        self.stopping = False  # a halt asked it to stop (not reported as an exit)
        self.finishing = False  # the actor called finish(): a normal exit
        self.leaving = False  # stopping or finishing: the loop ends after this message
        self.turning = False  # a turn is queued or running
        self.queued = False  # a turn is queued in the dispatcher, not yet running
        self.turn_scope: CancelScope | None = None
        self.start_scope: CancelScope | None = None
        self.waiter: anyio.Event | None = None  # set when a start or a turn ends
        self.ended_event: anyio.Event | None = None

    def deliver_signal(self, message: object) -> None:
        """TimerTarget: queue a timer's message for this incarnation."""
        self.cell.deliver_signal(self, message)

    def notify(self) -> None:
        """Wake whoever waits for the current start or turn to end."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set()

    async def wait_change(self) -> None:
        """Wait until the current start or turn ends. Cancellation just stops the wait."""
        if self.waiter is None:
            self.waiter = anyio.Event()
        await self.waiter.wait()

    async def wait_ended(self) -> None:
        """Wait until this incarnation has ended. Cancellation just stops the wait."""
        if not self.ended:
            if self.ended_event is None:
                self.ended_event = anyio.Event()
            await self.ended_event.wait()


class ActorCell(Node):
    """One spawned actor: its mailbox, its ref, and its current incarnation."""

    __slots__ = ("dispatcher", "factory", "idle", "inc", "mailbox", "patience", "probes", "ref")

    def __init__(
        self,
        system: ActorSystem,
        parent: Supervisor,
        name: str,
        factory: Callable[[], Actor[Any]],
        restart: Restart,
        mailbox: Mailbox,
    ) -> None:
        from actors._actor import ActorRef

        super().__init__(system, parent, name, restart)
        self.parent: Supervisor = parent
        self.dispatcher = system._dispatcher
        self.factory = factory
        self.mailbox = mailbox
        self.ref: ActorRef[Any] = ActorRef(self)
        self.inc: Incarnation | None = None
        self.idle = False  # running, and no turn: the next message must activate it
        self.patience = SPIN  # checkpoints a turn waits on an empty mailbox before it ends
        self.probes = 0

    @property
    def running(self) -> bool:
        """Whether an incarnation exists (starting, running or ending)."""
        return self.inc is not None

    @property
    def state(self) -> str:
        """``running``, ``starting``, ``restarting`` or ``stopped``, for introspection."""
        inc = self.inc
        if self.final:
            return "stopped"
        if inc is None:
            return "restarting" if self.pending_restart else "stopped"
        if inc.phase == STARTING:
            return "restarting" if self.restarts else "starting"
        return "running"

    # -- messages --------------------------------------------------------------------------

    def activate(self) -> None:
        """Queue a turn for an idle actor that was just sent a message (never blocks)."""
        inc = self.inc
        if inc is None:  # pragma: no cover - idle implies an incarnation
            return
        self.idle = False
        inc.turning = inc.queued = True
        self.dispatcher.submit(inc)

    def deliver_signal(self, inc: Incarnation, message: object) -> None:
        """Queue a timer's message for ``inc``; if the mailbox is full, queue it in a task."""
        if inc.ended:
            return
        signal = Signal(inc, message)
        try:
            self.mailbox.tx.send_nowait(signal)
        except WouldBlock:
            tg = self.parent.tg
            if tg is not None:
                tg.start_soon(self._deliver_later, signal)
            return
        except (ClosedResourceError, anyio.BrokenResourceError):
            return
        if self.idle:
            self.activate()

    async def _deliver_later(self, signal: Signal) -> None:
        # Timer messages wait for room rather than follow the overflow policy: a deadline
        # must not be lost. Cancelled with the supervisor's task group if it waits that long.
        try:
            await self.mailbox.tx.send(signal)
        except (ClosedResourceError, anyio.BrokenResourceError):
            return
        if self.idle:
            self.activate()

    async def turn(self, inc: Incarnation) -> None:
        """Handle messages until the mailbox is empty or the actor leaves (a worker runs it).

        Cancellation ends the turn between or inside messages; an ask being handled gets
        ActorStopped.
        """
        current_node.set(self)
        crash: tuple[Exception, object] | None = None
        try:
            if not inc.leaving:
                crash = await self._drain(inc)
            if crash is None and inc.finishing and not inc.stopping:
                await self._run_stopping(inc)
        except BaseException:
            inc.turning = False
            inc.notify()
            raise
        inc.turning = False
        if crash is not None:
            exc, message = crash
            log.error(
                "actor %s crashed handling a %s",
                self.name,
                type_name(message),
                exc_info=exc,
                extra={"actor": self.name, "event": "crash", "message_type": type_name(message)},
            )
            self._end(inc, exc, report=not inc.stopping)
        elif inc.finishing and not inc.stopping:
            self._end(inc, None, report=True)
        elif not inc.leaving and self.inc is inc:
            self.idle = True  # mailbox empty, and nothing awaited since: safe to go idle
        inc.notify()

    async def _drain(self, inc: Incarnation) -> tuple[Exception, object] | None:
        actor = inc.actor
        assert actor is not None
        handle = actor.handle
        receive = self.mailbox.rx.receive_nowait
        spins = 0
        patience = self.patience
        if not patience:  # now and then, probe whether waiting a little pays off again
            self.probes = (self.probes + 1) & 7
            patience = 0 if self.probes else 1
        budget = FAIRNESS
        while not inc.leaving:
            try:
                message = receive()
            except WouldBlock:
                if spins >= patience:
                    if spins:
                        self.patience = spins - 1  # yielded in vain: yield less next time
                    return None
                spins += 1
                await checkpoint()
                continue
            except (EndOfStream, ClosedResourceError):
                return None
            if spins:  # a message came while we yielded: a steady sender, keep yielding
                spins = 0
                self.patience = patience = SPIN
            kind = type(message)
            slot: AskSlot | None = None
            if kind is AskSlot:
                slot = message
                message = slot.message
            elif kind is Signal:
                if message.target is not inc:
                    continue  # armed by an earlier incarnation: died with it
                message = message.message
            try:
                result = await handle(message)
            except Exception as exc:
                if slot is not None:
                    error = ActorCrashed(
                        f"actor {self.name!r} crashed handling a {type(message).__qualname__}"
                    )
                    error.__cause__ = exc
                    slot.fail(error)
                return exc, message
            except BaseException:
                if slot is not None:
                    slot.fail(ActorStopped(f"actor {self.name!r} stopped while handling it"))
                raise
            if slot is not None:
                slot.resolve(result)
            budget -= 1
            if not budget:
                budget = FAIRNESS
                await checkpoint()
        return None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, first: bool) -> None:
        """Run a new incarnation: call the factory, then ``started()`` in this task.

        Raises:
            ActorCrashed: ``first`` and the factory or ``started()`` raised.
            ActorStopped: ``first`` and the actor was stopped while starting.

        A restart (``first=False``) that fails is reported to the supervisor as a crash
        instead. Cancellation of the caller cancels ``started()`` and ends the incarnation.
        """
        from actors._actor import bind

        inc = Incarnation(self)
        self.inc = inc
        self.idle = False
        self.pending_restart = False
        scope = CancelScope()
        inc.start_scope = scope
        token = current_node.set(self)
        try:
            try:
                actor = self.factory()
                bind(actor, self, inc)
                inc.actor = actor
                with scope:
                    await actor.started()
            finally:
                current_node.reset(token)
                inc.start_scope = None
        except Exception as exc:
            log.error(
                "actor %s crashed in started()",
                self.name,
                exc_info=exc,
                extra={"actor": self.name, "event": "crash"},
            )
            self._end(inc, exc, report=not first and not inc.stopping)
            if first:
                raise ActorCrashed(f"actor {self.name!r} crashed in started()") from exc
            return
        except BaseException:
            self._end(inc, None, report=False)
            raise
        if scope.cancelled_caught:  # a halt cancelled started()
            self._end(inc, None, report=False)
            if first:
                raise ActorStopped(f"actor {self.name!r} was stopped while starting")
            return
        inc.phase = RUNNING
        inc.notify()
        if inc.stopping:
            return  # the halter takes it from here
        if inc.leaving or self.mailbox.depth:
            self.activate()
        else:
            self.idle = True

    async def halt(self, grace: float) -> None:
        """End the current incarnation: let the current message (or ``started()``) finish,
        run ``stopping()``, all within ``grace`` seconds; past that, cancel what remains.

        Shielded: a cancelled caller still waits for the halt, which the grace bounds.
        """
        self.void_restart()
        inc = self.inc
        if inc is None:
            return
        if inc.stopping:  # another halt is at work: wait for it
            with CancelScope(shield=True):
                await inc.wait_ended()
            return
        inc.stopping = inc.leaving = True
        self.idle = False
        if inc.queued:  # not running yet: withdraw it rather than wait for a worker
            inc.queued = inc.turning = False
        actor = inc.actor
        if (
            inc.phase == RUNNING
            and not inc.turning
            and actor is not None
            and type(actor).stopping is Actor.stopping
        ):
            self._end(inc, None, report=False)  # idle, no hook: nothing to wait for
            return
        with CancelScope(shield=True):
            deadline = anyio.current_time() + grace
            with CancelScope(deadline=deadline):
                while inc.phase == STARTING or inc.turning:
                    await inc.wait_change()
            while inc.phase == STARTING or inc.turning:  # grace is over: cancel the rest
                for scope in (inc.start_scope, inc.turn_scope):
                    if scope is not None:
                        scope.cancel()
                await inc.wait_change()
            if inc.phase == RUNNING:
                with CancelScope(deadline=deadline) as hook:
                    await self._run_stopping(inc)
                if hook.cancelled_caught:
                    log.warning("actor %s: stopping() overran its grace period", self.name)
                self._end(inc, None, report=False)

    async def _run_stopping(self, inc: Incarnation) -> None:
        actor = inc.actor
        assert actor is not None
        token = current_node.set(self)
        try:
            await actor.stopping()
        except Exception as exc:
            log.error("actor %s failed in stopping()", self.name, exc_info=exc)
        finally:
            current_node.reset(token)

    def _end(self, inc: Incarnation, exc: BaseException | None, *, report: bool) -> None:
        inc.phase = ENDED
        inc.ended = True
        if self.inc is inc:
            self.inc = None
            self.idle = False
        inc.notify()
        if inc.ended_event is not None:
            inc.ended_event.set()
        if report:
            self.parent.child_exited(self, exc)

    def finalize(self) -> None:
        """Forget the actor for good: close its mailbox (queued asks get ActorStopped),
        free its name. Idempotent."""
        if self.final:
            return
        self.final = self.doomed = True
        self.void_restart()
        self.idle = False
        self.mailbox.close()
        self.parent.forget(self)
        self.system._forget_actor(self)
