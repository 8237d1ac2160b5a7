"""The mesh's messages: the membership the server pushes (``knit.mesh.peers``) and an
agent's request for it (``knit.mesh.sync``).

``MeshPeers`` carries the whole membership every time (public keys, endpoints, addresses:
nothing secret), signed by the server's task key like a broadcast task (``"sig <signature>"``
as the JSON's last field, ``knit.trust.macs``), so a member applies only the server's list.
A member keeps the list with the highest ``revision``.

Layer: wire. Pure: pydantic and ``knit.wire.messages``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from knit.wire.messages import NodeId, Struct, WireMessage, _decode


class MeshMember(Struct):
    """One member of the mesh.

    Attributes:
        node_id: the node's id; None for the server.
        address: its mesh address (IPv4, no prefix).
        public_key: its WireGuard public key (base64).
        endpoint: where its WireGuard port is reached (``HOST:PORT``); None when unknown.
    """

    node_id: NodeId | None = None
    address: Annotated[str, Field(min_length=7, max_length=15)]
    public_key: Annotated[str, Field(min_length=44, max_length=44)]
    endpoint: Annotated[str, Field(max_length=262)] | None = None


class MeshPeers(WireMessage):
    """The mesh's whole membership, server first.

    Attributes:
        revision: grows with every change; a member ignores a list older than its own.
        cidr: the mesh's network (``10.90.0.0/16``).
        members: every member, the server included.
    """

    kind: Literal["mesh_peers"] = "mesh_peers"
    revision: Annotated[int, Field(ge=0)]
    cidr: Annotated[str, Field(max_length=18)]
    members: list[MeshMember]


class MeshSync(WireMessage):
    """An agent asking for the membership again (after it (re)connected)."""

    kind: Literal["mesh_sync"] = "mesh_sync"
    node_id: NodeId


_PEERS = TypeAdapter(MeshPeers)
_SYNC = TypeAdapter(MeshSync)


def decode_peers(payload: bytes | str) -> MeshPeers:
    """Decode a ``MeshPeers`` (its proof already taken off).

    Raises:
        UnsupportedVersion: a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_PEERS, payload, "mesh membership")


def decode_sync(payload: bytes | str) -> MeshSync:
    """Decode a ``MeshSync``.

    Raises:
        UnsupportedVersion: a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_SYNC, payload, "mesh sync request")


__all__ = ["MeshMember", "MeshPeers", "MeshSync", "decode_peers", "decode_sync"]
