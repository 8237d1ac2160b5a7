"""The agent process: ``knit agent``.

Layer: agent (entry point). Builds the adapters (NATS bus, Docker runtime, key pair), then
the actor tree: Reconciler and Heartbeater, next to the TaskIntake (its tasks run in the
agent's task group) and the runtime event pump.

A member of the mesh (``--mesh-endpoint``, or an identity that joined as one) brings its
WireGuard interface up before it connects to NATS (reached through the tunnel), runs the
MeshUpdater beside the other actors, and takes the interface down when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from actors import ActorError, ActorRef, open_actor_system
from knit.agent.context import AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.heartbeat import Changed, Heartbeater, HeartbeatMessage
from knit.agent.identity import (
    Identity,
    ensure_data_dir,
    load_identity,
    load_or_create_nats_key,
    load_or_create_node_id,
)
from knit.agent.intake import TaskIntake
from knit.agent.join import join
from knit.agent.logs import LogServer
from knit.agent.mesh import (
    CheckSync,
    MeshMessage,
    MeshNode,
    MeshUpdater,
    PeersIntake,
    mesh_join,
)
from knit.agent.metrics import AgentMetrics, serve_metrics
from knit.agent.reconciler import Reconciler, ReconcilerMessage, pump_events
from knit.agent.trust import AgentTrust
from knit.bus import BusCredentials, connect_bus
from knit.config import DEFAULT_NATS_LISTEN, AgentConfig
from knit.errors import KnitError
from knit.mesh.wireguard import MeshError
from knit.secrets import NodeKeyPair
from knit.wire import subjects
from knit.wire.messages import InstanceReport

log = logging.getLogger(__name__)


def run_agent(config: AgentConfig) -> int:
    """Run an agent until SIGTERM/SIGINT; returns the exit code."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(serve_agent, config)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(main, backend="asyncio")
    return 0


async def ensure_identity(
    config: AgentConfig, data_dir: Path, keys: NodeKeyPair, hostname: str
) -> Identity | None:
    """The identity kept in the data dir, or a new one from a join (None: an open bus).

    Raises:
        JoinRefused: the join token was refused.
        KnitError: no identity and nothing to join with; the join failed.
    """
    identity = load_identity(data_dir)
    if identity is not None:
        if config.join_token:
            log.info("already joined as node %s: --join-token is not needed", identity.node_id)
        return identity
    if config.join_token and config.server:
        mesh = None
        if config.mesh_endpoint is not None:
            mesh = mesh_join(data_dir, config.mesh_endpoint)
        return await join(
            config.server,
            config.join_token,
            data_dir,
            keys,
            hostname,
            ca_file=config.ca_file,
            mesh=mesh,
        )
    if config.insecure_bus:
        return None
    raise KnitError(
        "this agent has not joined a cluster: start it once with --server URL --join-token "
        "TOKEN (`knit join-token create` on the server makes one), or with --insecure-bus "
        "on an open lab bus"
    )


def bus_credentials(
    config: AgentConfig, identity: Identity | None, data_dir: Path
) -> BusCredentials | None:
    """What the agent connects to NATS with: ``--nats-creds``, else its user JWT and key."""
    if config.nats_creds is not None:
        return BusCredentials.from_creds_file(config.nats_creds)
    if identity is None or identity.nats_jwt is None:
        return None
    return BusCredentials(jwt=identity.nats_jwt, seed=load_or_create_nats_key(data_dir).seed)


def mesh_node(config: AgentConfig, identity: Identity | None, data_dir: Path) -> MeshNode | None:
    """This node as a member of the mesh, if it is one (its interface not up yet).

    Raises:
        KnitError: ``--mesh-endpoint`` on a node that joined without the mesh (or did not
            join); the WireGuard key file is unusable.
        ValueError: a malformed interface name.
    """
    if identity is None or identity.mesh is None:
        if config.mesh_endpoint is None:
            return None
        raise KnitError(
            "--mesh-endpoint: this node joined the cluster without the mesh (or did not "
            "join); to make it a member, remove identity.json from its data dir and join "
            "again with --join-token"
        )
    return MeshNode.open(
        data_dir, identity, interface=config.mesh_interface, endpoint=config.mesh_endpoint
    )


async def mesh_up(node: MeshNode) -> None:
    """Bring the node's interface up.

    Raises:
        KnitError: it cannot be: one line naming the command and what it printed.
    """
    try:
        await node.up()
    except MeshError as exc:
        reason = " ".join(str(exc).split())
        raise KnitError(
            f"cannot bring the mesh interface {node.interface.name} up: {reason}"
        ) from exc


