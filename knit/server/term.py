"""A leader's term: the actors that run the cluster, for as long as this server leads.

Layer: server. ``open_term`` builds the actor tree of docs/architecture.md (Scheduler,
NodeDirectory, DeploymentDirectory, their actors) and the bus bridge on a store of its
own — on PostgreSQL fenced by the term's lease, so nothing the actors write lands after
another server took over (decision 0024) — and tears all of it down when the block ends:
the lease lost, or the server stopping. A new term starts from the database, as a
restarted server does: every known node gets its grace period first, every deployment's
actor reloads its instances and resumes its tasks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from actors import ActorRef, ActorSystem, open_actor_system
from knit.server.bridge import BridgeStats, open_bridge
from knit.server.context import ServerContext
from knit.server.directories import DeploymentDirectory, NodeDirectory
from knit.server.history import keep_history
from knit.server.leadership import Term
from knit.server.messages import (
    DeleteDeployment,
    DeploymentCreated,
    DeploymentUpdated,
    RemoveNode,
    SetEligible,
)
from knit.server.repo import Repo, open_repo
from knit.server.scheduler import Scheduler
from knit.store.db import LeaseFence
from knit.wire.servers import NoticeKind, NoticeReply, ServerNotice

log = logging.getLogger(__name__)

ASK_TIMEOUT = 30.0
"""Seconds a notice's change may take to reach an actor."""


@dataclass
class LeaderTerm:
    """What runs while this server leads: its context (on the term's store), the actor
    system, the two directories and the bridge's counters."""

    ctx: ServerContext
    system: ActorSystem
    nodes: ActorRef[Any]
    deployments: ActorRef[Any]
    bridge: BridgeStats

    async def apply(self, notice: ServerNotice) -> NoticeReply:
        """Apply another server's stored change to the actors (``knit.server.notices``)."""
        target = notice.target or ""
        kind = notice.kind
        if kind is NoticeKind.DEPLOYMENT_CREATED:
            await self.deployments.ask(DeploymentCreated(target), timeout=ASK_TIMEOUT)
        elif kind is NoticeKind.DEPLOYMENT_UPDATED:
            self.ctx.forget_secret_env(target)
            record = await self.ctx.repo.get_deployment_record(target)
            if record is not None:
                rollout = await self.deployments.ask(
                    DeploymentUpdated(target, record), timeout=ASK_TIMEOUT
                )
                if isinstance(rollout, Mapping):
                    return NoticeReply(rollout=dict(rollout))
        elif kind is NoticeKind.DEPLOYMENT_DELETED:
            self.ctx.forget_secret_env(target)
            await self.deployments.ask(DeleteDeployment(target, stored=True), timeout=ASK_TIMEOUT)
        elif kind is NoticeKind.NODE_ELIGIBLE and notice.eligible is not None:
            await self.nodes.ask((target, SetEligible(notice.eligible)), timeout=ASK_TIMEOUT)
        elif kind is NoticeKind.NODE_REMOVED:
            await self.nodes.ask(RemoveNode(target), timeout=ASK_TIMEOUT)
        return NoticeReply()


@asynccontextmanager
async def open_term(
    term: Term,
    base: ServerContext,
    database_url: str,
    *,
    fenced: bool,
    history_retention: float,
    bridge_stats: BridgeStats | None = None,
    on_mesh_endpoint: Callable[[str, str | None], None] | None = None,
) -> AsyncIterator[LeaderTerm]:
    """Run the leader's actors for the block.

    Args:
        term: the lease this server holds.
        base: the server's context; the term's is a copy with a store of its own (fenced
            by the lease when ``fenced``) and empty memory of nodes and tasks.
        database_url: the store's URL.
        fenced: open the term's store with the lease as its fence (PostgreSQL).
        history_retention: seconds of events and tasks kept (0: all).
        bridge_stats: the bridge's counters (the server's, kept across its terms).
        on_mesh_endpoint: told the WireGuard endpoint each heartbeat shows (with a mesh).
    """
    async with AsyncExitStack() as stack:
        repo: Repo = base.repo
        if fenced:
            repo = await stack.enter_async_context(
                open_repo(database_url, fence=LeaseFence(term.holder, term.epoch))
            )
        ctx = dataclasses.replace(
            base,
            repo=repo,
            public_keys={},
            last_heartbeats={},
            node_reports={},
            task_owners={},
            host_network_nodes=set(),
            reserved={},
            node_down_listeners=list(base.node_down_listeners),
            _secret_envs={},
            _task_deployments={},
        )
        system = await stack.enter_async_context(open_actor_system("server"))
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)  # (runs first: the history keeper stops)
        ctx._scheduler = await system.spawn(
            lambda: Scheduler(ctx.reserved), name="scheduler", mailbox_size=8192
        )
        deployments_sup = await system.spawn_supervisor("deployments", max_restarts=100)
        nodes_sup = await system.spawn_supervisor("nodes", max_restarts=1000)
        # Nodes first: the Scheduler then knows every healthy node before a deployment
        # asks it to place anything (a NodeActor tells its deployments nothing until a
        # heartbeat arrives or its deadline passes, both later than this).
        nodes = await system.spawn(
            lambda: NodeDirectory(ctx, nodes_sup), name="nodes", mailbox_size=16384
        )
        deployments = await system.spawn(
            lambda: DeploymentDirectory(ctx, deployments_sup),
            name="deployments",
            mailbox_size=16384,
        )
        ctx._deployments = deployments
        bridge = await stack.enter_async_context(
            open_bridge(
                ctx.bus,
                system,
                nodes,
                ctx.task_owners,
                ctx.trust,
                repo,
                on_mesh_endpoint=on_mesh_endpoint,
                stats=bridge_stats,
            )
        )
        if history_retention > 0:
            tg.start_soon(keep_history, repo, history_retention)
        log.info("the leader's actors run (lease epoch %d)", term.epoch)
        yield LeaderTerm(ctx, system, nodes, deployments, bridge)


__all__ = ["LeaderTerm", "open_term"]
