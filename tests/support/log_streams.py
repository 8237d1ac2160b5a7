"""Both ends of log streams (an agent's LogServer, the server's LogHub) joined by an
in-memory bus with real proofs: for unit tests of the protocol without a nats-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import anyio

from knit.agent.context import LABEL_INSTANCE, LABEL_NODE, AgentContext
from knit.agent.files import TemplateFiles
from knit.agent.logs import LogServer
from knit.agent.trust import AgentTrust
from knit.bus import Bus, BusStats
from knit.runtime.base import ContainerSpec
from knit.secrets import NodeKeyPair
from knit.server.logs import LogHub
from knit.server.trust import BusTrust
from knit.store.trust import NodeKeyRecord
from knit.trust.keys import ServerKeys
from knit.trust.nkeys import KeyKind, NKey
from simulations.profile import SimProfile
from simulations.runtime import SimRuntime

Handler = Callable[[bytes, str | None, Mapping[str, str] | None], Awaitable[None]]

NODE = "n1"
INSTANCE = "0193a4b2c3d47e5f8a9b0c1d2e3f4a5c"


class LoopBus:
    """Publishing calls the subject's handlers at once (as NATS would, later); counts
    what went where. ``hold`` keeps the messages of a subject (a node that went away)."""

    def __init__(self) -> None:
        self.handlers: dict[str, list[Handler]] = {}
        self.stats = BusStats()
        self.counts: dict[str, int] = {}
        self.dropped: set[str] = set()

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.counts[subject] = self.counts.get(subject, 0) + 1
        if subject in self.dropped:
            return
        for handler in self.handlers.get(subject, []):
            await handler(payload, None, None)

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> None:
        self.handlers.setdefault(subject, []).append(handler)


@dataclass
class Ends:
    bus: LoopBus
    runtime: SimRuntime
    hub: LogHub
    server: LogServer
    container_id: str


def joined(trust: BusTrust, node_id: str, keys: NodeKeyPair) -> AgentTrust:
    nats_key = NKey.generate(KeyKind.USER).public_key
    trust.pin(NodeKeyRecord(node_id, keys.public_key_b64, nats_key, None, time.time()))
    link = keys.link_keys(trust.keys.link_public, node_id)
    return AgentTrust.of(node_id, link, trust.keys.task_public)


@asynccontextmanager
async def open_ends(
    tmp_path: Path, *, silence: float = 20.0, keepalive: float = 5.0, insecure: bool = False
) -> AsyncIterator[Ends]:
    """A node ``n1`` with one running container of instance :data:`INSTANCE`, its
    LogServer, and the server's LogHub, all running until the block ends (on an open bus,
    nothing proved, with ``insecure``)."""
    bus = LoopBus()
    runtime = SimRuntime(SimProfile(preloaded_images=frozenset({"app:1"})))
    container_id = await runtime.create(
        ContainerSpec(
            name="app-0",
            image="app:1",
            labels={LABEL_INSTANCE: INSTANCE, LABEL_NODE: NODE},
        )
    )
    await runtime.start(container_id)
    trust = BusTrust(ServerKeys.generate(), insecure=insecure)
    keys = NodeKeyPair.generate()
    ctx = AgentContext(
        node_id=NODE,
        hostname="host-1",
        labels={},
        bus=cast(Bus, bus),
        runtime=runtime,
        keys=keys,
        files=TemplateFiles(tmp_path),
        data_dir=tmp_path,
        trust=None if insecure else joined(trust, NODE, keys),
    )
    hub = LogHub(cast(Bus, bus), trust, silence=silence, keepalive=keepalive)
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        async with anyio.create_task_group() as agent:  # (cancel it: the agent stops)
            server = LogServer(ctx, agent, silence=silence, keepalive=keepalive)
            await server.subscribe()
            yield Ends(bus, runtime, hub, server, container_id)
            agent.cancel_scope.cancel()
        tg.cancel_scope.cancel()
