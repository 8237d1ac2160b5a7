"""The bus bridge: NATS subjects to mailboxes.

Layer: server. Subscribes to ``knit.agent.heartbeat`` and ``knit.task.status``, checks who
sent each message (its proof, under the key of the node it names, see
knit/server/trust.py), decodes it in nats-py's callback, and hands it to the actor that owns
it. A callback never does the work itself; an undecodable or unproven message is counted and
dropped (never logged whole). A refused message naming a joined node is recorded as an event
(at most one a minute per node and kind).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from actors import ActorError, ActorRef, ActorSystem
from knit.bus import Bus, Headers
from knit.delivery import deliver
from knit.errors import KnitError
from knit.server.messages import HeartbeatReceived, StatusReceived
from knit.server.repo import Repo
from knit.server.trust import BusTrust
from knit.wire import subjects
from knit.wire.messages import decode_heartbeat, decode_status

log = logging.getLogger(__name__)


@dataclass
class BridgeStats:
    """Counters of what crossed the bridge."""

    heartbeats: int = 0
    statuses: int = 0
    late_statuses: int = 0
    rejected: int = 0
    refused: int = 0
    """Messages not proved to come from the node they name (or speaking for another)."""


@asynccontextmanager
async def open_bridge(
    bus: Bus,
    system: ActorSystem,
    nodes: ActorRef[Any],
    task_owners: Mapping[str, ActorRef[Any]],
    trust: BusTrust,
    repo: Repo,
    *,
    on_mesh_endpoint: Callable[[str, str | None], None] | None = None,
    stats: BridgeStats | None = None,
) -> AsyncIterator[BridgeStats]:
    """Subscribe the server's subjects for the block (a leader's term); yields live counters.

    Heartbeats go straight to the NodeActor of their node (``node/{id}``), or to the
    NodeDirectory for a node it has no actor for yet; statuses go straight to the
    DeploymentActor that runs their task (``task_owners``). A status for a task nobody runs
    any more (it ended, or the server restarted) is dropped: the agent's heartbeat report
    carries the same truth. ``stats``: counters to add to (kept across a server's terms).
    """
    stats = stats if stats is not None else BridgeStats()

    def refuse(node_id: str | None, kind: str, why: str) -> None:
        stats.refused += 1
        if node_id and trust.should_record(node_id, kind):
            repo.event(
                "node.refused", f"{kind} naming node {node_id} refused: {why}", node_id=node_id
            )
            log.warning("%s naming node %s refused: %s", kind, node_id, why)

    async def on_heartbeat(payload: bytes, reply: str | None, headers: Headers | None) -> None:
        proved = trust.check_up(subjects.HEARTBEAT, payload)
        if proved is None:
            refuse(trust.claimed(payload), "heartbeat", "not proved by the node's key")
            return
        sender, payload = proved
        try:
            heartbeat = decode_heartbeat(payload)
        except KnitError as exc:
            stats.rejected += 1
            log.warning("undecodable heartbeat dropped: %s", exc)
            return
        if sender and heartbeat.node_id != sender:
            refuse(heartbeat.node_id, "heartbeat", f"sent by node {sender}")
            return
        pinned = trust.pinned_key(heartbeat.node_id)
        if pinned is not None and heartbeat.public_key != pinned:
            refuse(heartbeat.node_id, "heartbeat", "its public key is not the one pinned at join")
            return
        stats.heartbeats += 1
        if on_mesh_endpoint is not None and heartbeat.mesh_endpoint is not None:
            on_mesh_endpoint(heartbeat.node_id, heartbeat.mesh_endpoint)
        received = HeartbeatReceived(heartbeat, time.time())
        # Straight to the node's actor; only a node heard of for the first time goes
        # through the NodeDirectory (which spawns its actor): one hop less per heartbeat.
        node = system.lookup(f"node/{heartbeat.node_id}")
        await deliver(node if node is not None else nodes, received)

    async def on_status(payload: bytes, reply: str | None, headers: Headers | None) -> None:
        proved = trust.check_up(subjects.TASK_STATUS, payload)
        if proved is None:
            refuse(trust.claimed(payload), "task status", "not proved by the node's key")
            return
        sender, payload = proved
        try:
            status = decode_status(payload)
        except KnitError as exc:
            stats.rejected += 1
            log.warning("undecodable task status dropped: %s", exc)
            return
        if sender and status.node_id != sender:
            refuse(status.node_id, "task status", f"sent by node {sender}")
            return
        stats.statuses += 1
        owner = task_owners.get(status.task_id)
        if owner is None:
            stats.late_statuses += 1
            return
        try:
            await deliver(owner, StatusReceived(status))
        except ActorError:  # its deployment is gone or restarting
            stats.late_statuses += 1

    heartbeats = await bus.subscribe(subjects.HEARTBEAT, on_heartbeat)
    try:
        statuses = await bus.subscribe(subjects.TASK_STATUS, on_status)
        try:
            yield stats
        finally:
            await bus.unsubscribe(statuses)
    finally:
        await bus.unsubscribe(heartbeats)
