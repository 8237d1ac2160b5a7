"""Task intake: ``knit.tasks.{node id}`` and ``knit.tasks.broadcast`` (a queue group).

Layer: agent. Decodes each task, acknowledges it (``accepted``), and hands it to a
TaskExecutor of its own. A task id runs once: a re-delivered task that is still running is
ignored, one that has ended gets its final status again (the first report may have been
lost) without running again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from actors import Actor, ActorRef, Restart
from knit.agent.context import AgentContext
from knit.agent.executor import TaskExecutor
from knit.delivery import deliver
from knit.errors import KnitError
from knit.wire import subjects
from knit.wire.messages import Task, TaskStatus, decode_task, encode

log = logging.getLogger(__name__)

REMEMBERED_TASKS = 10_000


@dataclass(frozen=True)
class Received:
    """A task arrived on the bus."""

    task: Task


@dataclass(frozen=True)
class Finished:
    """An executor ended its task with this final status."""

    status: TaskStatus


IntakeMessage = Received | Finished


class TaskIntake(Actor[IntakeMessage]):
    """Takes tasks from the bus, exactly once per task id."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.running: dict[str, ActorRef[Task]] = {}
        self.done: OrderedDict[str, TaskStatus] = OrderedDict()

    async def started(self) -> None:
        """Subscribe to this node's subject and to the broadcast queue group."""
        me = self.ref

        async def on_task(payload: bytes, reply: str | None) -> None:
            try:
                task = decode_task(payload)
            except KnitError as exc:
                log.warning("undecodable task dropped: %s", exc)
                return
            await deliver(me, Received(task))

        await self.ctx.bus.subscribe(subjects.tasks_for(self.ctx.node_id), on_task)
        await self.ctx.bus.subscribe(
            subjects.TASKS_BROADCAST, on_task, queue=subjects.BROADCAST_QUEUE
        )

    async def handle(self, message: IntakeMessage) -> None:
        """Start a new task, or ignore a duplicate."""
        if isinstance(message, Finished):
            task_id = message.status.task_id
            self.running.pop(task_id, None)
            self.done[task_id] = message.status
            while len(self.done) > REMEMBERED_TASKS:
                self.done.popitem(last=False)
            return
        task = message.task
        if task.task_id in self.running:
            return
        final = self.done.get(task.task_id)
        if final is not None:
            await self.publish(final)
            return
        status = TaskStatus(
            task_id=task.task_id,
            instance_id=task.instance_id,
            node_id=self.ctx.node_id,
            state="accepted",
            at=time.time(),
        )
        await self.publish(status)
        me = self.ref
        executor = await self.system.spawn(
            lambda: TaskExecutor(self.ctx, on_done=lambda st: me.tell_nowait(Finished(st))),
            name=f"executor/{task.task_id}",
            restart=Restart.TEMPORARY,
            mailbox_size=1,
        )
        self.running[task.task_id] = executor
        await deliver(executor, task)

    async def publish(self, status: TaskStatus) -> None:
        """Publish a status; a bus failure is logged (the server retries the task)."""
        try:
            await self.ctx.bus.publish(subjects.TASK_STATUS, encode(status))
        except KnitError as exc:
            log.warning("cannot report task %s: %s", status.task_id, exc)
