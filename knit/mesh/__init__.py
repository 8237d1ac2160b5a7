"""Knit's WireGuard control-plane mesh (spec section 6).

Layer: adapter. ``keys`` makes and reads WireGuard keys (cryptography); ``wireguard`` drives one
WireGuard interface (kernel or wireguard-go; ``wg``, ``ip``) with anyio. From Knit they import
only ``knit.errors``.
"""

from __future__ import annotations

from knit.mesh.keys import generate_private_key, public_key
from knit.mesh.wireguard import Backend, MeshError, Peer, PeerStatus, WireGuardInterface

__all__ = [
    "Backend",
    "MeshError",
    "Peer",
    "PeerStatus",
    "WireGuardInterface",
    "generate_private_key",
    "public_key",
]
