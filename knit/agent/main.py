"""The agent process: ``knit agent``.

Layer: agent (entry point). Builds the adapters (NATS bus, Docker runtime, key pair), then
the actor tree: Reconciler and Heartbeater, next to the TaskIntake (its tasks run in the
agent's task group) and the runtime event pump.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket

import anyio
from anyio.abc import TaskStatus

from actors import ActorError, ActorRef, open_actor_system
from knit.agent.context import AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.heartbeat import Changed, Heartbeater, HeartbeatMessage
from knit.agent.identity import ensure_data_dir, load_or_create_node_id
from knit.agent.intake import TaskIntake
from knit.agent.reconciler import Reconciler, ReconcilerMessage, pump_events
from knit.bus import connect_bus
from knit.config import AgentConfig
from knit.secrets import NodeKeyPair

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


async def serve_agent(
    config: AgentConfig, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run one agent until cancelled; reports its node id through ``task_status``.

    Raises:
        knit.errors.RuntimeUnavailable: no Docker Engine answers.
    """
    from knit.runtime.docker import DockerRuntime

    data_dir = ensure_data_dir(config.data_dir)
    node_id = load_or_create_node_id(data_dir)
    runtime = DockerRuntime(config.docker_host)
    try:
        await runtime.version()
        bus = await connect_bus(config.nats_url, name=f"knit-agent-{node_id}")
        try:
            ctx = AgentContext(
                node_id=node_id,
                hostname=config.hostname or socket.gethostname(),
                labels=dict(config.labels),
                bus=bus,
                runtime=runtime,
                keys=NodeKeyPair.load_or_create(data_dir),
                files=TemplateFiles(data_dir),
                heartbeat_interval=config.heartbeat_interval,
                allow_host_network=config.allow_host_network,
                data_dir=data_dir,
            )
            await run_agent_actors(ctx, task_status=task_status)
        finally:
            await bus.close()
    finally:
        with anyio.CancelScope(shield=True):
            await runtime.close()


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
            instance_id: str, container_id: str | None, deployment_id: str | None
        ) -> None:
            # A direct call into the current incarnation, not an ask: a task refreshes once
            # per placement, and the round trip through the mailbox was a good part of a
            # placement's cost (Reconciler.refresh is written to run beside the actor's turn).
            await current[0].refresh(instance_id, container_id, deployment_id)

        ctx.refresh = refresh
        async with anyio.create_task_group() as tg:
            await TaskIntake(ctx, tg).subscribe()
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
