"""Registration and heartbeats on ``knit.agent.heartbeat`` (spec 5.1).

Layer: agent. The first message is the registration (``first=True``); every later one
carries the same identity plus the full report of the instances on this node, which is
how the server finds out about anything its other messages missed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import cast

from actors import Actor, ActorRef
from knit.agent.context import AGENT_VERSION, AgentContext
from knit.agent.reconciler import ReconcilerMessage, Snapshot
from knit.errors import KnitError
from knit.wire import subjects
from knit.wire.messages import Capacity, Heartbeat, InstanceReport, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Beat:
    """Time to send a heartbeat."""


class Heartbeater(Actor[Beat]):
    """Publishes a heartbeat every ``heartbeat_interval`` seconds."""

    def __init__(self, ctx: AgentContext, reconciler: ActorRef[ReconcilerMessage]) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self.seq = 0
        self.capacity = Capacity(cpus=0, memory_bytes=0)
        self.docker_version = ""

    async def started(self) -> None:
        """Read the host's capacity, register at once, then beat on a timer."""
        try:
            info = await self.ctx.runtime.info()
            self.capacity = Capacity(cpus=info.cpus, memory_bytes=info.memory_bytes)
            self.docker_version = info.version
        except KnitError as exc:
            log.warning("cannot read runtime info: %s", exc)
        await self.beat()
        self.every(self.ctx.heartbeat_interval, Beat())

    async def handle(self, message: Beat) -> None:
        """Send one heartbeat."""
        await self.beat()

    async def beat(self) -> None:
        """Build and publish the heartbeat; a bus failure is logged, the next beat retries."""
        instances = cast(list[InstanceReport], await self.reconciler.ask(Snapshot(), timeout=10))
        heartbeat = Heartbeat(
            node_id=self.ctx.node_id,
            hostname=self.ctx.hostname,
            seq=self.seq,
            first=self.seq == 0,
            capacity=self.capacity,
            labels=dict(self.ctx.labels),
            docker_version=self.docker_version,
            agent_version=AGENT_VERSION,
            public_key=self.ctx.keys.public_key_b64,
            interval=self.ctx.heartbeat_interval,
            instances=instances,
            sent_at=time.time(),
        )
        try:
            await self.ctx.bus.publish(subjects.HEARTBEAT, encode(heartbeat))
        except KnitError as exc:
            log.warning("heartbeat not sent: %s", exc)
            return
        self.seq += 1
