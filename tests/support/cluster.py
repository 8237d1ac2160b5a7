"""An in-process Knit cluster: the real server and real agents, agents on SimRuntime.

Everything but Docker is real: nats-server (the test's), SQLite files, the HTTP API over
TCP. Agents run the real agent code (``run_agent_actors``) on ``simulations.runtime.SimRuntime``,
so tests of the server's reconciliation run in seconds and without an Engine.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup

from knit.agent.context import AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.main import run_agent_actors
from knit.bus import Bus, connect_bus
from knit.config import DEFAULT_MAX_REPLICAS, ServerConfig
from knit.natsd import free_port
from knit.secrets import NodeKeyPair
from knit.server.main import serve_server
from simulations.profile import SimProfile
from simulations.runtime import SimRuntime


@dataclass
class SimAgent:
    """One simulated agent; ``stop()`` kills it (no goodbye, like SIGKILL)."""

    node_id: str
    runtime: SimRuntime
    scope: anyio.CancelScope
    ctx: AgentContext

    def stop(self) -> None:
        """Cancel the agent's actors: it stops heartbeating at once."""
        self.scope.cancel()


@dataclass
class Cluster:
    """A running server plus any number of simulated agents."""

    nats_url: str
    tmp: Path
    tg: TaskGroup
    bus: Bus
    api: httpx.AsyncClient
    server_scope: anyio.CancelScope
    agents: dict[str, SimAgent] = field(default_factory=dict)
    heartbeat_interval: float = 0.2
    profile: SimProfile = field(default_factory=SimProfile)

    async def add_agent(
        self,
        labels: dict[str, str] | None = None,
        *,
        node_id: str | None = None,
        runtime: SimRuntime | None = None,
        allow_host_network: bool = False,
    ) -> SimAgent:
        """Start an agent (a fresh node, or ``node_id`` again with its old runtime)."""
        node_id = node_id or uuid.uuid4().hex
        runtime = runtime or SimRuntime(self.profile, name=node_id)
        ctx = AgentContext(
            node_id=node_id,
            hostname=f"sim-{node_id[:6]}",
            labels=dict(labels or {}),
            bus=self.bus,
            runtime=runtime,
            keys=NodeKeyPair.generate(),
            files=TemplateFiles(self.tmp / "agents" / node_id),
            heartbeat_interval=self.heartbeat_interval,
            allow_host_network=allow_host_network,
            data_dir=self.tmp / "agents" / node_id,
        )
        scope = anyio.CancelScope()

        async def run(
            *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            with scope:
                await run_agent_actors(ctx, task_status=task_status)

        await self.tg.start(run)
        agent = SimAgent(node_id=node_id, runtime=runtime, scope=scope, ctx=ctx)
        self.agents[node_id] = agent
        return agent

    async def get(self, path: str) -> Any:
        """GET a JSON document from the API."""
        response = await self.api.get(path)
        response.raise_for_status()
        return response.json()

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
    ) -> Any:
        """Poll ``predicate`` (sync or async) until it returns something truthy."""
        with anyio.fail_after(timeout):
            while True:
                result = predicate()
                if hasattr(result, "__await__"):
                    result = await result
                if result:
                    return result
                await anyio.sleep(0.05)

    async def deployment(self, deployment_id: str) -> dict[str, Any]:
        """``GET /deployments/{id}``."""
        data: dict[str, Any] = await self.get(f"/deployments/{deployment_id}")
        return data

    async def running(self, deployment_id: str) -> list[dict[str, Any]]:
        """The deployment's instances that are running."""
        data = await self.deployment(deployment_id)
        return [i for i in data["instances"] if i["status"] == "running"]

    def containers(self, state: str = "running") -> int:
        """Containers in ``state`` over every agent's runtime."""
        return sum(a.runtime.count(state) for a in self.agents.values())


@asynccontextmanager
async def open_cluster(
    nats_url: str,
    tmp: Path,
    *,
    node_ttl: float = 1.5,
    heartbeat_interval: float = 0.2,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
) -> AsyncIterator[Cluster]:
    """Run a server (API on a free port) with no agents yet; yields the cluster."""
    port = free_port()
    config = ServerConfig(
        http=f"127.0.0.1:{port}",
        data_dir=tmp / "server",
        nats_url=nats_url,
        node_ttl=node_ttl,
        restart_grace=node_ttl,
        max_replicas=max_replicas,
    )
    async with anyio.create_task_group() as tg:
        server_scope = anyio.CancelScope()

        async def run_server(
            *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            with server_scope:
                await serve_server(config, task_status=task_status)

        url = await tg.start(run_server)
        bus = await connect_bus(nats_url, name="test-agents")
        async with httpx.AsyncClient(base_url=url, timeout=10) as api:
            cluster = Cluster(
                nats_url=nats_url,
                tmp=tmp,
                tg=tg,
                bus=bus,
                api=api,
                server_scope=server_scope,
                heartbeat_interval=heartbeat_interval,
            )
            try:
                yield cluster
            finally:
                tg.cancel_scope.cancel()
                await bus.close()
