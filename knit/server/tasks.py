"""TaskRun: one task from publication to its end, driven by its DeploymentActor.

Layer: server. Publishes the task on ``knit.tasks.{node}`` (or ``knit.tasks.broadcast``),
waits for the agent's acceptance with a deadline, re-publishes the same task id with
exponential backoff (the agent runs a task id once), and gives up after ``max_attempts`` so
the deployment can place the instance elsewhere. Once accepted, a second deadline bounds the
run. No task waits forever. Every change of state is an event.

While the server has no NATS connection nothing can be sent or heard: a deadline that passes
then spends no attempt and looks again a second later; a task last sent before a
reconnection is sent again at its next deadline without spending one either (the message may
have been lost with the connection). A long NATS outage thus neither fails tasks nor makes
them wait a long backoff once NATS is back.

A TaskRun is not an actor: its deployment's actor owns it, arms its deadline on its own
clock, and hands it the agent's statuses (the bridge finds the deployment through
``ServerContext.task_owners``). An actor per task cost a spawn, a registration and two
more hops per placement (docs/decisions/0008-tasks-run-in-their-deployment.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from actors import Deadline
from knit.bus import Bus
from knit.errors import KnitError
from knit.server.messages import TaskEnded
from knit.server.repo import Repo
from knit.wire.messages import Task, TaskStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskTiming:
    """Deadlines of a task.

    Attributes:
        accept: seconds to wait for ``accepted`` after a publication (doubles per attempt).
        run: seconds an accepted task may take before it is declared failed.
        max_attempts: publications before giving up on the node.
    """

    accept: float = 3.0
    run: float = 660.0
    max_attempts: int = 4

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> TaskTiming:
        """The defaults, with ``accept`` from ``KNIT_TASK_ACCEPT_TIMEOUT`` if set (seconds).

        Raises:
            ValueError: the variable is not a positive number.
        """
        raw = environ.get(ACCEPT_TIMEOUT_ENV, "").strip()
        if not raw:
            return cls()
        accept = float(raw)
        if not accept > 0:
            raise ValueError(f"{ACCEPT_TIMEOUT_ENV} must be a positive number of seconds")
        return cls(accept=accept)


TASK_TTL = 600.0
"""Seconds a task may still be started after the server made it (``expires_at``): a task
captured on the bus cannot be replayed later. Its re-deliveries answer from the agent's
memory of it (a task id runs once), so only its first start must fall within the TTL; the
agents' clocks must be within a few minutes of the server's."""

ACCEPT_TIMEOUT_ENV = "KNIT_TASK_ACCEPT_TIMEOUT"
"""Environment variable: seconds to wait for a task's acceptance before re-publishing it."""
DISCONNECTED_POLL = 1.0
"""Seconds between two looks at the bus while it is disconnected."""
RUN_CHECK = 15.0
"""Seconds between two looks at an accepted task: if the server's NATS connection was
re-established since the task was last sent, its result may have been lost with it, so the
task is sent again (the agent runs a task id once and answers a finished one with its final
status again)."""


