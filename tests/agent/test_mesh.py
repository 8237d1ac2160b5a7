"""The agent's side of the mesh without WireGuard: its key, the peers a membership gives,
revisions, the membership's proof, the identity kept, and what a member's tasks and
heartbeats carry (on SimRuntime with an in-memory bus; the interface is not brought up: the
real one is in tests/mesh/test_member.py)."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from actors import Actor, open_actor_system
from knit.agent.identity import Identity, MeshIdentity, load_identity, save_identity
from knit.agent.join import identity_from_grant
from knit.agent.mesh import (
    WIREGUARD_KEY_FILE,
    MeshMessage,
    MeshNode,
    PeersArrived,
    PeersIntake,
    PeersRefused,
    is_stale,
    load_or_create_wireguard_key,
    mesh_join,
    read_peers,
)
from knit.agent.trust import AgentTrust
from knit.domain.mesh import MeshJoin
from knit.errors import KnitError
from knit.ids import new_id
from knit.mesh import generate_private_key, public_key
from knit.mesh.peers import KEEPALIVE, peers_of
from knit.secrets import NodeKeyPair
from knit.trust import macs
from knit.trust.keys import ServerKeys
from knit.wire import subjects
from knit.wire.mesh import MeshMember, MeshPeers, decode_sync
from knit.wire.messages import (
    DeployTask,
    TaskDeployment,
    TaskPort,
    TaskTemplate,
    decode_heartbeat,
    encode,
)
from tests.agent.support import open_agent
from tests.support.spies import spy_on_creates

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

NODE_ID = "n1"


def wg_key() -> str:
    return public_key(generate_private_key())


def server_member(key: str | None = None) -> MeshMember:
    return MeshMember(
        node_id=None, address="10.90.0.1", public_key=key or wg_key(), endpoint="192.0.2.1:51820"
    )


def mesh_identity(own_key: str, **changes: Any) -> Identity:
    server = server_member()
    own = MeshMember(
        node_id=NODE_ID, address="10.90.0.2", public_key=own_key, endpoint="192.0.2.2:51821"
    )
    identity = Identity(
        node_id=NODE_ID,
        server="http://192.0.2.1:8080",
        nats_urls=("nats://10.90.0.1:4222",),
        nats_jwt=None,
        server_key=ServerKeys.generate().link_public,
        task_key=ServerKeys.generate().task_public,
        mesh=MeshIdentity(
            address="10.90.0.2",
            cidr="10.90.0.0/16",
            endpoint="192.0.2.2:51821",
            server=server,
            members=(server, own),
            revision=3,
        ),
    )
    return replace(identity, **changes)


def member_node(data_dir: Path, **open_args: Any) -> MeshNode:
    data_dir.mkdir(parents=True, exist_ok=True)
    own = public_key(load_or_create_wireguard_key(data_dir))
    identity = mesh_identity(own)
    save_identity(data_dir, identity)
    return MeshNode.open(data_dir, identity, interface="kmt0", **open_args)


def signed(server: ServerKeys, membership: MeshPeers, subject: str = subjects.MESH_PEERS) -> bytes:
    """A membership as the server publishes it: signed like a broadcast task."""
    payload = encode(membership)
    return macs.attach(payload, macs.SIGNED + macs.sign(server.task, subject, payload))


def node_trust(server: ServerKeys) -> AgentTrust:
    keys = NodeKeyPair.generate()
    return AgentTrust.of(NODE_ID, keys.link_keys(server.link_public, NODE_ID), server.task_public)


# --- keys, peers, revisions -----------------------------------------------------------------


def test_the_wireguard_key_is_made_once_private_and_only_its_public_half_is_sent(
    tmp_path: Path,
) -> None:
    first = load_or_create_wireguard_key(tmp_path)
    assert load_or_create_wireguard_key(tmp_path) == first
    path = tmp_path / WIREGUARD_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    join = mesh_join(tmp_path, "203.0.113.7:51820")
    assert join == MeshJoin(public_key=public_key(first), endpoint="203.0.113.7:51820")
    assert first not in json.dumps(join.model_dump(mode="json"))
    with pytest.raises(ValueError, match="HOST:PORT"):
        mesh_join(tmp_path, "203.0.113.7")
    path.chmod(0o644)
    with pytest.raises(KnitError, match="chmod 600"):
        load_or_create_wireguard_key(tmp_path)
    path.chmod(0o600)
    path.write_text("not a key\n")
    with pytest.raises(KnitError, match="does not hold") as caught:
        load_or_create_wireguard_key(tmp_path)
    assert "not a key" not in str(caught.value)


def test_peers_are_every_member_but_this_node_each_routed_its_own_address() -> None:
    own, other = wg_key(), wg_key()
    server = server_member()
    members = [
        server,
        MeshMember(node_id="n1", address="10.90.0.2", public_key=own, endpoint="h1:51820"),
        MeshMember(node_id="n2", address="10.90.0.3", public_key=other, endpoint=None),
    ]
    peers = peers_of(members, own)
    assert [(p.public_key, p.allowed_ips, p.endpoint, p.keepalive) for p in peers] == [
        (server.public_key, ("10.90.0.1/32",), "192.0.2.1:51820", KEEPALIVE),
        (other, ("10.90.0.3/32",), None, KEEPALIVE),
    ]
    assert KEEPALIVE == 25
    # The same key twice (a server restarting with a stale list) makes one peer.
    assert len(peers_of([*members, members[2]], own)) == 2


def test_a_member_wireguard_would_refuse_is_left_out_not_the_list() -> None:
    bad = MeshMember(node_id="n3", address="10.90.0.4", public_key="A" * 44, endpoint="-x:1")
    good = server_member()
    assert [p.public_key for p in peers_of([bad, good], wg_key())] == [good.public_key]


def test_only_a_membership_older_than_the_applied_one_is_stale() -> None:
    assert is_stale(6, 7)
    assert not is_stale(7, 7)  # applied again: converges an interface that missed a step
    assert not is_stale(8, 7)


# --- the membership's proof -----------------------------------------------------------------


def membership(revision: int = 4, *members: MeshMember) -> MeshPeers:
    return MeshPeers(revision=revision, cidr="10.90.0.0/16", members=list(members))


def test_a_membership_signed_with_the_server_task_key_is_read() -> None:
    server = ServerKeys.generate()
    sent = membership(5, server_member())
    assert read_peers(node_trust(server), signed(server, sent)) == sent


def test_forged_unsigned_and_misdirected_memberships_are_refused() -> None:
    server, impostor = ServerKeys.generate(), ServerKeys.generate()
    trust = node_trust(server)
    sent = membership(5, server_member())
    for message in (
        signed(impostor, sent),  # another key
        encode(sent),  # no proof
        signed(server, sent, subject=subjects.TASKS_BROADCAST),  # signed for another subject
        macs.attach(encode(sent), "n1 " + "A" * 43),  # a node's MAC, not the server's signature
    ):
        with pytest.raises(PeersRefused, match="not signed by the server"):
            read_peers(trust, message)
    tampered = signed(server, sent).replace(b'"revision":5', b'"revision":9')
    with pytest.raises(PeersRefused):
        read_peers(trust, tampered)
    body = encode(sent)
    garbage = macs.attach(b'{"kind":"x"}', macs.SIGNED + macs.sign(server.task, "s", body))
    with pytest.raises(PeersRefused):
        read_peers(trust, garbage)


def test_an_open_bus_reads_memberships_without_proof() -> None:
    sent = membership(5, server_member())
    assert read_peers(None, encode(sent)) == sent
    assert read_peers(None, signed(ServerKeys.generate(), sent)) == sent


class Recorder(Actor[MeshMessage]):
    def __init__(self, seen: list[MeshMessage]) -> None:
        self.seen = seen

    async def handle(self, message: MeshMessage) -> None:
        self.seen.append(message)


async def test_the_intake_hands_over_proved_lists_only(caplog: pytest.LogCaptureFixture) -> None:
    server = ServerKeys.generate()
    seen: list[MeshMessage] = []
    sent = membership(5, server_member())
    async with open_actor_system("test") as system:
        ref = await system.spawn(lambda: Recorder(seen), name="recorder")
        intake = PeersIntake(node_trust(server), ref)
        secret_looking = membership(6, server_member())
        await intake(signed(ServerKeys.generate(), secret_looking), None, None)
        await intake(signed(server, sent), None, None)
        await ref.ask(PeersArrived(sent))  # once answered, the earlier messages were handled
    assert seen == [PeersArrived(sent), PeersArrived(sent)]
    assert intake.refused == 1
    assert "not signed by the server" in caplog.text
    assert secret_looking.members[0].public_key not in caplog.text  # never the message


# --- the identity kept ----------------------------------------------------------------------


def test_an_identity_with_its_mesh_round_trips_through_the_data_dir(tmp_path: Path) -> None:
    identity = mesh_identity(wg_key())
    save_identity(tmp_path, identity)
    assert load_identity(tmp_path) == identity
    assert identity.mesh is not None
    assert identity.mesh.interface_address == "10.90.0.2/16"
    assert identity.mesh.listen_port == 51821
    plain = replace(identity, mesh=None)
    save_identity(tmp_path, plain)
    assert load_identity(tmp_path) == plain
    data = json.loads((tmp_path / "identity.json").read_text())
    data["mesh"] = identity.mesh.to_json()
    data["mesh"]["address"] = "10.91.0.2"  # outside its cidr
    (tmp_path / "identity.json").write_text(json.dumps(data))
    with pytest.raises(KnitError, match="not a Knit agent identity"):
        load_identity(tmp_path)


def grant(mesh: dict[str, Any] | None) -> dict[str, Any]:
    keys = ServerKeys.generate()
    return {
        "node_id": NODE_ID,
        "nats_urls": ["nats://10.90.0.1:4222"],
        "nats_jwt": None,
        "server_key": keys.link_public,
        "task_key": keys.task_public,
        "insecure_bus": False,
        "mesh": mesh,
    }


def test_the_grant_mesh_becomes_the_identity_mesh() -> None:
    own, server = wg_key(), server_member()
    me = MeshMember(node_id=NODE_ID, address="10.90.0.2", public_key=own, endpoint="h:51821")
    part = {
        "address": "10.90.0.2",
        "cidr": "10.90.0.0/16",
        "revision": 7,
        "members": [m.model_dump(mode="json") for m in (server, me)],
    }
    join = MeshJoin(public_key=own, endpoint="h:51821")
    identity = identity_from_grant("http://api", grant(part), join)
    assert identity.mesh == MeshIdentity(
        address="10.90.0.2",
        cidr="10.90.0.0/16",
        endpoint="h:51821",
        server=server,
        members=(server, me),
        revision=7,
    )
    assert identity_from_grant("http://api", grant(part)).mesh is None  # not asked for
    with pytest.raises(KnitError, match="has no mesh"):
        identity_from_grant("http://api", grant(None), join)
    serverless = {**part, "members": [me.model_dump(mode="json")]}
    with pytest.raises(KnitError, match="server's entry"):
        identity_from_grant("http://api", grant(serverless), join)
    with pytest.raises(KnitError, match="lacks 'cidr'"):
        identity_from_grant(
            "http://api", grant({k: v for k, v in part.items() if k != "cidr"}), join
        )


# --- a member's node ------------------------------------------------------------------------


def test_a_member_opens_with_a_changed_endpoint_kept(tmp_path: Path) -> None:
    node = member_node(tmp_path)
    assert (node.address, node.endpoint, node.interface.listen_port) == (
        "10.90.0.2",
        "192.0.2.2:51821",
        51821,
    )
    assert node.interface.address == "10.90.0.2/16"
    assert [p.allowed_ips for p in node.peers()] == [("10.90.0.1/32",)]  # not itself
    identity = load_identity(tmp_path)
    assert identity is not None
    moved = MeshNode.open(tmp_path, identity, interface="kmt0", endpoint="198.51.100.9:40000")
    assert (moved.endpoint, moved.interface.listen_port) == ("198.51.100.9:40000", 40000)
    kept = load_identity(tmp_path)
    assert kept is not None and kept.mesh is not None
    assert kept.mesh.endpoint == "198.51.100.9:40000"
    with pytest.raises(KnitError, match="without the mesh"):
        MeshNode.open(tmp_path, replace(identity, mesh=None))


# --- tasks and heartbeats -------------------------------------------------------------------


def mesh_task() -> DeployTask:
    return DeployTask(
        task_id=new_id(),
        instance_id=new_id(),
        instance_index=0,
        deployment=TaskDeployment(
            id=new_id(),
            name="web",
            image="app:1",
            ports=[
                TaskPort(container_port=80, host_port=8080, host_ip="mesh"),
                TaskPort(container_port=81, host_port=8081, host_ip="127.0.0.1"),
            ],
            templates=[TaskTemplate(content="at={{ node.address }}", destination="/etc/a")],
        ),
    )


async def test_a_member_binds_mesh_ports_to_its_address_and_templates_see_it(
    tmp_path: Path,
) -> None:
    node = member_node(tmp_path / "mesh")
    async with open_agent(tmp_path / "agent", mesh=node) as agent:
        await agent.bus.until(lambda: any(s == subjects.MESH_SYNC for s, _ in agent.bus.sent))
        syncs = [decode_sync(p) for s, p in agent.bus.sent if s == subjects.MESH_SYNC]
        assert [s.node_id for s in syncs] == [NODE_ID]
        created = spy_on_creates(agent)
        task = mesh_task()
        await agent.send(task)
        final = await agent.final(task)
        assert final.state == "succeeded", final
        assert [(p.host_ip, p.host_port) for p in created[0].ports] == [
            ("10.90.0.2", 8080),
            ("127.0.0.1", 8081),
        ]
        assert Path(created[0].mounts[0].source).read_text() == "at=10.90.0.2"
        await agent.bus.until(lambda: agent.bus.heartbeats() > 0)
        beats = [decode_heartbeat(p) for s, p in agent.bus.sent if s == subjects.HEARTBEAT]
        assert beats[0].mesh_endpoint == "192.0.2.2:51821"


async def test_a_node_outside_the_mesh_fails_mesh_ports_at_create_and_has_no_address(
    tmp_path: Path,
) -> None:
    async with open_agent(tmp_path) as agent:
        created = spy_on_creates(agent)
        task = mesh_task()
        await agent.send(task)
        final = await agent.final(task)
        assert (final.state, final.step) == ("failed", "create")
        assert "not a member of the mesh" in (final.error or "")
        assert created == []
        plain = mesh_task()
        plain = plain.model_copy(
            update={"deployment": plain.deployment.model_copy(update={"ports": []})}
        )
        await agent.send(plain)
        assert (await agent.final(plain)).state == "succeeded"
        folder = agent.ctx.files.folder(plain.instance_id)
        assert [f.read_text() for f in folder.rglob("*") if f.is_file()] == ["at="]
        await agent.bus.until(lambda: agent.bus.heartbeats() > 0)
        beats = [decode_heartbeat(p) for s, p in agent.bus.sent if s == subjects.HEARTBEAT]
        assert beats[0].mesh_endpoint is None
        assert not any(s == subjects.MESH_SYNC for s, _ in agent.bus.sent)
