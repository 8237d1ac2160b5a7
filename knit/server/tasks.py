"""TaskActor: one task from publication to its end.

Layer: server. Publishes the task on ``knit.tasks.{node}`` (or ``knit.tasks.broadcast``),
waits for the agent's acceptance with a deadline, re-publishes the same task id with
exponential backoff (the agent runs a task id once), and gives up after ``max_attempts`` so
the deployment can place the instance elsewhere. Once accepted, a second deadline bounds the
run. No task waits forever.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors import Actor, ActorRef, Deadline
from knit.bus import Bus
from knit.errors import KnitError
from knit.server.messages import AckDeadline, StatusReceived, TaskEnded
from knit.server.repo import Repo
from knit.wire import subjects
from knit.wire.messages import Task, encode

log = logging.getLogger(__name__)

TaskMessage = StatusReceived | AckDeadline


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


class TaskActor(Actor[TaskMessage]):
    """Owns one task: publish, wait, retry, report the end to its deployment."""

    def __init__(
        self,
        *,
        task: Task,
        node_id: str | None,
        report: Callable[[TaskEnded], Awaitable[None]],
        bus: Bus,
        repo: Repo,
        timing: TaskTiming,
    ) -> None:
        self.task = task
        self.node_id = node_id
        self.report = report
        self.bus = bus
        self.repo = repo
        self.timing = timing
        self.attempt = 0
        self.accepted = False
        self.ended = False
        self.timer: Deadline | None = None

    @property
    def subject(self) -> str:
        """Where the task goes: its node's subject, or the broadcast queue."""
        return subjects.tasks_for(self.node_id) if self.node_id else subjects.TASKS_BROADCAST

    async def started(self) -> None:
        """Publish the first attempt and arm the acceptance deadline."""
        await self.publish()
        self.timer = self.deadline(self.timing.accept, AckDeadline())

    async def publish(self) -> None:
        """Publish the task (same id every attempt); a bus failure counts as an attempt."""
        self.attempt += 1
        self.repo.task_state(self.task.task_id, "published", attempt=self.attempt)
        if self.attempt > 1:
            self.repo.event(
                "task.retried",
                f"{self.task.kind} task not accepted yet: attempt {self.attempt}",
                node_id=self.node_id,
                instance_id=self.task.instance_id,
                task_id=self.task.task_id,
            )
        try:
            await self.bus.publish(self.subject, encode(self.task))
        except KnitError as exc:
            log.warning("task %s not published: %s", self.task.task_id, exc)

    async def handle(self, message: TaskMessage) -> None:
        """Follow the agent's reports, or retry when the deadline passes."""
        if self.ended:
            return
        if isinstance(message, StatusReceived):
            status = message.status
            if status.state in ("accepted", "progress"):
                if not self.accepted:
                    self.accepted = True
                    self.repo.task_state(self.task.task_id, "accepted", attempt=self.attempt)
                if self.timer is not None:
                    self.timer.reset(self.timing.run)
                return
            await self.end(
                TaskEnded(
                    task_id=self.task.task_id,
                    instance_id=self.task.instance_id,
                    node_id=status.node_id,
                    kind=self.task.kind,
                    succeeded=status.state == "succeeded",
                    container_id=status.container_id,
                    error=_describe(status.step, status.error),
                )
            )
            return
        if self.accepted:
            await self.end(self._failure("the agent did not finish the task in time"))
            return
        if self.attempt >= self.timing.max_attempts:
            ended = self._failure(f"not accepted after {self.attempt} attempts")
            await self.end(dataclasses.replace(ended, unaccepted=True))
            return
        await self.publish()
        if self.timer is not None:
            self.timer.reset(self.timing.accept * (2 ** (self.attempt - 1)))

    def _failure(self, reason: str) -> TaskEnded:
        return TaskEnded(
            task_id=self.task.task_id,
            instance_id=self.task.instance_id,
            node_id=self.node_id,
            kind=self.task.kind,
            succeeded=False,
            error=reason,
        )

    async def end(self, ended: TaskEnded) -> None:
        """Record the end, tell the deployment, and finish this actor."""
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        self.repo.task_state(
            self.task.task_id,
            "succeeded" if ended.succeeded else "failed",
            attempt=self.attempt,
            error=ended.error,
        )
        if not ended.succeeded:
            self.repo.event(
                "task.failed",
                f"{self.task.kind} task failed: {ended.error}",
                node_id=ended.node_id,
                instance_id=self.task.instance_id,
                task_id=self.task.task_id,
            )
        self.finish()
        await self.report(ended)


def _describe(step: str | None, error: str | None) -> str | None:
    if error is None:
        return None
    return f"{step}: {error}" if step else error


TaskRef = ActorRef[TaskMessage]
