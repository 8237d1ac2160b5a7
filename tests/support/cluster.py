"""An in-process Knit cluster: the real server and real agents, agents on SimRuntime.

Everything but Docker is real: nats-server (the test's), SQLite files, the HTTP API over
TCP. The cluster's ``api`` client sends the server's admin token and is signed in to the
dashboard (it holds the session cookie). Agents run the real agent code
(``run_agent_actors``) on ``simulations.runtime.SimRuntime``, so tests of the server's
reconciliation run in seconds and without an Engine.
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
from knit.agent.join import identity_from_grant, request_join
from knit.agent.main import run_agent_actors
from knit.agent.trust import AgentTrust
from knit.bus import Bus, connect_bus
from knit.config import DEFAULT_MAX_REPLICAS, ServerConfig
from knit.natsd import free_port
from knit.secrets import NodeKeyPair
from knit.server.main import serve_server
from knit.trust.nkeys import KeyKind, NKey
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


_JOINED: dict[Path, dict[str, tuple[NodeKeyPair, AgentTrust | None]]] = {}


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
    insecure: bool = False

    @property
    def identities(self) -> dict[str, tuple[NodeKeyPair, AgentTrust | None]]:
        """The nodes that joined this cluster's server (its data dir), by id: a node
        started again (here, or by a later cluster on the same data dir) keeps its keys."""
        return _JOINED.setdefault(self.tmp / "server", {})

    async def join(self, node_id: str) -> tuple[NodeKeyPair, AgentTrust | None]:
        """Join ``node_id`` through the API with a fresh join token, as an agent does (on an
        insecure cluster: nothing to join, nothing proved). Kept for the node's restarts."""
        known = self.identities.get(node_id)
        if known is not None:
            return known
        keys = NodeKeyPair.generate()
        trust = None
        if not self.insecure:
            made = await self.api.post("/join-tokens", json={"uses": 1})
            assert made.status_code == 201, made.text
            body = {
                "hostname": f"sim-{node_id[:6]}",
                "public_key": keys.public_key_b64,
                "nats_key": NKey.generate(KeyKind.USER).public_key,
                "node_id": node_id,
            }
            grant = await request_join(
                str(self.api.base_url), made.json()["token"], body, client=self.api
            )
            identity = identity_from_grant(str(self.api.base_url), grant)
            link = keys.link_keys(identity.server_key, node_id)
            trust = AgentTrust.of(node_id, link, identity.task_key)
        self.identities[node_id] = (keys, trust)
        return keys, trust

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
        keys, trust = await self.join(node_id)
        ctx = AgentContext(
            node_id=node_id,
            hostname=f"sim-{node_id[:6]}",
            labels=dict(labels or {}),
            bus=self.bus,
            runtime=runtime,
            keys=keys,
            files=TemplateFiles(self.tmp / "agents" / node_id),
            heartbeat_interval=self.heartbeat_interval,
            trust=trust,
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
    insecure: bool = False,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
) -> AsyncIterator[Cluster]:
    """Run a server (API on a free port) with no agents yet; yields the cluster.

    Agents join through the API and prove their messages; the server is on the test's
    nats-server (an external NATS: no bus credentials). ``insecure``: an open bus
    (``--insecure-bus``), agents that do not join, messages believed as they come (to
    publish hand-made tasks).
    """
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
        token = (config.data_dir / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as api:
            signed_in = await api.post(
                "/ui/sign-in", data={"token": token}, headers={"Origin": url}
            )
            assert signed_in.status_code == 303, signed_in.text
            cluster = Cluster(
                nats_url=nats_url,
                tmp=tmp,
                tg=tg,
                bus=bus,
                api=api,
                server_scope=server_scope,
                heartbeat_interval=heartbeat_interval,
                insecure=insecure,
            )
            try:
                yield cluster
            finally:
                tg.cancel_scope.cancel()
                await bus.close()
