"""An external NATS cluster running Knit's operator-mode auth (``knit nats-config``): nodes
connect to any member with their JWTs, and a removal pushed to one member's resolver keeps
the node out of every member. Three real nats-servers, routed to each other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from knit.bus import BusCredentials, connect_bus
from knit.errors import BusError, KnitError
from knit.natsd import render_auth
from knit.server.claims import ClusterResolver, check_reply
from knit.server.trust import BusTrust
from knit.store.trust import NodeKeyRecord
from knit.trust import natsjwt
from knit.trust.keys import ServerKeys
from knit.trust.nkeys import KeyKind, NKey
from knit.wire import subjects
from tests.support.nats import NatsCluster

pytestmark = [pytest.mark.integration]


def node_credentials(trust: BusTrust, node_id: str) -> tuple[BusCredentials, NKey]:
    key = NKey.generate(KeyKind.USER)
    trust.pin(NodeKeyRecord(node_id, "", key.public_key, None, 0.0))
    return BusCredentials(jwt=trust.node_jwt(node_id, key.public_key), seed=key.seed), key


@pytest.fixture
def trust() -> BusTrust:
    return BusTrust(ServerKeys.generate())


class AMinuteAgo:
    """``time`` for knit.trust.natsjwt, a minute behind: JWTs signed "a minute ago"."""

    @staticmethod
    def time() -> float:
        return time.time() - 60


@pytest.fixture
def nats_cluster(
    nats_server_binary: str, tmp_path: Path, trust: BusTrust, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NatsCluster]:
    """Three members including a ``knit nats-config`` written a minute ago (the accounts'
    JWTs a resolver is given later are newer, as they are outside tests)."""
    with monkeypatch.context() as earlier:
        earlier.setattr(natsjwt, "time", AMinuteAgo)
        include = render_auth(trust.nats_auth(), resolver_dir="knit-jwt")
    cluster = NatsCluster(nats_server_binary, tmp_path, include)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def resolver_of(cluster: NatsCluster, trust: BusTrust) -> ClusterResolver:
    return ClusterResolver(
        cluster.urls, trust.system_credentials, trust.keys.system_account.public_key
    )


@pytest.mark.anyio
async def test_a_removed_node_is_cut_off_and_refused_by_every_member(
    nats_cluster: NatsCluster, trust: BusTrust
) -> None:
    creds, key = node_credentials(trust, "node-a")
    keep, _ = node_credentials(trust, "node-b")
    first, second, third = nats_cluster.members
    refused = anyio.Event()
    node = await connect_bus(
        first.url, name="node-a", credentials=creds, on_refused=lambda _: refused.set()
    )
    other = await connect_bus(third.url, name="node-b", credentials=keep)
    server = await connect_bus(second.url, name="server", credentials=trust.server_credentials())
    try:
        # Across the routes: a heartbeat on the first member reaches the server on the second.
        got: list[bytes] = []

        async def on(payload: bytes, reply: str | None, headers: object) -> None:
            got.append(payload)

        await server.subscribe(subjects.HEARTBEAT, on)
        await server.flush()
        with anyio.fail_after(5):
            while not got:
                await node.publish(subjects.HEARTBEAT, b"alive")
                await node.flush()
                await anyio.sleep(0.05)

        trust.forget("node-a", key.public_key, at=time.time())
        await resolver_of(nats_cluster, trust).reload(trust.nats_auth())
        with anyio.fail_after(5):
            await refused.wait()
        for member in nats_cluster.members:
            with pytest.raises(BusError, match="refused"):
                await connect_bus(member.url, name="node-a again", credentials=creds, retry_for=5)
        assert other.connected  # nobody else dropped
        await other.publish(subjects.HEARTBEAT, b"still here")
        await other.flush()
    finally:
        for bus in (node, other, server):
            await bus.close()


@pytest.mark.anyio
async def test_a_member_started_again_from_the_old_configuration_keeps_the_revocation(
    nats_cluster: NatsCluster, trust: BusTrust
) -> None:
    creds, key = node_credentials(trust, "node-a")
    trust.forget("node-a", key.public_key, at=time.time())
    await resolver_of(nats_cluster, trust).reload(trust.nats_auth())
    member = nats_cluster.members[0]
    # The update's answer may come from another member: this one has it once it refuses.
    with anyio.fail_after(10):
        while True:
            try:
                early = await connect_bus(member.url, name="node-a before", credentials=creds)
            except BusError as exc:
                assert "refused" in str(exc)
                break
            await early.close()
            await anyio.sleep(0.1)
    member.kill()
    member.start()  # its knit-auth.conf still preloads the account without the revocation
    with pytest.raises(BusError, match="refused"):
        await connect_bus(member.url, name="node-a again", credentials=creds, retry_for=5)


@pytest.mark.anyio
async def test_a_memory_resolver_does_not_take_updates_and_says_so(
    nats_server_binary: str, tmp_path: Path, trust: BusTrust
) -> None:
    cluster = NatsCluster(nats_server_binary, tmp_path, render_auth(trust.nats_auth()), size=1)
    cluster.start()
    try:
        with pytest.raises(KnitError, match="full resolver"):
            await resolver_of(cluster, trust).reload(trust.nats_auth())
    finally:
        cluster.stop()


@pytest.mark.anyio
async def test_with_a_memory_resolver_a_new_configuration_and_a_reload_revoke(
    nats_server_binary: str, tmp_path: Path, trust: BusTrust
) -> None:
    # The documented fallback: `knit nats-config --resolver memory` again, then a reload.
    # (nats-server refuses to reload a changed operator: it must come out the same.)
    creds, key = node_credentials(trust, "node-a")
    cluster = NatsCluster(nats_server_binary, tmp_path, render_auth(trust.nats_auth()), size=1)
    cluster.start()
    refused = anyio.Event()
    try:
        [member] = cluster.members
        node = await connect_bus(
            member.url, name="node-a", credentials=creds, on_refused=lambda _: refused.set()
        )
        try:
            trust.forget("node-a", key.public_key, at=time.time())
            member.reload(render_auth(BusTrust(trust.keys, revoked=trust.revoked).nats_auth()))
            with anyio.fail_after(5):
                await refused.wait()
        finally:
            await node.close()
        with anyio.fail_after(5):  # (the line may come after the client was dropped)
            while "Reloaded server configuration" not in member.log.read_text():  # noqa: ASYNC110
                await anyio.sleep(0.05)
    finally:
        cluster.stop()


def test_a_resolvers_answer_is_accepted_only_with_code_200() -> None:
    check_reply("A1", b'{"data": {"account": "A1", "code": 200, "message": "jwt updated"}}')
    with pytest.raises(KnitError, match="500 jwt validation failed"):
        check_reply("A1", b'{"error": {"code": 500, "description": "jwt validation failed"}}')
    with pytest.raises(KnitError, match="no JSON"):
        check_reply("A1", b"nonsense")
