"""The agent's mesh member on real wireguard-go, between two network namespaces.

Namespace A holds the agent's interface (``knit.agent.mesh.MeshNode``, brought up from the
identity kept in its data dir); namespace B holds a WireGuard interface that plays the
server's, and a test key set (``ServerKeys``) signs the memberships as the server signs
broadcast tasks. The lists reach the real ``PeersIntake`` and ``MeshUpdater``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from actors import ActorRef, open_actor_system
from knit.agent.identity import Identity, MeshIdentity, load_identity, save_identity
from knit.agent.main import mesh_up
from knit.agent.mesh import (
    CheckSync,
    MeshMessage,
    MeshNode,
    MeshUpdater,
    PeersIntake,
    load_or_create_wireguard_key,
)
from knit.agent.trust import AgentTrust
from knit.bus import BusStats
from knit.errors import KnitError
from knit.mesh import Peer, WireGuardInterface, generate_private_key, public_key
from knit.secrets import NodeKeyPair
from knit.trust import macs
from knit.trust.keys import ServerKeys
from knit.wire import subjects
from knit.wire.mesh import MeshMember, MeshPeers, decode_sync
from knit.wire.messages import encode
from tests.mesh.namespaces import VETH_A, VETH_B, Pair, output, ping_command
from tests.support import require

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.anyio]

NODE_ID = "n1"
NODE_PORT = 51820
SERVER_PORT = 51821


def signed(keys: ServerKeys, membership: MeshPeers) -> bytes:
    """As the server publishes a membership: signed with its task key."""
    payload = encode(membership)
    return macs.attach(payload, macs.SIGNED + macs.sign(keys.task, subjects.MESH_PEERS, payload))


class World:
    """The server's interface in B, the node's data dir, and the memberships' makings."""

    def __init__(self, pair: Pair, data_dir: Path) -> None:
        self.pair = pair
        self.data_dir = data_dir
        self.keys = ServerKeys.generate()
        self.cidr = pair.mesh_a.rsplit(".", 1)[0] + ".0/24"
        self.server_wg = WireGuardInterface(
            pair.wg_b, generate_private_key(), f"{pair.mesh_b}/24", SERVER_PORT,
            netns=pair.netns_b,
        )  # fmt: skip
        self.server = MeshMember(
            node_id=None,
            address=pair.mesh_b,
            public_key=self.server_wg.public_key,
            endpoint=f"{VETH_B}:{SERVER_PORT}",
        )
        self.own = MeshMember(
            node_id=NODE_ID,
            address=pair.mesh_a,
            public_key=public_key(load_or_create_wireguard_key(data_dir)),
            endpoint=f"{VETH_A}:{NODE_PORT}",
        )
        save_identity(
            data_dir,
            Identity(
                node_id=NODE_ID,
                server="http://192.0.2.1:8080",
                nats_urls=(f"nats://{pair.mesh_b}:4222",),
                nats_jwt=None,
                server_key=self.keys.link_public,
                task_key=self.keys.task_public,
                mesh=MeshIdentity(
                    address=pair.mesh_a,
                    cidr=self.cidr,
                    endpoint=f"{VETH_A}:{NODE_PORT}",
                    server=self.server,
                    members=(self.server, self.own),
                    revision=1,
                ),
            ),
        )
        self.trust = AgentTrust.of(
            NODE_ID,
            NodeKeyPair.generate().link_keys(self.keys.link_public, NODE_ID),
            self.keys.task_public,
        )

    def node(self) -> MeshNode:
        """The agent's member, from the identity kept (as a restarted agent makes it)."""
        identity = load_identity(self.data_dir)
        assert identity is not None
        return MeshNode.open(
            self.data_dir, identity, interface=self.pair.wg_a, netns=self.pair.netns_a
        )

    def membership(self, revision: int, *members: MeshMember) -> MeshPeers:
        return MeshPeers(revision=revision, cidr=self.cidr, members=list(members))

    async def server_sees(self, node: MeshNode) -> None:
        await self.server_wg.set_peers(
            [Peer(node.public_key, (f"{self.pair.mesh_a}/32",), f"{VETH_A}:{NODE_PORT}")]
        )

    async def reaches_server(self) -> bool:
        ping = ping_command()
        require(ping is not None, "no ping: apt-get install iputils-ping or busybox-static")
        assert ping is not None
        result = await anyio.run_process(
            ["ip", "netns", "exec", self.pair.netns_a, *ping, "-c", "2", "-W", "2",
             self.pair.mesh_b],
            check=False,
        )  # fmt: skip
        return result.returncode == 0


