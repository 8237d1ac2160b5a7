"""A fleet of simulated agents in one process: the real agent code on ``SimRuntime``.

Layer: simulations. Imports anyio, httpx, ``knit.agent`` (``run_agent_actors``, the join),
``knit.bus``, ``knit.secrets``, ``knit.trust`` and ``simulations.runtime``.

Each agent joins the cluster as a real agent does (``POST /join`` with the run's join token,
its own X25519 and NATS keys), then runs ``run_agent_actors(AgentContext(...))``
(registration, heartbeats, task intake, executors, reconciler) with its own ``SimRuntime``,
proving every message it publishes and checking every task it gets (knit.agent.trust).

With ``agents_per_connection`` 1, each agent connects to NATS with its own credentials (its
user JWT: its own task subject, nothing else), as an agent on a host of its own would. With
more, the fleet's agents share connections made with bus credentials the fleet asks for
(``POST /bus-credentials``: publishing heartbeats and statuses, subscribing to every node's
tasks): a thousand connections from one process cost far more than the agents they carry
(docs/performance.md). Either way an agent's connection is wrapped in a ``GatedBus``, so it
can be cut off the bus (a partition) or killed (its subscriptions go, its heartbeats stop)
without touching its neighbours.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.subscription import Subscription

from knit.agent.context import AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.join import identity_from_grant, request_join
from knit.agent.main import run_agent_actors
from knit.agent.trust import AgentTrust
from knit.bus import Bus, BusCredentials, Handler, Headers, connect_bus
from knit.errors import BusError
from knit.secrets import NodeKeyPair
from knit.trust.nkeys import KeyKind, NKey
from knit.wire import subjects
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
    """Everything a fleet needs; picklable, so a worker process can get one.

    Attributes:
        api_url: the server's API, where agents join.
        join_token: a join token with a use for every agent.
        admin_token: an admin API token (bus credentials for shared connections).
        agents_per_connection: agents sharing one NATS connection (1: their own).
    """

    api_url: str
    join_token: str
    admin_token: str
    agents_per_connection: int
    workdir: Path
    heartbeat_interval: float
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

    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None:
        """Publish, unless the agent is cut off (then it fails like a broken connection).

        Raises:
            BusError: cut off, or the connection failed.
        """
        if self.gate.closed:
            raise BusError(f"publish to {subject} failed: partitioned")
        await super().publish(subject, payload, headers)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        """Subscribe; messages are dropped while cut off."""
        gate = self.gate

        async def gated(payload: bytes, reply: str | None, headers: Headers | None) -> None:
            if not gate.closed:
                await handler(payload, reply, headers)

        return await super().subscribe(subject, gated, queue=queue)

    async def unsubscribe_all(self) -> None:
        """Drop this agent's subscriptions (a shared connection stays)."""
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
    shared: bool
    alive: bool = True


