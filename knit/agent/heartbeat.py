"""Registration and heartbeats on ``knit.agent.heartbeat`` (spec 5.1).

Layer: agent. The first message is the registration (``first=True``); every later one
carries the same identity plus the report of the instances on this node, which is how the
server finds out about anything its other messages missed.

Most heartbeats carry only the differences (``full=False``): the reports that are new or
changed since the last heartbeat published, and the ids of the instances gone since (at 100
instances per node, decoding and comparing every report whole cost the server a fifth of
its CPU; see docs/decisions/0010-heartbeat-differences.md). A heartbeat is full when the
server might not hold the previous one: the registration, every ``FULL_EVERY``-th beat (a
server that restarted, or missed one, waits at most that long for the whole), after a
publish failed, after the bus reconnected (messages may have been lost meanwhile), after a
silence of more than ``SILENCE`` intervals (the agent was frozen or stalled: the server may
have declared the node unhealthy and dropped its report, and a node back from that must be
reported at once, before its instances' ``lost_after`` ends), and when the report could not
be refreshed (the last known one is sent again, whole).

Besides the regular beat, a change of the report (a container exited, started, vanished)
makes the Heartbeater beat soon, at most once per ``MIN_GAP``: an exit reaches the server in
tens of milliseconds rather than up to one interval later. Changes a running task of this
agent causes itself do not (the Reconciler leaves them out): its TaskStatus tells them.
``sent_at`` is the agent's clock when the report was asked for, so the server can tell a
report taken before a task's result (stale) from one taken after it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import cast

from actors import Actor, ActorError, ActorRef, Timer
from knit.agent.context import AGENT_VERSION, AgentContext
from knit.agent.reconciler import ReconcilerMessage, Snapshot
from knit.errors import KnitError
from knit.wire import subjects
from knit.wire.messages import Capacity, Heartbeat, InstanceReport, encode, report_changed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Beat:
    """Time to send a heartbeat."""


@dataclass(frozen=True)
class Changed:
    """The report of this node's instances changed: beat soon."""


@dataclass(frozen=True)
class Begin:
    """Time for the first regular heartbeat: from now on, one every interval."""


HeartbeatMessage = Beat | Changed | Begin

SOON = 0.02
"""Seconds a change waits before its beat, so a burst of changes makes one heartbeat."""
MIN_GAP = 0.25
"""Fewest seconds between two heartbeats sent because of changes."""
FULL_EVERY = 6
"""Every this many heartbeats, one is full (at the 5 s default interval: every 30 s)."""
SILENCE = 2.0
"""Intervals without a heartbeat published after which the next one is full."""


class Heartbeater(Actor[HeartbeatMessage]):
    """Publishes a heartbeat every ``heartbeat_interval`` seconds, and soon after a change."""

    def __init__(self, ctx: AgentContext, reconciler: ActorRef[ReconcilerMessage]) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        self.seq = 0
        self.capacity = Capacity(cpus=0, memory_bytes=0)
        self.docker_version = ""
        self.instances: list[InstanceReport] = []
        self.taken = time.time()
        # The reports of the last heartbeat published, by instance (None: the next one is
        # full), and the bus's reconnection count then.
        self.sent: dict[str, InstanceReport] | None = None
        self.reconnects = 0
        self.sent_when = 0.0  # time.monotonic() of that publish
        self.last_beat = 0.0
        self.soon: Timer | None = None

    async def started(self) -> None:
        """Read the host's capacity, register at once, then beat on a timer."""
        try:
            info = await self.ctx.runtime.info()
            self.capacity = Capacity(cpus=info.cpus, memory_bytes=info.memory_bytes)
            self.docker_version = info.version
        except KnitError as exc:
            log.warning("cannot read runtime info: %s", exc)
        await self.beat()
        # The regular beats start at a random point of the first interval: agents that
        # started together (a fleet rebooted, a rack powered on) would otherwise beat
        # together forever, a burst at the server every interval.
        self.after(random.uniform(0.0, self.ctx.heartbeat_interval), Begin())

    async def handle(self, message: HeartbeatMessage) -> None:
        """Send one heartbeat now, or schedule one soon after a change."""
        if isinstance(message, Begin):
            self.every(self.ctx.heartbeat_interval, Beat())
        elif isinstance(message, Changed):
            if self.soon is None:
                delay = max(SOON, self.last_beat + MIN_GAP - time.monotonic())
                self.soon = self.after(delay, Beat())
            return
        await self.beat()

    async def beat(self) -> None:
        """Build and publish the heartbeat; a bus failure is logged, the next beat retries.

        The report is waited for at most one interval (at least 1 s): a Reconciler stuck on
        a Docker Engine that does not answer must not silence the node, so the last report
        is sent again meanwhile, whole.
        """
        if self.soon is not None:
            self.soon.cancel()
            self.soon = None
        self.last_beat = time.monotonic()
        asked = time.time()
        fresh = True
        try:
            self.instances = cast(
                list[InstanceReport],
                await self.reconciler.ask(
                    Snapshot(), timeout=max(1.0, self.ctx.heartbeat_interval)
                ),
            )
            self.taken = asked
        except ActorError as exc:
            log.warning("no fresh report of the instances (%s): sending the last one", exc)
            fresh = False
        instances, taken = self.instances, self.taken
        reconnects = self.ctx.bus.stats.reconnects
        last = self.sent
        full = (
            last is None  # the registration, or the last publish failed
            or self.seq % FULL_EVERY == 0
            or reconnects != self.reconnects
            or self.last_beat - self.sent_when > SILENCE * self.ctx.heartbeat_interval
            or not fresh
        )
        listed, removed = instances, []
        if last is not None and not full:
            listed = [r for r in instances if report_changed(last.get(r.instance_id), r)]
            present = {r.instance_id for r in instances}
            removed = [i for i in last if i not in present]
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
            full=full,
            instances=listed,
            removed=removed,
            sent_at=taken,
            allow_host_network=self.ctx.allow_host_network,
            mesh_endpoint=self.ctx.mesh.endpoint if self.ctx.mesh is not None else None,
        )
        try:
            await self.ctx.publish(subjects.HEARTBEAT, encode(heartbeat))
        except KnitError as exc:
            log.warning("heartbeat not sent: %s", exc)
            self.sent = None
            return
        self.sent = {r.instance_id: r for r in instances}
        self.reconnects = reconnects
        self.sent_when = self.last_beat
        self.seq += 1
