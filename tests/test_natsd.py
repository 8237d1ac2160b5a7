"""The embedded nats-server in operator mode: who may connect, publish and subscribe, how
a node is revoked, and how the server comes back after it dies. Real nats-server."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from knit.bus import Bus, BusCredentials, connect_bus
from knit.errors import BusError
from knit.natsd import EmbeddedNats, render_config
from knit.server.trust import BusTrust
from knit.store.trust import NodeKeyRecord
from knit.trust.keys import ServerKeys
from knit.trust.nkeys import KeyKind, NKey
from knit.wire import subjects
from tests.support.nats import NatsServer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def node_credentials(trust: BusTrust, node_id: str) -> tuple[BusCredentials, NKey]:
    key = NKey.generate(KeyKind.USER)
    trust.pin(NodeKeyRecord(node_id, "", key.public_key, None, 0.0))
    return BusCredentials(jwt=trust.node_jwt(node_id, key.public_key), seed=key.seed), key


@asynccontextmanager
async def embedded(tmp_path: Path, trust: BusTrust | None) -> AsyncIterator[EmbeddedNats]:
    nats = EmbeddedNats(
        "127.0.0.1:0",
        tmp_path,
        None if trust is None else trust.nats_auth(),
        log_file=tmp_path / "nats.log",
    )
    async with anyio.create_task_group() as tg:
        await tg.start(nats.run)
        try:
            yield nats
        finally:
            nats.release()
            tg.cancel_scope.cancel()


async def collect(bus: Bus, subject: str, queue: str = "") -> list[bytes]:
    got: list[bytes] = []

    async def on(payload: bytes, reply: str | None, headers: object) -> None:
        got.append(payload)

    await bus.subscribe(subject, on, queue=queue)
    await bus.flush()
    return got


def test_the_configuration_trusts_the_operator_only_when_asked() -> None:
    trust = BusTrust(ServerKeys.generate())
    closed = render_config("127.0.0.1", 4222, trust.nats_auth())
    assert "operator:" in closed and "resolver: MEMORY" in closed
    assert trust.keys.account.public_key in closed
    assert trust.keys.account_signing.seed not in closed  # only public JWTs go there
    assert "operator" not in render_config("127.0.0.1", 4222, None)


async def test_without_credentials_nobody_connects(tmp_path: Path) -> None:
    trust = BusTrust(ServerKeys.generate())
    async with embedded(tmp_path, trust) as nats:
        with pytest.raises(BusError, match="refused"):
            await connect_bus(nats.url, name="intruder", retry_for=5)


async def test_a_node_may_do_what_an_agent_does_and_nothing_else(tmp_path: Path) -> None:
    trust = BusTrust(ServerKeys.generate())
    creds, _ = node_credentials(trust, "node-a")
    async with embedded(tmp_path, trust) as nats:
        server = await connect_bus(nats.url, name="server", credentials=trust.server_credentials())
        node = await connect_bus(nats.url, name="node-a", credentials=creds)
        try:
            heartbeats = await collect(server, subjects.HEARTBEAT)
            other_tasks = await collect(server, subjects.tasks_for("node-b"))
            own = await collect(node, subjects.tasks_for("node-a"))
            any_node = await collect(node, subjects.TASKS_BROADCAST, subjects.BROADCAST_QUEUE)
            # The subscriptions reach the nats-server before anything is published to them.
            await node.flush()
            await server.flush()
            await node.publish(subjects.HEARTBEAT, b"alive")
            await node.publish(subjects.tasks_for("node-b"), b"forged task")  # refused
            await server.publish(subjects.tasks_for("node-a"), b"task")
            await server.publish(subjects.TASKS_BROADCAST, b"anyone")
            await node.flush()
            await server.flush()
            with anyio.move_on_after(5):  # (what may arrive, under load, in its time)
                while not (heartbeats and own and any_node):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.sleep(0.3)  # (and what must not arrive has had its chance)
            assert heartbeats == [b"alive"]
            assert other_tasks == []
            assert own == [b"task"] and any_node == [b"anyone"]
            # Another node's tasks, and broadcast tasks outside the queue group: refused.
            spied = await collect(node, subjects.tasks_for("node-b"))
            plain = await collect(node, subjects.TASKS_BROADCAST)
            await node.flush()
            await server.publish(subjects.tasks_for("node-b"), b"secret")
            await server.publish(subjects.TASKS_BROADCAST, b"again")
            await server.flush()
            await anyio.sleep(0.3)
            assert spied == [] and plain == []
        finally:
            await node.close()
            await server.close()


async def test_a_revoked_node_is_cut_off_at_once_and_cannot_come_back(tmp_path: Path) -> None:
    trust = BusTrust(ServerKeys.generate())
    creds, key = node_credentials(trust, "node-a")
    keep, _ = node_credentials(trust, "node-b")
    async with embedded(tmp_path, trust) as nats:
        reasons: list[str] = []
        refused = anyio.Event()

        def on_refused(reason: str) -> None:
            reasons.append(reason)
            refused.set()

        node = await connect_bus(nats.url, name="node-a", credentials=creds, on_refused=on_refused)
        other = await connect_bus(nats.url, name="node-b", credentials=keep)
        try:
            trust.forget("node-a", key.public_key, at=time.time())
            await nats.reload(trust.nats_auth())
            with anyio.fail_after(5):
                await refused.wait()
            assert "revoked" in reasons[0].lower()
            with pytest.raises(BusError, match="refused"):
                await connect_bus(nats.url, name="node-a again", credentials=creds, retry_for=5)
            assert other.connected  # nobody else dropped
            await other.publish(subjects.HEARTBEAT, b"still here")
            await other.flush()
        finally:
            await node.close()
            await other.close()


async def test_a_dead_nats_server_is_started_again_with_the_same_users(tmp_path: Path) -> None:
    trust = BusTrust(ServerKeys.generate())
    creds, _ = node_credentials(trust, "node-a")
    async with embedded(tmp_path, trust) as nats:
        node = await connect_bus(nats.url, name="node-a", credentials=creds)
        try:
            first = nats.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            with anyio.fail_after(10):
                while node.stats.reconnects == 0:  # noqa: ASYNC110 (nats-py's counter)
                    await anyio.sleep(0.05)
            assert nats.pid not in (None, first) and nats.restarts == 1
            await node.publish(subjects.HEARTBEAT, b"back")
            await node.flush()
        finally:
            await node.close()


async def test_a_bus_given_several_urls_fails_over_to_another_member(
    nats_server_factory: Callable[[], NatsServer],
) -> None:
    # Two plain nats-servers (not a cluster): what matters here is the client, which
    # reconnects to the other URL and subscribes there again by itself.
    first, second = nats_server_factory(), nats_server_factory()
    first.start()
    second.start()
    bus = await connect_bus(f"{first.url}, {second.url}", name="failover")
    try:
        got: list[bytes] = []

        async def handler(payload: bytes, reply: str | None, headers: object) -> None:
            got.append(payload)

        await bus.subscribe("knit.test.failover", handler)
        await bus.flush()
        # nats-py picks one of the URLs at random: stop the one it is connected to.
        connected = bus.client.connected_url
        assert connected is not None
        [serving] = [s for s in (first, second) if s.port == connected.port]
        serving.stop()
        with anyio.fail_after(15):
            while bus.stats.reconnects == 0:  # noqa: ASYNC110 (nats-py's counter)
                await anyio.sleep(0.05)
            while not got:  # the subscription was made again on the other server
                await bus.publish("knit.test.failover", b"after")
                await bus.flush()
                await anyio.sleep(0.05)
        assert got[0] == b"after"
    finally:
        await bus.close()