class Fleet:
    """The agents of one process. Use :func:`open_fleet`."""

    def __init__(
        self, spec: FleetSpec, tg: TaskGroup, http: httpx.AsyncClient, shared: list[Bus]
    ) -> None:
        self.spec = spec
        self.tg = tg
        self.http = http
        self.shared = shared
        self.agents: dict[str, SimAgent] = {}
        self.joined = 0
        self.started = 0
        self.failed = 0

    async def start_all(self) -> None:
        """Start every agent of the spec, ``START_CONCURRENCY`` at a time; returns once each
        has sent its registration (or failed to start, counted in ``failed``)."""
        pending = iter(enumerate(self.spec.agents))

        async def starter() -> None:
            for position, agent in pending:
                shared = None
                if self.shared:
                    shared = self.shared[position // self.spec.agents_per_connection]
                try:
                    await self._start_one(agent, shared)
                    self.started += 1
                except Exception as exc:
                    self.failed += 1
                    log.warning("agent %s did not start: %s", agent.hostname, exc)

        async with anyio.create_task_group() as tg:
            for _ in range(min(START_CONCURRENCY, len(self.spec.agents))):
                tg.start_soon(starter)

    async def _start_one(self, spec: AgentSpec, shared: Bus | None) -> None:
        """Join (with the node id the spec gives), connect (``shared``, or with the node's
        own credentials), run the agent."""
        keys = NodeKeyPair.generate()
        nats_key = NKey.generate(KeyKind.USER)
        body = {
            "hostname": spec.hostname,
            "public_key": keys.public_key_b64,
            "nats_key": nats_key.public_key,
            "node_id": spec.node_id,
        }
        grant = await request_join(self.spec.api_url, self.spec.join_token, body, client=self.http)
        identity = identity_from_grant(self.spec.api_url, grant)
        self.joined += 1
        trust = None
        if not identity.insecure_bus:
            link = keys.link_keys(identity.server_key, spec.node_id)
            trust = AgentTrust.of(spec.node_id, link, identity.task_key)
        if shared is None:
            credentials = None
            if identity.nats_jwt is not None:
                credentials = BusCredentials(jwt=identity.nats_jwt, seed=nats_key.seed)
            shared = await connect_bus(
                ",".join(identity.nats_urls),
                name=f"knit-sim-{spec.hostname}",
                credentials=credentials,
                retry_for=60,
            )
            own = True
        else:
            own = False
        bus = GatedBus(client=shared.client, url=shared.url, stats=shared.stats)
        runtime = SimRuntime(self.spec.profile, name=spec.node_id)
        ctx = AgentContext(
            node_id=spec.node_id,
            hostname=spec.hostname,
            labels=dict(spec.labels),
            bus=bus,
            runtime=runtime,
            keys=keys,
            files=TemplateFiles(self.spec.workdir / "agents" / spec.node_id),
            heartbeat_interval=self.spec.heartbeat_interval,
            data_dir=self.spec.workdir / "agents" / spec.node_id,
            trust=trust,
        )
        scope = anyio.CancelScope()

        async def run(*, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await run_agent_actors(ctx, task_status=task_status)

        await self.tg.start(run, name=f"agent {spec.hostname}")
        self.agents[spec.node_id] = SimAgent(spec, runtime, bus, scope, shared=not own)

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
            if agent.shared:
                await agent.bus.unsubscribe_all()
            else:
                await agent.bus.close()
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


async def shared_buses(spec: FleetSpec, http: httpx.AsyncClient) -> list[Bus]:
    """The fleet's shared connections (none with ``agents_per_connection`` 1), made with
    bus credentials for what its agents do.

    Raises:
        httpx.HTTPError: the server refused the credentials.
        BusError: NATS did not take them.
    """
    count = -(-len(spec.agents) // spec.agents_per_connection)
    if spec.agents_per_connection <= 1 or count == 0:
        return []
    key = NKey.generate(KeyKind.USER)
    answer = await http.post(
        f"{spec.api_url}/bus-credentials",
        json={
            "name": f"sim-fleet-{key.public_key[-8:].lower()}",
            "nats_key": key.public_key,
            "publish": [subjects.HEARTBEAT, subjects.TASK_STATUS, subjects.LOGS_FROM_ANY],
            "subscribe": [
                f"{subjects.TASKS_PREFIX}.*",
                f"{subjects.LOGS_TO_PREFIX}.*",
                f"{subjects.TASKS_BROADCAST} {subjects.BROADCAST_QUEUE}",
            ],
            "ttl": 86_400,
        },
        headers={"Authorization": f"Bearer {spec.admin_token}"},
    )
    answer.raise_for_status()
    granted = answer.json()
    credentials = BusCredentials(jwt=granted["nats_jwt"], seed=key.seed)
    urls = ",".join(granted["nats_urls"])
    return [
        await connect_bus(urls, name=f"knit-sim-{n}", credentials=credentials, retry_for=30)
        for n in range(count)
    ]


@asynccontextmanager
async def open_fleet(spec: FleetSpec) -> AsyncIterator[Fleet]:
    """Run a fleet; leaving the block stops every agent first, then closes their
    connections (shielded)."""
    limits = httpx.Limits(max_connections=START_CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        fleet: Fleet | None = None
        shared: list[Bus] = []
        try:
            shared = await shared_buses(spec, http)
            async with anyio.create_task_group() as tg:
                fleet = Fleet(spec, tg, http, shared)
                try:
                    yield fleet
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for bus in shared:
                    await bus.close()
                for agent in fleet.agents.values() if fleet is not None else ():
                    if not agent.shared:
                        await agent.bus.close()


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
