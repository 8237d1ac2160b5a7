"""A fleet of simulated agents in one process: the real agent code on ``SimRuntime``.

Layer: simulations. Imports anyio, ``knit.agent`` (``run_agent_actors``), ``knit.bus``,
``knit.secrets`` and ``simulations.runtime``.

Each agent is ``run_agent_actors(AgentContext(...))`` (registration, heartbeats, task
intake, executors, reconciler) with its own ``SimRuntime``, its own key pair, and a NATS
connection shared with ``agents_per_connection - 1`` others (ARCHITECTURE.md: one connection
carries thousands of subscriptions cheaply, one connection per agent does not). A shared
connection is wrapped per agent in a ``GatedBus``, so one agent can be cut off the bus (a
partition) or killed (its subscriptions go, its heartbeats stop) without touching its
neighbours.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from knit.agent.context import AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.main import run_agent_actors
from knit.bus import Bus, Handler, connect_bus
from knit.errors import BusError
from knit.secrets import NodeKeyPair
from simulations.profile import SimProfile
from simulations.runtime import SimRuntime

log = logging.getLogger(__name__)

START_CONCURRENCY = 64
"""Agents starting at once (each start ends with its registration heartbeat)."""
GC_THRESHOLDS = (100_000, 10, 100)


def tune_gc() -> None:
    """Keep the collector from stopping the agents' event loop for long.

    Thousands of agents and their containers make a heap of millions of objects; with
    CPython's default thresholds a full collection of it ran every few seconds and took up
    to half a second, long enough to delay heartbeats and task acceptances. Objects that
    exist now are frozen and collections run far less often (as ``knit server`` does).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_heap() -> None:
    """Collect once, then freeze what lives (the agents, their containers): later full
    collections walk only what came after. Called at phase boundaries; a full collection of
    a c10k fleet otherwise stopped every agent for 4 s."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class AgentSpec:
    """Who one simulated agent is."""

    index: int
    node_id: str
    hostname: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetSpec:
    """Everything a fleet needs; picklable, so a worker process can get one."""

    nats_url: str
    workdir: Path
    heartbeat_interval: float
    agents_per_connection: int
    profile: SimProfile
    agents: tuple[AgentSpec, ...]


class Gate:
    """Whether an agent is cut off the bus."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False


@dataclass
class GatedBus(Bus):
    """One agent's view of a shared connection: it can be cut off, or closed for good."""

    gate: Gate = field(default_factory=Gate)

    async def publish(self, subject: str, payload: bytes) -> None:
        """Publish, unless the agent is cut off (then it fails like a broken connection).

        Raises:
            BusError: cut off, or the shared connection failed.
        """
        if self.gate.closed:
            raise BusError(f"publish to {subject} failed: partitioned")
        await super().publish(subject, payload)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> None:
        """Subscribe on the shared connection; messages are dropped while cut off."""
        gate = self.gate

        async def gated(payload: bytes, reply: str | None) -> None:
            if not gate.closed:
                await handler(payload, reply)

        await super().subscribe(subject, gated, queue=queue)

    async def unsubscribe_all(self) -> None:
        """Drop this agent's subscriptions (the shared connection stays)."""
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a connection closing meanwhile: nothing to drop
                log.debug("unsubscribe failed: %s", type(exc).__name__)
        self._subs.clear()


@dataclass
class SimAgent:
    """One running simulated agent."""

    spec: AgentSpec
    runtime: SimRuntime
    bus: GatedBus
    scope: anyio.CancelScope
    alive: bool = True


