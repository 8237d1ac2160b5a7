"""``knit agent`` mesh options, and what the agent decides from them before it starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from knit.agent.identity import Identity, MeshIdentity
from knit.agent.main import mesh_node
from knit.cli import build_parser, main
from knit.config import AgentConfig
from knit.errors import KnitError
from knit.mesh import generate_private_key, public_key
from knit.trust.keys import ServerKeys
from knit.wire.mesh import MeshMember

pytestmark = pytest.mark.unit


def test_mesh_options_default_to_no_mesh_and_knit0() -> None:
    parser = build_parser()
    args = parser.parse_args(["agent"])
    assert (args.mesh_endpoint, args.mesh_interface) == (None, "knit0")
    args = parser.parse_args(
        ["agent", "--mesh-endpoint", "203.0.113.5:51820", "--mesh-interface", "knit1"]
    )
    assert (args.mesh_endpoint, args.mesh_interface) == ("203.0.113.5:51820", "knit1")
    assert parser.parse_args(["agent", "--mesh-endpoint", "[2001:db8::1]:51820"]).mesh_endpoint


@pytest.mark.parametrize("bad", ["203.0.113.5", "host:0", "host:65536", ":51820", "a b:1"])
def test_a_bad_mesh_endpoint_is_refused_with_a_message(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["agent", "--mesh-endpoint", bad])
    assert exited.value.code == 2
    assert "--mesh-endpoint" in capsys.readouterr().err


def identity(mesh: bool) -> Identity:
    keys = ServerKeys.generate()
    server = MeshMember(
        node_id=None,
        address="10.90.0.1",
        public_key=public_key(generate_private_key()),
        endpoint="192.0.2.1:51820",
    )
    return Identity(
        node_id="n1",
        server="http://192.0.2.1:8080",
        nats_urls=("nats://10.90.0.1:4222",),
        nats_jwt=None,
        server_key=keys.link_public,
        task_key=keys.task_public,
        mesh=MeshIdentity(
            address="10.90.0.2",
            cidr="10.90.0.0/16",
            endpoint="192.0.2.2:51821",
            server=server,
            members=(server,),
        )
        if mesh
        else None,
    )


def test_a_member_is_one_by_its_identity_and_keeps_or_moves_its_endpoint(tmp_path: Path) -> None:
    config = AgentConfig(data_dir=tmp_path, mesh_interface="knit7")
    assert mesh_node(config, identity(mesh=False), tmp_path) is None
    assert mesh_node(config, None, tmp_path) is None
    node = mesh_node(config, identity(mesh=True), tmp_path)  # no flag: the endpoint kept
    assert node is not None
    assert (node.interface.name, node.endpoint, node.interface.listen_port) == (
        "knit7",
        "192.0.2.2:51821",
        51821,
    )
    moved = mesh_node(
        replace(config, mesh_endpoint="198.51.100.4:40000"), identity(mesh=True), tmp_path
    )
    assert moved is not None and moved.interface.listen_port == 40000


def test_mesh_endpoint_on_a_node_that_joined_without_the_mesh_says_how_to_join_again(
    tmp_path: Path,
) -> None:
    config = AgentConfig(data_dir=tmp_path, mesh_endpoint="198.51.100.4:51820")
    for joined in (identity(mesh=False), None):
        with pytest.raises(KnitError, match="join again with --join-token"):
            mesh_node(config, joined, tmp_path)


def test_the_agent_exits_with_one_line_when_it_cannot_be_a_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["agent", "--insecure-bus", "--mesh-endpoint", "198.51.100.4:51820",
         "--data-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("knit: --mesh-endpoint: this node joined the cluster without the mesh")
    assert "\n" not in err
