"""An agent on SimRuntime (or a real runtime) with an in-memory bus, for tests of what tasks
do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Generic, TypeVar, cast

import anyio

from knit.agent.context import AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.main import run_agent_actors
from knit.agent.mesh import MeshNode
from knit.bus import Bus, BusStats
from knit.runtime.base import ContainerRuntime
from knit.secrets import NodeKeyPair
from knit.wire import subjects
from knit.wire.messages import (
    InstanceReport,
    Task,
    TaskStatus,
    decode_heartbeat,
    decode_status,
    encode,
)
from simulations.profile import SimProfile
from simulations.runtime import SimRuntime

Handler = Callable[[bytes, str | None, Mapping[str, str] | None], Awaitable[None]]
R = TypeVar("R", bound=ContainerRuntime)


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

    def sent_statuses(self) -> int:
        return sum(1 for s, _ in self.sent if s == subjects.TASK_STATUS)

    def heartbeats(self) -> int:
        return sum(1 for s, _ in self.sent if s == subjects.HEARTBEAT)

    def reports(self, instance_id: str) -> list[InstanceReport | None]:
        """The instance's report as of each heartbeat sent (folding the differences)."""
        held: dict[str, InstanceReport] = {}
        found: list[InstanceReport | None] = []
        for subject, payload in self.sent:
            if subject != subjects.HEARTBEAT:
                continue
            beat = decode_heartbeat(payload)
            if beat.full:
                held = {}
            held.update((r.instance_id, r) for r in beat.instances)
            for gone in beat.removed:
                held.pop(gone, None)
            found.append(held.get(instance_id))
        return found

    def healths(self, instance_id: str) -> list[str]:
        """The instance's health as the heartbeats told it, each change once."""
        seen: list[str] = []
        for report in self.reports(instance_id):
            if report is not None and (not seen or seen[-1] != report.health):
                seen.append(report.health)
        return seen


class AgentOn(Generic[R]):
    def __init__(self, ctx: AgentContext, bus: MemoryBus, runtime: R) -> None:
        self.ctx, self.bus, self.runtime = ctx, bus, runtime

    async def send(self, task: Task) -> None:
        await self.send_raw(encode(task))

    async def send_raw(self, payload: bytes) -> None:
        """Deliver a payload on this node's task subject, as NATS would."""
        await self.bus.handlers[subjects.tasks_for(self.ctx.node_id)](payload, None, None)

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


Agent = AgentOn[SimRuntime]


@asynccontextmanager
async def open_agent(
    tmp_path: Path,
    *,
    profile: SimProfile | None = None,
    allow_host_network: bool = False,
    mesh: MeshNode | None = None,
    **settings: float,
) -> AsyncIterator[Agent]:
    """An agent (node ``n1``) running its actors until the block ends (a member of the mesh
    with ``mesh``: its interface is not brought up here)."""
    runtime = SimRuntime(profile or SimProfile(preloaded_images=frozenset({"app:1"})))
    async with open_agent_on(
        runtime,
        tmp_path,
        allow_host_network=allow_host_network,
        mesh=mesh,
        heartbeat_interval=settings.get("heartbeat_interval", 60.0),
        task_timeout=settings.get("task_timeout", 600.0),
    ) as agent:
        yield agent


@asynccontextmanager
async def open_agent_on(
    runtime: R,
    tmp_path: Path,
    *,
    node_id: str = "n1",
    allow_host_network: bool = False,
    mesh: MeshNode | None = None,
    heartbeat_interval: float = 60.0,
    task_timeout: float = 600.0,
) -> AsyncIterator[AgentOn[R]]:
    """An agent (node ``node_id``) on ``runtime``, running its actors until the block ends."""
    bus = MemoryBus()
    ctx = AgentContext(
        node_id=node_id,
        hostname="host-1",
        labels={},
        bus=cast(Bus, bus),
        runtime=runtime,
        keys=NodeKeyPair.generate(),
        files=TemplateFiles(tmp_path),
        heartbeat_interval=heartbeat_interval,
        task_timeout=task_timeout,
        allow_host_network=allow_host_network,
        data_dir=tmp_path,
        mesh=mesh,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(run_agent_actors, ctx)
        agent = AgentOn(ctx, bus, runtime)
        await agent.settle()
        yield agent
        tg.cancel_scope.cancel()
