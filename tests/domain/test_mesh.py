"""The mesh's rules: endpoints, the CIDR, address allocation."""

from __future__ import annotations

import ipaddress

import pytest

from knit.domain.mesh import (
    MeshFull,
    MeshJoin,
    allocate,
    parse_cidr,
    parse_endpoint,
    server_address,
)

NET = ipaddress.IPv4Network("10.90.0.0/29")  # hosts .1-.6; the server takes .1


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        ([], "10.90.0.2"),
        (["10.90.0.2"], "10.90.0.3"),
        (["10.90.0.3"], "10.90.0.2"),  # a gap left by nothing: the lowest free
        (["10.90.0.2", "10.90.0.3", "10.90.0.5"], "10.90.0.4"),
    ],
)
def test_a_node_gets_the_lowest_address_never_handed_out(taken: list[str], expected: str) -> None:
    assert allocate(NET, taken) == expected


def test_the_server_takes_the_first_address_and_a_full_mesh_says_so() -> None:
    assert server_address(NET) == "10.90.0.1"
    with pytest.raises(MeshFull, match=r"10\.90\.0\.0/29"):
        allocate(NET, [f"10.90.0.{i}" for i in range(2, 7)])


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("203.0.113.5:51820", True),
        ("host.example:1", True),
        ("[2001:db8::1]:51820", True),
        ("203.0.113.5", False),
        ("203.0.113.5:0", False),
        ("203.0.113.5:65536", False),
        (":51820", False),
        ("-oProxy:22", False),
        ("a b:1", False),
    ],
)
def test_endpoints_are_host_and_port(text: str, ok: bool) -> None:
    if ok:
        assert parse_endpoint(text) == text
    else:
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_endpoint(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.90.0.0/16", None),
        ("10.90.0.0/30", None),
        ("10.90.0.0/31", "too small"),
        ("10.90.0.1/16", "host bits"),
        ("fd00::/64", "IPv4"),
        ("nonsense", "IPv4"),
    ],
)
def test_the_mesh_is_an_ipv4_network_with_room(text: str, problem: str | None) -> None:
    if problem is None:
        assert str(parse_cidr(text)) == text
    else:
        with pytest.raises(ValueError, match=problem):
            parse_cidr(text)


def test_a_join_names_a_wireguard_key() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        MeshJoin(public_key="c2hvcnQ=", endpoint="203.0.113.5:51820")
