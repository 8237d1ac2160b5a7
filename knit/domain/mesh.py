"""The WireGuard mesh's rules: what a node sends to join it, and its addresses (spec 6).

Knit's server coordinates the mesh, as headscale and netmaker do: it takes the first address
of ``--mesh-cidr`` for itself, hands each joining node the lowest address never handed out
before, and pushes the list of members to every node. The addresses are stored by the server
(``knit.store.mesh``); these functions only decide.

Layer: domain. Pure: imports pydantic, ``knit.trust.macs`` and the standard library.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from knit.errors import KnitError
from knit.trust.macs import decode_x25519_public

MESH_HOST_IP = "mesh"
"""``ports[].host_ip`` that publishes a port on the node's mesh address."""

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))$")


class MeshFull(KnitError):
    """Every address of the mesh's CIDR has been handed out."""


def parse_endpoint(value: str) -> str:
    """``value`` if it is a WireGuard endpoint ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises:
        ValueError: it is not.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not an endpoint HOST:PORT (port 1-65535)")
    return value


def _wireguard_key(value: str) -> str:
    decode_x25519_public(value)  # a WireGuard public key is one; ValueError says why not
    return value


Endpoint = Annotated[str, AfterValidator(parse_endpoint)]
WireGuardKey = Annotated[str, AfterValidator(_wireguard_key)]


class MeshJoin(BaseModel):
    """The part of ``POST /join`` that makes the node a member of the mesh.

    Attributes:
        public_key: the node's WireGuard public key (base64); the private key never leaves
            the node.
        endpoint: where the other members reach the node's WireGuard port (``HOST:PORT``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key: WireGuardKey
    endpoint: Endpoint


def parse_cidr(value: str) -> ipaddress.IPv4Network:
    """The mesh's network: IPv4, room for the server and at least one node.

    Raises:
        ValueError: not an IPv4 network, host bits set, or smaller than a /30.
    """
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IPv4 network like 10.90.0.0/16 ({exc})") from None
    if network.prefixlen > 30:
        raise ValueError(f"{value!r} is too small for a mesh (a /30 at most)")
    return network


def server_address(network: ipaddress.IPv4Network) -> str:
    """The server's own address: the first host address of the network."""
    return str(network.network_address + 1)


def allocate(network: ipaddress.IPv4Network, taken: Collection[str]) -> str:
    """The lowest host address of ``network`` that is not the server's nor in ``taken``
    (every address ever handed out, removed nodes' included: none is handed out twice).

    Raises:
        MeshFull: none is left.
    """
    used = {ipaddress.IPv4Address(a) for a in taken}
    used.add(ipaddress.IPv4Address(server_address(network)))
    for candidate in network.hosts():
        if candidate not in used:
            return str(candidate)
    raise MeshFull(f"every address of the mesh {network} has been handed out")


__all__ = [
    "MESH_HOST_IP",
    "Endpoint",
    "MeshFull",
    "MeshJoin",
    "WireGuardKey",
    "allocate",
    "parse_cidr",
    "parse_endpoint",
    "server_address",
]
