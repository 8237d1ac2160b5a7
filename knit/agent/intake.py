"""Task intake: ``knit.tasks.{node id}`` and ``knit.tasks.broadcast`` (a queue group).

Layer: agent. Decodes each task, acknowledges it (``accepted``), and runs it in a task of the
agent's task group (``executor.run_task``). A task id runs once: a re-delivered task that is
still running is ignored, one that has ended gets its final status again (the first report
may have been lost) without running again.

Tasks run on a small elastic pool of worker tasks rather than an actor or a new task each:
a task does not need a mailbox or a supervisor (it catches its own failures and reports
them), and with hundreds of placements a second spawning was a large part of the agent's
CPU. Waking a parked worker costs an event; a burst starts more workers, and at most
``MAX_PARKED`` of them stay parked once it is over.
"""

from __future__ import annotations

import collections
import logging
import time
from collections import OrderedDict

import anyio
from anyio.abc import TaskGroup

from knit.agent.context import AgentContext
from knit.agent.executor import publish_payload, publish_status, run_task, task_status
from knit.agent.refusals import Refusals
from knit.bus import Headers
from knit.errors import KnitError
from knit.wire import subjects
from knit.wire.messages import Task, decode_task, encode

log = logging.getLogger(__name__)

REMEMBERED_TASKS = 10_000
MAX_PARKED = 32
"""Idle workers kept for the next tasks; more end once they find nothing to do."""


class TaskIntake:
    """Takes tasks from the bus, exactly once per task id, and runs them.

    Args:
        ctx: the agent's context (its ``in_flight`` map is kept here).
        tg: the task group the workers run in; cancelling it abandons the running tasks
            unreported (the server re-sends them, and a retry adopts what they left).
    """

    def __init__(self, ctx: AgentContext, tg: TaskGroup) -> None:
        self.ctx = ctx
        self.tg = tg
        self.running: set[str] = set()
        # Final statuses as published (bytes: thousands of them outlive many collections,
        # and bytes are nothing for the garbage collector to walk).
        self.done: OrderedDict[str, bytes] = OrderedDict()
        self.queue: collections.deque[Task] = collections.deque()
        self.parked: list[anyio.Event] = []
        self.refusals = Refusals(log)

    async def subscribe(self) -> None:
        """Subscribe to this node's subject and to the broadcast queue group.

        Raises:
            BusError: the bus refused a subscription.
        """
        own = subjects.tasks_for(self.ctx.node_id)

        async def on_own(payload: bytes, reply: str | None, headers: Headers | None) -> None:
            await self.on_task(own, payload, broadcast=False)

        async def on_any(payload: bytes, reply: str | None, headers: Headers | None) -> None:
            await self.on_task(subjects.TASKS_BROADCAST, payload, broadcast=True)

        await self.ctx.bus.subscribe(own, on_own)
        await self.ctx.bus.subscribe(
            subjects.TASKS_BROADCAST, on_any, queue=subjects.BROADCAST_QUEUE
        )

    async def on_task(self, subject: str, payload: bytes, *, broadcast: bool) -> None:
        """Bus handler: check a task, decode it and take it.

        On a node that joined, a task not proved to come from the server, addressed to
        another node or expired is refused: logged (never whole) and dropped, unanswered.
        An undecodable one is dropped too.
        """
        trust = self.ctx.trust
        if trust is not None:
            body = trust.open_task(subject, payload, broadcast=broadcast)
            if body is None:
                self.refuse(f"a task on {subject} not proved to come from the server")
                return
            payload = body
        try:
            task = decode_task(payload)
        except KnitError as exc:
            log.warning("undecodable task dropped: %s", exc)
            return
        if trust is not None:
            known = task.task_id in self.running or task.task_id in self.done
            reason = trust.task_refusal(task, broadcast=broadcast, known=known)
            if reason is not None:
                self.refuse(f"task {task.task_id}: {reason}")
                return
        await self.take(task)

    def refuse(self, why: str) -> None:
        """Count and log a refused task (one log line a second at most)."""
        self.refusals.add(why)

    @property
    def refused(self) -> int:
        """How many were refused."""
        return self.refusals.count

    async def take(self, task: Task) -> None:
        """Accept and start a new task, or answer a duplicate.

        A duplicate of a running task is ignored; one of an ended task gets its final
        status again. Cancellation while publishing ``accepted`` still starts the task.
        """
        task_id = task.task_id
        if task_id in self.running:
            return
        final = self.done.get(task_id)
        if final is not None:
            await publish_payload(self.ctx, task_id, final)
            return
        # Marked before the first await, so a duplicate arriving meanwhile is ignored.
        self.running.add(task_id)
        self.ctx.in_flight[task.instance_id] = task
        try:
            await publish_status(self.ctx, task_status(self.ctx, task, "accepted"))
        finally:  # (even if cancelled: the task must run, or its id would stay "running")
            self.queue.append(task)
            if self.parked:
                self.parked.pop().set()
            else:
                self.tg.start_soon(self.work, name="agent task worker")

    async def work(self) -> None:
        """One worker: run queued tasks, park while there are none, end past MAX_PARKED.

        Every queued task has woken or started a worker of its own, so none waits behind
        another task's run.
        """
        queue, parked = self.queue, self.parked
        while True:
            while queue:
                await self.run(queue.popleft())
            if len(parked) >= MAX_PARKED:
                return
            event = anyio.Event()
            parked.append(event)
            await event.wait()

    async def run(self, task: Task) -> None:
        """Run one task and remember its final status."""
        started = time.perf_counter()
        try:
            final = await run_task(self.ctx, task)
        except Exception as exc:  # a bug: report it rather than lose the agent or the task
            log.exception("task %s crashed", task.task_id)
            final = task_status(
                self.ctx, task, "failed", step="agent", error=f"agent error: {exc!r}"
            )
            await publish_status(self.ctx, final)
        finally:
            self.running.discard(task.task_id)
            if self.ctx.in_flight.get(task.instance_id) is task:
                del self.ctx.in_flight[task.instance_id]
        self.ctx.metrics.task_ended(task.kind, final.state, time.perf_counter() - started)
        self.done[task.task_id] = encode(final)
        while len(self.done) > REMEMBERED_TASKS:
            self.done.popitem(last=False)
