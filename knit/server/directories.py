"""The directories: the actors that create NodeActors and DeploymentActors and route to them.

Layer: server. ``NodeDirectory`` spawns a NodeActor for every node it hears of (and, at
start, for every node the store knows, so their deadlines run). ``DeploymentDirectory``
spawns the actors of new deployments (stored by the API first: the store's one writer
serialises name checks), hands them their changes (also stored first) and fans cluster facts
out to them. Both rebuild from the store after
a restart.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, cast

from actors import Actor, ActorError, ActorRef, SupervisorRef
from knit.delivery import deliver
from knit.errors import KnitError
from knit.server.context import ServerContext
from knit.server.deployments import DeploymentActor, DeploymentMessage
from knit.server.messages import (
    DeleteDeployment,
    DeploymentCreated,
    DeploymentGone,
    DeploymentUpdated,
    HeartbeatReceived,
    InstancesObserved,
    NodeDown,
    NodeDrained,
    NodeUp,
    RemoveNode,
    SetEligible,
)
from knit.server.nodes import NodeActor, NodeMessage
from knit.server.repo import deployment_json
from knit.server.scheduler import ForgetNode, SetCounts
from knit.store.records import DeploymentRecord
from knit.wire.messages import InstanceReport

log = logging.getLogger(__name__)

UPDATE_TIMEOUT = 10.0
"""Seconds the DeploymentDirectory waits for a deployment's actor to take a change."""


NodeDirectoryMessage = HeartbeatReceived | tuple[str, SetEligible] | RemoveNode


class NodeDirectory(Actor[NodeDirectoryMessage]):
    """Spawns, finds and removes NodeActors."""

    def __init__(self, ctx: ServerContext, supervisor: SupervisorRef) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.nodes: dict[str, ActorRef[NodeMessage]] = {}

    async def started(self) -> None:
        """Spawn an actor for every known node (their deadlines start with a grace)."""
        for node in await self.ctx.repo.all_nodes():
            if node.public_key:
                self.ctx.public_keys[node.id] = node.public_key
            await self.spawn_node(node.id, node)

    async def spawn_node(self, node_id: str, known: Any) -> ActorRef[NodeMessage]:
        ref: ActorRef[NodeMessage] = await self.system.spawn(
            lambda: NodeActor(node_id, self.ctx, known),
            name=f"node/{node_id}",
            supervisor=self.supervisor,
            mailbox_size=256,
        )
        self.nodes[node_id] = ref
        return ref

    async def handle(self, message: NodeDirectoryMessage) -> object:
        """Route a heartbeat (spawning a NodeActor for a new node) or a drain request, or
        forget a removed node."""
        if isinstance(message, RemoveNode):
            await self.remove(message.node_id)
            return None
        if isinstance(message, tuple):
            node_id, command = message
            ref = self.nodes.get(node_id)
            if ref is None:
                return None  # the caller answers 404
            return await ref.ask(command, timeout=10)
        hb = message.heartbeat
        ref = self.nodes.get(hb.node_id)
        if ref is None:
            if not self.ctx.trust.joined(hb.node_id):
                return None  # removed while its heartbeat was on its way
            ref = await self.spawn_node(hb.node_id, None)
        self.ctx.public_keys[hb.node_id] = hb.public_key
        await deliver(ref, message)
        return None

    async def remove(self, node_id: str) -> None:
        """Stop a removed node's actor and forget it everywhere; its instances are lost."""
        ref = self.nodes.pop(node_id, None)
        if ref is not None:
            await self.system.stop(ref)
        ctx = self.ctx
        ctx.public_keys.pop(node_id, None)
        ctx.last_heartbeats.pop(node_id, None)
        ctx.node_reports.pop(node_id, None)
        ctx.metrics.forget_node(node_id)
        ctx.scheduler.tell_nowait(ForgetNode(node_id))
        ctx.deployments.tell_nowait(NodeDown(node_id, since=time.time(), removed=True))


DirectoryMessage = (
    DeploymentCreated
    | DeploymentUpdated
    | DeleteDeployment
    | DeploymentGone
    | NodeUp
    | NodeDown
    | NodeDrained
    | InstancesObserved
)