class TaskRun:
    """One task: publish, wait, retry; its methods return the ``TaskEnded`` once it ends.

    Args:
        task: the wire task (its id is the same on every attempt).
        node_id: where it goes (None: the broadcast queue).
        message: the task's subject and proved payload (``ServerContext.task_message``),
            sent as they are on every attempt.
        bus: the NATS adapter.
        repo: the store (task states and events).
        timing: its deadlines.
        arm: arms this task's deadline (seconds from now) on the owner's clock; the owner
            calls :meth:`deadline_passed` when it expires.
        deployment_id: recorded with its events.
    """

    __slots__ = (
        "accepted",
        "arm",
        "attempt",
        "bus",
        "deployment_id",
        "ended",
        "message",
        "node_id",
        "reconnects",
        "repo",
        "run_until",
        "task",
        "timer",
        "timing",
    )

    def __init__(
        self,
        *,
        task: Task,
        node_id: str | None,
        message: tuple[str, bytes],
        bus: Bus,
        repo: Repo,
        timing: TaskTiming,
        arm: Callable[[float], Deadline],
        deployment_id: str | None = None,
    ) -> None:
        self.task = task
        self.node_id = node_id
        self.message = message
        self.bus = bus
        self.repo = repo
        self.timing = timing
        self.arm = arm
        self.deployment_id = deployment_id
        self.attempt = 0
        self.accepted = False
        self.ended = False
        self.timer: Deadline | None = None
        self.reconnects = bus.stats.reconnects
        self.run_until = 0.0

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self.task.task_id

    @property
    def kind(self) -> str:
        """``deploy`` or ``stop``."""
        return self.task.kind

    async def start(self) -> None:
        """Publish the first attempt and arm the acceptance deadline."""
        await self.publish()
        self.timer = self.arm(self.timing.accept)

    def _reset(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.reset(seconds)

    async def publish(self, *, counted: bool = True) -> None:
        """Publish the task (same id every attempt); a bus failure counts as an attempt.

        ``counted`` False sends it again without spending an attempt (the last one went out
        before a reconnection).
        """
        if counted:
            self.attempt += 1
        self.reconnects = self.bus.stats.reconnects
        if self.attempt > 1 or not counted:  # the first is stored with the task
            self.repo.task_state(self.task.task_id, "published", attempt=self.attempt)
        where = f"node {self.node_id}" if self.node_id else "any node"
        if not counted:
            self.record(
                "task.retried",
                f"{self.task.kind} task sent again to {where}: NATS reconnected since the last "
                f"attempt ({self.attempt})",
            )
        elif self.attempt > 1:
            self.record(
                "task.retried",
                f"{self.task.kind} task not accepted yet: attempt {self.attempt} to {where}",
            )
        else:
            self.record("task.published", f"{self.task.kind} task sent to {where}")
        await self._send()

    async def _send(self) -> None:
        """Put the task on the bus; a failure is logged (a deadline sends it again)."""
        try:
            await self.bus.publish(*self.message)
        except KnitError as exc:
            log.warning("task %s not published: %s", self.task.task_id, exc)

    def status(self, status: TaskStatus) -> TaskEnded | None:
        """Follow one of the agent's reports; the end, if it is one."""
        if self.ended or (self.node_id is not None and status.node_id != self.node_id):
            return None  # a status from another node than the one it was sent to
        if status.state in ("accepted", "progress"):
            if not self.accepted:
                self.accepted = True
                self.repo.task_state(self.task.task_id, "accepted", attempt=self.attempt)
                self.record(
                    "task.accepted",
                    f"{self.task.kind} task accepted by node {status.node_id}",
                    node_id=status.node_id,
                )
            self.run_until = time.monotonic() + self.timing.run
            self._reset(min(self.timing.run, RUN_CHECK))
            return None
        return self.end(
            TaskEnded(
                task_id=self.task.task_id,
                instance_id=self.task.instance_id,
                node_id=status.node_id,
                kind=self.task.kind,
                succeeded=status.state == "succeeded",
                container_id=status.container_id,
                error=_describe(status.step, status.error),
                at=status.at,
                health=status.health,
            )
        )

    def abandon(self, reason: str) -> TaskEnded | None:
        """Its deployment no longer waits for it (its node was lost): end it as failed."""
        if self.ended:
            return None
        return self.end(self._failure(reason))

    async def deadline_passed(self) -> TaskEnded | None:
        """The deadline armed last expired: retry, look again, or give up."""
        if self.ended:
            return None
        if not self.accepted and not self.bus.connected:
            # Nothing can be sent or heard now: spend no attempt, look again soon.
            self._reset(min(self.timing.accept, DISCONNECTED_POLL))
            return None
        if not self.accepted and self.bus.stats.reconnects != self.reconnects:
            # The last attempt went out before a reconnection and may be lost with it.
            await self.publish(counted=False)
            self._reset(self.timing.accept)
            return None
        if self.accepted:
            left = self.run_until - time.monotonic()
            if left <= 0:
                return self.end(self._failure("the agent did not finish the task in time"))
            if self.bus.connected and self.bus.stats.reconnects != self.reconnects:
                # Its result may have been lost with the connection: ask again, quietly.
                self.reconnects = self.bus.stats.reconnects
                await self._send()
            self._reset(min(left, RUN_CHECK))
            return None
        if self.attempt >= self.timing.max_attempts:
            ended = self._failure(f"not accepted after {self.attempt} attempts")
            return self.end(dataclasses.replace(ended, unaccepted=True))
        await self.publish()
        self._reset(self.timing.accept * (2 ** (self.attempt - 1)))
        return None

    def cancel(self) -> None:
        """Forget it without an end (it was replaced by a new task for its instance)."""
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()

    def _failure(self, reason: str) -> TaskEnded:
        return TaskEnded(
            task_id=self.task.task_id,
            instance_id=self.task.instance_id,
            node_id=self.node_id,
            kind=self.task.kind,
            succeeded=False,
            error=reason,
        )

    def end(self, ended: TaskEnded) -> TaskEnded:
        """Record the end and stop the deadline; returns ``ended`` for the deployment."""
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        self.repo.task_state(
            self.task.task_id,
            "succeeded" if ended.succeeded else "failed",
            attempt=self.attempt,
            error=ended.error,
        )
        if ended.succeeded:
            self.record(
                "task.succeeded",
                f"{self.task.kind} task succeeded on node {ended.node_id}",
                node_id=ended.node_id,
            )
        else:
            self.record(
                "task.failed",
                f"{self.task.kind} task failed: {ended.error}",
                node_id=ended.node_id,
            )
        return ended

    def record(self, kind: str, message: str, *, node_id: str | None = None) -> None:
        """An event about this task (with its deployment, instance and node)."""
        self.repo.event(
            kind,
            message,
            node_id=node_id or self.node_id,
            deployment_id=self.deployment_id,
            instance_id=self.task.instance_id,
            task_id=self.task.task_id,
        )


def _describe(step: str | None, error: str | None) -> str | None:
    if error is None:
        return None
    return f"{step}: {error}" if step else error