class Fleet:
    """The agents of one process. Use :func:`open_fleet`."""

    def __init__(self, spec: FleetSpec, tg: TaskGroup, buses: list[Bus]) -> None:
        self.spec = spec
        self.tg = tg
        self.buses = buses
        self.agents: dict[str, SimAgent] = {}
        self.started = 0
        self.failed = 0

    async def start_all(self) -> None:
        """Start every agent of the spec, ``START_CONCURRENCY`` at a time; returns once each
        has sent its registration (or failed to start, counted in ``failed``)."""
        pending = iter(enumerate(self.spec.agents))

        async def starter() -> None:
            for position, agent in pending:
                bus = self.buses[position // self.spec.agents_per_connection]
                try:
                    await self._start_one(agent, bus)
                    self.started += 1
                except Exception as exc:
                    self.failed += 1
                    log.warning("agent %s did not start: %s", agent.hostname, exc)

        async with anyio.create_task_group() as tg:
            for _ in range(min(START_CONCURRENCY, len(self.spec.agents))):
                tg.start_soon(starter)

    async def _start_one(self, spec: AgentSpec, shared: Bus) -> None:
        runtime = SimRuntime(self.spec.profile, name=spec.node_id)
        bus = GatedBus(client=shared.client, url=shared.url, stats=shared.stats)
        ctx = AgentContext(
            node_id=spec.node_id,
            hostname=spec.hostname,
            labels=dict(spec.labels),
            bus=bus,
            runtime=runtime,
            keys=NodeKeyPair.generate(),
            files=TemplateFiles(self.spec.workdir / "agents" / spec.node_id),
            heartbeat_interval=self.spec.heartbeat_interval,
            data_dir=self.spec.workdir / "agents" / spec.node_id,
        )
        scope = anyio.CancelScope()

        async def run(*, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await run_agent_actors(ctx, task_status=task_status)

        await self.tg.start(run, name=f"agent {spec.hostname}")
        self.agents[spec.node_id] = SimAgent(spec, runtime, bus, scope)

    async def kill(self, node_ids: list[str]) -> int:
        """Kill these agents as SIGKILL would: no goodbye, heartbeats stop, subscriptions go.

        Returns how many were alive.
        """
        killed = 0
        for node_id in node_ids:
            agent = self.agents.get(node_id)
            if agent is None or not agent.alive:
                continue
            agent.alive = False
            agent.scope.cancel()
            await agent.bus.unsubscribe_all()
            killed += 1
        return killed

    async def partition(self, node_ids: list[str], cut: bool) -> None:
        """Cut these agents off the bus (``cut``), or let them back on."""
        for node_id in node_ids:
            agent = self.agents.get(node_id)
            if agent is not None:
                agent.bus.gate.closed = cut

    async def containers(self, state: str = "running") -> int:
        """Containers in ``state`` on the live agents' runtimes."""
        return sum(a.runtime.count(state) for a in self.agents.values() if a.alive)


@asynccontextmanager
async def open_fleet(spec: FleetSpec) -> AsyncIterator[Fleet]:
    """Connect the shared NATS connections; leaving the block stops every agent first, then
    closes the connections (shielded)."""
    buses: list[Bus] = []
    connections = -(-len(spec.agents) // spec.agents_per_connection)
    try:
        for number in range(connections):
            buses.append(await connect_bus(spec.nats_url, name=f"knit-sim-{number}", retry_for=30))
        async with anyio.create_task_group() as tg:
            fleet = Fleet(spec, tg, buses)
            try:
                yield fleet
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for bus in buses:
                await bus.close()


def agent_specs(
    node_ids: list[str], label_shares: list[tuple[float, dict[str, str]]]
) -> list[AgentSpec]:
    """Name the agents and give ``percent`` % of them (the first ones) each share's labels."""
    count = len(node_ids)
    specs = []
    for index, node_id in enumerate(node_ids):
        labels: dict[str, str] = {}
        for percent, share in label_shares:
            if index < round(count * percent / 100):
                labels.update(share)
        specs.append(AgentSpec(index, node_id, f"sim-{index:05d}", labels))
    return specs


__all__ = [
    "AgentSpec",
    "Fleet",
    "FleetSpec",
    "GatedBus",
    "agent_specs",
    "freeze_heap",
    "open_fleet",
]