class DeploymentDirectory(Actor[DirectoryMessage]):
    """Creates deployments, spawns their actors, fans out cluster facts."""

    def __init__(self, ctx: ServerContext, supervisor: SupervisorRef) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.actors: dict[str, ActorRef[DeploymentMessage]] = {}

    async def started(self) -> None:
        """Reset placement counts and spawn an actor per stored deployment."""
        counts = await self.ctx.repo.instance_counts_by_node()
        self.ctx.scheduler.tell_nowait(SetCounts(counts, await self.ctx.repo.reserved_by_node()))
        for deployment_id in await self.ctx.repo.deployment_ids():
            await self.spawn_deployment(deployment_id)

    async def spawn_deployment(
        self, deployment_id: str, created: DeploymentRecord | None = None
    ) -> ActorRef[DeploymentMessage]:
        # The record of a deployment just created serves its actor's first incarnation
        # only: a restarted one reads the store (the truth) again.
        first = [created] if created is not None else []

        def make() -> DeploymentActor:
            return DeploymentActor(deployment_id, self.ctx, created=first.pop() if first else None)

        ref: ActorRef[DeploymentMessage] = await self.system.spawn(
            make,
            name=f"deployment/{deployment_id}",
            supervisor=self.supervisor,
            mailbox_size=4096,
        )
        self.actors[deployment_id] = ref
        self.ctx.metrics.deployments = len(self.actors)
        return ref

    async def handle(self, message: DirectoryMessage) -> object:
        """Create, delete, or fan a fact out."""
        if isinstance(message, DeploymentCreated):
            if message.deployment_id not in self.actors:
                await self.spawn_deployment(message.deployment_id, message.record)
            return None
        if isinstance(message, DeploymentUpdated):
            return await self.route_update(message)
        if isinstance(message, DeleteDeployment):
            ref = self.actors.get(message.deployment_id)
            if message.stored:
                if ref is not None:
                    await ref.tell(message)
                return None
            try:
                record = await self.ctx.repo.mark_deployment_deleted(message.deployment_id)
            except KnitError as exc:
                return exc
            if ref is not None:
                await ref.tell(message)
            return deployment_json(record)
        if isinstance(message, InstancesObserved):
            await self.route_reports(message)
            return None
        if isinstance(message, DeploymentGone):
            gone = self.actors.pop(message.deployment_id, None)
            self.ctx.metrics.deployments = len(self.actors)
            if gone is not None:
                await self.system.stop(gone)
            return None
        for ref in list(self.actors.values()):
            ref.tell_nowait(cast(DeploymentMessage, message))
        return None

    async def route_update(self, message: DeploymentUpdated) -> object:
        """Hand a stored change to the deployment's actor and wait until it has taken it
        (bounded: past ``UPDATE_TIMEOUT`` the change is still in its mailbox, and the store
        has it for the actor's next load anyway). Answers the actor's rollout JSON (None:
        not known)."""
        ref = self.actors.get(message.deployment_id)
        if ref is None:
            return None  # gone meanwhile: nothing runs it any more
        try:
            return await ref.ask(cast(DeploymentMessage, message), timeout=UPDATE_TIMEOUT)
        except ActorError as exc:
            log.warning(
                "deployment %s did not take its update in time: %s",
                message.deployment_id,
                type(exc).__name__,
            )
            return None

    async def route_reports(self, message: InstancesObserved) -> None:
        """Split what changed in a node's report by deployment; the containers of
        deployments that do not exist (any more) are removed."""
        reports: dict[str, list[InstanceReport]] = defaultdict(list)
        gone: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for report in message.reports:
            reports[report.deployment_id].append(report)
        for pair in message.gone:
            gone[pair[1]].append(pair)
        for deployment_id in reports.keys() | gone.keys():
            ref = self.actors.get(deployment_id)
            if ref is not None:
                ref.tell_nowait(
                    InstancesObserved(
                        message.node_id,
                        tuple(reports.get(deployment_id, ())),
                        message.taken_at,
                        tuple(gone.get(deployment_id, ())),
                    )
                )
                continue
            for report in reports.get(deployment_id, ()):
                await self.ctx.stop_orphan(message.node_id, report.instance_id)
