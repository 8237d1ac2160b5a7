"""The WireGuard peers of a mesh's members: each routed its own address alone (``/32``), at
its endpoint, with keepalives. The server's interface and every agent's build them alike.

Layer: adapter (mesh). Imports ``knit.mesh.wireguard`` and the standard library.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from knit.mesh.wireguard import Peer

log = logging.getLogger(__name__)

KEEPALIVE = 25
"""Seconds between WireGuard keepalives (NAT mappings live longer than this)."""


class Member(Protocol):
    """What a peer is made of: a member as stored (server) or as pushed (agents)."""

    @property
    def node_id(self) -> str | None: ...
    @property
    def address(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def endpoint(self) -> str | None: ...


def peers_of(members: Iterable[Member], own_public_key: str | None = None) -> list[Peer]:
    """The interface's peers for ``members``: every member but the one holding
    ``own_public_key``, each routed its own address alone (``/32``), at its endpoint, with
    keepalives.

    A member whose key or endpoint WireGuard would refuse is left out (and logged): one
    bad entry must not keep the others from being applied.
    """
    peers: list[Peer] = []
    seen = {own_public_key}
    for member in members:
        if member.public_key in seen:
            continue
        try:
            peer = Peer(
                public_key=member.public_key,
                allowed_ips=(f"{member.address}/32",),
                endpoint=member.endpoint,
                keepalive=KEEPALIVE,
            )
        except ValueError as exc:
            log.warning("mesh member %s (%s) left out: %s", member.node_id, member.address, exc)
            continue
        seen.add(member.public_key)
        peers.append(peer)
    return peers


__all__ = ["KEEPALIVE", "Member", "peers_of"]