async def serve_agent(
    config: AgentConfig, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run one agent until cancelled; reports its node id through ``task_status``.

    Raises:
        JoinRefused: the join token was refused.
        knit.errors.RuntimeUnavailable: no Docker Engine answers.
        KnitError: the agent has not joined; NATS refused its credentials (the node was
            removed, or the credentials are not this cluster's).
    """
    from knit.runtime.docker import DockerRuntime

    data_dir = ensure_data_dir(config.data_dir)
    keys = NodeKeyPair.load_or_create(data_dir)
    hostname = config.hostname or socket.gethostname()
    identity = await ensure_identity(config, data_dir, keys, hostname)
    if identity is not None:
        node_id = identity.node_id
        nats_url = config.nats_url or ",".join(identity.nats_urls)
    else:
        node_id = load_or_create_node_id(data_dir)
        nats_url = config.nats_url or f"nats://{DEFAULT_NATS_LISTEN}"
    trust = None
    if identity is not None and not identity.insecure_bus:
        trust = AgentTrust.of(
            node_id, keys.link_keys(identity.server_key, node_id), identity.task_key
        )
    mesh = mesh_node(config, identity, data_dir)
    refused = Refusal()
    metrics = AgentMetrics(process=True)
    runtime = DockerRuntime(config.docker_host, on_call=metrics.docker_called)
    try:
        await runtime.version()
        if mesh is not None:
            await mesh_up(mesh)
        bus = await connect_bus(
            nats_url,
            name=f"knit-agent-{node_id}",
            credentials=bus_credentials(config, identity, data_dir),
            on_refused=refused.set,
        )
        try:
            ctx = AgentContext(
                node_id=node_id,
                hostname=hostname,
                labels=dict(config.labels),
                bus=bus,
                runtime=runtime,
                keys=keys,
                files=TemplateFiles(data_dir),
                heartbeat_interval=config.heartbeat_interval,
                allow_host_network=config.allow_host_network,
                data_dir=data_dir,
                trust=trust,
                mesh=mesh,
                metrics=metrics,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(refused.watch)
                if config.metrics_listen is not None:
                    await tg.start(serve_metrics, metrics, config.metrics_listen)
                await tg.start(run_agent_actors, ctx)
                task_status.started(node_id)
        finally:
            await bus.close()
    finally:
        with anyio.CancelScope(shield=True):
            if mesh is not None:
                await mesh.down()
            await runtime.close()


class Refusal:
    """NATS refused this node's credentials: the agent ends with the reason."""

    def __init__(self) -> None:
        self.reason = ""
        self.event = anyio.Event()

    def set(self, reason: str) -> None:
        """Called by the bus (from nats-py's callback) with the server's reason."""
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    async def watch(self) -> None:
        """Wait for a refusal, then raise it.

        Raises:
            KnitError: NATS refused the credentials.
        """
        await self.event.wait()
        raise KnitError(
            f"NATS refused this node's credentials ({self.reason}): the node was removed from "
            "the cluster, or these are not this cluster's credentials; join again with "
            "--join-token after removing the data dir's identity.json"
        )


async def run_agent_actors(
    ctx: AgentContext, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    """The agent's actor tree on given adapters (the simulation harness calls this too).

    Runs until cancelled; reports the node id through ``task_status`` once registered. The
    template render worker's process, if one was started, is stopped on the way out.
    """
    try:
        await _run_actors(ctx, task_status)
    finally:
        await ctx.files.aclose()


async def _run_actors(ctx: AgentContext, task_status: TaskStatus[str]) -> None:
    async with open_actor_system(f"agent-{ctx.node_id[:8]}") as system:
        current: list[Reconciler] = []

        def make_reconciler() -> Reconciler:
            current[:] = [Reconciler(ctx)]
            return current[0]

        reconciler: ActorRef[ReconcilerMessage] = await system.spawn(
            make_reconciler, name="reconciler"
        )

        async def refresh(
            instance_id: str,
            container_id: str | None,
            deployment_id: str | None,
            has_check: bool | None,
        ) -> InstanceReport | None:
            # A direct call into the current incarnation, not an ask: a task refreshes once
            # per placement, and the round trip through the mailbox was a good part of a
            # placement's cost (Reconciler.refresh is written to run beside the actor's turn).
            return await current[0].refresh(instance_id, container_id, deployment_id, has_check)

        ctx.refresh = refresh
        ctx.metrics.count_containers(
            lambda: [report.status for report in current[0].instances.values()]
        )
        if ctx.mesh is not None:
            node, publish, stats = ctx.mesh, ctx.publish, ctx.bus.stats
            updater: ActorRef[MeshMessage] = await system.spawn(
                lambda: MeshUpdater(node, ctx.node_id, stats, publish), name="mesh"
            )
            await ctx.bus.subscribe(subjects.MESH_PEERS, PeersIntake(ctx.trust, updater))
            updater.tell_nowait(CheckSync())  # subscribed: the answer to this sync is heard
        async with anyio.create_task_group() as tg:
            await TaskIntake(ctx, tg).subscribe()
            await LogServer(ctx, tg).subscribe()
            tg.start_soon(pump_events, ctx, reconciler)
            heartbeat: ActorRef[HeartbeatMessage] = await system.spawn(
                lambda: Heartbeater(ctx, reconciler), name="heartbeat"
            )

            def changed() -> None:
                with contextlib.suppress(ActorError):
                    heartbeat.tell_nowait(Changed())

            ctx.on_change = changed
            log.info(
                "agent %s (%s) running%s",
                ctx.node_id,
                ctx.hostname,
                ": host networking allowed" if ctx.allow_host_network else "",
            )
            task_status.started(ctx.node_id)
            await anyio.sleep_forever()


__all__ = ["run_agent", "run_agent_actors", "serve_agent"]
