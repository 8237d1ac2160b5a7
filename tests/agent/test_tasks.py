"""The agent's tasks on SimRuntime with an in-memory bus: what each task reports, and which
container changes make the heartbeat beat early."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
import pytest

from knit.agent.context import LABEL_INSTANCE, AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.main import run_agent_actors
from knit.bus import Bus, BusStats
from knit.secrets import NodeKeyPair
from knit.wire import subjects
from knit.wire.messages import (
    DeployTask,
    InstanceReport,
    StopTask,
    Task,
    TaskDeployment,
    TaskStatus,
    decode_heartbeat,
    decode_status,
    encode,
)
from simulations.profile import SimProfile
from simulations.runtime import SimRuntime

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

Handler = Callable[[bytes, str | None, Mapping[str, str] | None], Awaitable[None]]


class MemoryBus:
    """The two calls the agent makes on its bus, kept in memory."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.sent: list[tuple[str, bytes]] = []
        self.published = anyio.Event()
        self.stats = BusStats()

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.sent.append((subject, payload))
        self.published.set()
        self.published = anyio.Event()

    async def until(self, condition: Callable[[], bool], seconds: float = 5.0) -> None:
        """Wait until ``condition()`` holds after a publish (at most ``seconds``)."""
        with anyio.fail_after(seconds):
            while not condition():
                await self.published.wait()

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> None:
        self.handlers[subject] = handler

    def statuses(self, task: Task) -> list[TaskStatus]:
        found = [decode_status(p) for s, p in self.sent if s == subjects.TASK_STATUS]
        return [s for s in found if s.task_id == task.task_id]

    def heartbeats(self) -> int:
        return sum(1 for s, _ in self.sent if s == subjects.HEARTBEAT)


class Agent:
    def __init__(self, ctx: AgentContext, bus: MemoryBus, runtime: SimRuntime) -> None:
        self.ctx, self.bus, self.runtime = ctx, bus, runtime

    async def send(self, task: Task) -> None:
        await self.bus.handlers[subjects.tasks_for(self.ctx.node_id)](encode(task), None, None)

    def ended(self, task: Task) -> list[TaskStatus]:
        return [s for s in self.bus.statuses(task) if s.state in ("succeeded", "failed")]

    async def final(self, task: Task) -> TaskStatus:
        """The task's final status, waited for (at most 5 s)."""
        await self.bus.until(lambda: bool(self.ended(task)))
        return self.ended(task)[0]

    async def settle(self) -> None:
        """Let the event pump and the Reconciler catch up."""
        for _ in range(20):
            await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def open_agent(tmp_path: Path, **settings: float) -> AsyncIterator[Agent]:
    bus = MemoryBus()
    runtime = SimRuntime(SimProfile(preloaded_images=frozenset({"app:1"})))
    ctx = AgentContext(
        node_id="n1",
        hostname="host-1",
        labels={},
        bus=cast(Bus, bus),
        runtime=runtime,
        keys=NodeKeyPair.generate(),
        files=TemplateFiles(tmp_path),
        heartbeat_interval=settings.get("heartbeat_interval", 60.0),
        task_timeout=settings.get("task_timeout", 600.0),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(run_agent_actors, ctx)
        agent = Agent(ctx, bus, runtime)
        await agent.settle()
        yield agent
        tg.cancel_scope.cancel()


def deploy_task(instance_id: str | None = None) -> DeployTask:
    return DeployTask(
        task_id=uuid.uuid4().hex,
        instance_id=instance_id or uuid.uuid4().hex,
        instance_index=0,
        deployment=TaskDeployment(id="d1", name="web", image="app:1"),
    )


async def test_a_task_causes_no_early_heartbeat_but_an_unexpected_exit_does(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path) as agent:
        beats = agent.bus.heartbeats()
        task = deploy_task()
        await agent.send(task)
        done = await agent.final(task)
        assert done.state == "succeeded" and done.container_id is not None
        await agent.settle()
        stop = StopTask(task_id=uuid.uuid4().hex, instance_id=task.instance_id)
        await agent.send(stop)
        assert (await agent.final(stop)).state == "succeeded"
        await anyio.sleep(0.1)  # past the heartbeat's SOON: a change beat would be out
        assert agent.bus.heartbeats() == beats

        other = deploy_task()
        await agent.send(other)
        container_id = (await agent.final(other)).container_id
        assert container_id is not None
        agent.runtime.crash(container_id, exit_code=3)
        await agent.bus.until(lambda: agent.bus.heartbeats() > beats)


async def test_a_redelivered_task_runs_once_and_an_ended_one_gets_its_final_status_again(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path) as agent:
        task = deploy_task()
        await agent.send(task)
        await agent.send(task)
        first = await agent.final(task)
        await agent.send(task)
        await agent.settle()
        states = [s.state for s in agent.bus.statuses(task)]
        assert states.count("accepted") == 1
        assert states.count("succeeded") == 2
        assert agent.runtime.count() == 1
        assert agent.bus.statuses(task)[-1] == first


async def test_a_task_past_its_timeout_fails_at_step_timeout(tmp_path: Path) -> None:
    async with open_agent(tmp_path, task_timeout=0.05) as agent:
        agent.runtime.profile = SimProfile(pull_latency=5.0)
        task = deploy_task()
        await agent.send(task)
        final = await agent.final(task)
        assert (final.state, final.step) == ("failed", "timeout")
        assert task.instance_id not in agent.ctx.in_flight


async def test_a_task_that_crashes_is_reported_failed_and_the_agent_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_agent(tmp_path) as agent:

        async def broken(labels: object) -> object:
            raise ValueError("a bug")

        monkeypatch.setattr(agent.runtime, "list", broken)
        task = deploy_task()
        await agent.send(task)
        final = await agent.final(task)
        assert (final.state, final.step) == ("failed", "agent")
        monkeypatch.undo()
        again = deploy_task()
        await agent.send(again)
        assert (await agent.final(again)).state == "succeeded"


async def test_reports_taken_after_a_result_agree_with_it(tmp_path: Path) -> None:
    async with open_agent(tmp_path, heartbeat_interval=0.05) as agent:
        task = deploy_task()
        await agent.send(task)
        done = await agent.final(task)

        def after() -> list[dict[str, InstanceReport]]:
            """The node's report as of each heartbeat taken after the result."""
            held: dict[str, InstanceReport] = {}
            found = []
            for subject, payload in agent.bus.sent:
                if subject != subjects.HEARTBEAT:
                    continue
                beat = decode_heartbeat(payload)
                if beat.full:
                    held = {}
                held.update((r.instance_id, r) for r in beat.instances)
                for instance_id in beat.removed:
                    held.pop(instance_id, None)
                if beat.sent_at >= done.at:
                    found.append(dict(held))
            return found

        await agent.bus.until(lambda: bool(after()))
        report = after()[0][task.instance_id]
        assert (report.status, report.container_id) == ("running", done.container_id)
        [container] = await agent.runtime.list({LABEL_INSTANCE: task.instance_id})
        assert container.state == "running"