@asynccontextmanager
async def running_updater(
    node: MeshNode, trust: AgentTrust, stats: BusStats, published: list[tuple[str, bytes]]
) -> AsyncIterator[tuple[PeersIntake, ActorRef[MeshMessage]]]:
    async def publish(subject: str, payload: bytes) -> None:
        published.append((subject, payload))

    async with open_actor_system("mesh-test") as system:
        updater: ActorRef[MeshMessage] = await system.spawn(
            lambda: MeshUpdater(node, NODE_ID, stats, publish), name="mesh"
        )
        yield PeersIntake(trust, updater), updater


async def test_a_member_comes_up_from_its_identity_and_applies_only_the_server_lists(
    pair: Pair, tmp_path: Path
) -> None:
    world = World(pair, tmp_path)
    other = MeshMember(
        node_id="n2",
        address=pair.mesh_a.rsplit(".", 1)[0] + ".3",
        public_key=public_key(generate_private_key()),
        endpoint="192.168.237.9:51830",
    )
    published: list[tuple[str, bytes]] = []
    stats = BusStats()
    with anyio.fail_after(60):
        async with world.server_wg:
            node = world.node()
            await world.server_sees(node)
            await node.up()
            try:
                assert set(await node.interface.peers()) == {world.server.public_key}
                assert await world.reaches_server()

                async with running_updater(node, world.trust, stats, published) as (
                    intake,
                    updater,
                ):
                    await updater.ask(CheckSync(), timeout=10)
                    assert [decode_sync(p).node_id for _, p in published] == [NODE_ID]
                    assert {s for s, _ in published} == {subjects.MESH_SYNC}

                    # A new member arrives, signed: it becomes a peer, routed its address.
                    grown = world.membership(2, world.server, world.own, other)
                    await intake(signed(world.keys, grown), None, None)
                    await updater.ask(CheckSync(), timeout=10)
                    seen = await node.interface.peers()
                    assert set(seen) == {world.server.public_key, other.public_key}
                    assert seen[other.public_key].allowed_ips == (f"{other.address}/32",)
                    assert seen[other.public_key].endpoint == other.endpoint

                    # A forged list (another key) that would drop everyone is refused.
                    forged = world.membership(3, world.server, world.own)
                    await intake(signed(ServerKeys.generate(), forged), None, None)
                    await intake(encode(forged), None, None)
                    # An older list is ignored.
                    await intake(signed(world.keys, world.membership(1, world.server)), None, None)
                    await updater.ask(CheckSync(), timeout=10)
                    assert intake.refused == 2
                    assert set(await node.interface.peers()) == {
                        world.server.public_key,
                        other.public_key,
                    }
                    assert node.mesh.revision == 2

                    # The member is removed: it is dropped from the interface.
                    await intake(signed(world.keys, forged), None, None)
                    await updater.ask(CheckSync(), timeout=10)
                    assert set(await node.interface.peers()) == {world.server.public_key}
                    assert await world.reaches_server()

                    # The bus reconnected: the member asks for the list again.
                    stats.reconnects += 1
                    await updater.ask(CheckSync(), timeout=10)
                    assert [s for s, _ in published] == [subjects.MESH_SYNC] * 2
            finally:
                await node.down()

            kept = load_identity(tmp_path)
            assert kept is not None and kept.mesh is not None
            assert (kept.mesh.revision, kept.mesh.members) == (3, (world.server, world.own))

            # A restart brings the interface up from what was kept, the server a peer.
            again = world.node()
            assert again.public_key == node.public_key
            async with again.interface:
                await again.interface.set_peers(again.peers())
                assert set(await again.interface.peers()) == {world.server.public_key}
                assert await world.reaches_server()
    assert pair.wg_a not in await output("ip", "-n", pair.netns_a, "-o", "link", "show")
    assert await output("ip", "netns", "pids", pair.netns_a) == ""


async def test_a_member_that_cannot_come_up_says_why_and_leaves_nothing(
    pair: Pair, tmp_path: Path
) -> None:
    world = World(pair, tmp_path)
    with anyio.fail_after(30):
        async with world.server_wg:
            node = MeshNode.open(
                tmp_path,
                world.node().identity,
                interface=pair.wg_b,  # the server's: taken on this machine
                netns=pair.netns_a,
            )
            with pytest.raises(KnitError, match="in use") as caught:
                await mesh_up(node)
            message = str(caught.value)
            assert message.startswith(f"cannot bring the mesh interface {pair.wg_b} up: ")
            assert "\n" not in message
            assert load_or_create_wireguard_key(tmp_path) not in message
    assert await output("ip", "netns", "pids", pair.netns_a) == ""
