"""The server as the WireGuard mesh's coordinator (spec 6): its own interface, the members'
addresses, and the membership pushed to every node.

With ``knit server --mesh-cidr CIDR`` the server brings up its interface at the first address
of CIDR (``--mesh-interface``, ``--mesh-port``), hands each node that joins with a WireGuard
key the lowest address never handed out (stored: ``knit.store.mesh``), and keeps every
member's interface full: after each change (a join, a removal, an endpoint a heartbeat
reports) it publishes the whole membership on ``knit.mesh.peers``, signed with its task key,
at most once per :data:`PUSH_DELAY`; an agent that (re)connects asks for it again on
``knit.mesh.sync``. Its own interface gets every member as a peer.

Layer: server. Imports ``knit.mesh`` (the interface), ``knit.store.mesh``, ``knit.wire``.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection

from knit.bus import Bus, Headers
from knit.domain.mesh import MeshJoin, server_address
from knit.errors import KnitError
from knit.mesh import WireGuardInterface, generate_private_key
from knit.mesh.peers import peers_of
from knit.secrets import SecretBox
from knit.server.repo import Repo
from knit.server.trust import BusTrust
from knit.store import mesh as mesh_store
from knit.store import trust as trust_store
from knit.store.mesh import MeshMemberRecord
from knit.store.ops import Op
from knit.wire import subjects
from knit.wire.mesh import MeshMember, MeshPeers
from knit.wire.messages import encode

log = logging.getLogger(__name__)
T = TypeVar("T")

MESH_KEY = "mesh_key"
"""The cluster secret holding the server's WireGuard private key (encrypted)."""

PUSH_DELAY = 0.2
"""Seconds a change waits before the membership is pushed: changes close together (many
joins, many agents reconnecting) make one push."""


@dataclass(frozen=True)
class MeshConfig:
    """``knit server --mesh-*``.

    Attributes:
        network: the mesh's CIDR; the server takes its first address.
        port: the server's WireGuard UDP port.
        endpoint: where nodes reach it (``HOST:PORT``); None: the host name a joining node
            reached the API with, and ``port``.
        interface: the interface's name.
    """

    network: ipaddress.IPv4Network
    port: int = 51820
    endpoint: str | None = None
    interface: str = "knit0"

    @property
    def address(self) -> str:
        """The server's mesh address."""
        return server_address(self.network)


async def server_mesh_key(repo: Repo, secrets: SecretBox) -> str:
    """The server's WireGuard private key: made and stored (encrypted) the first time."""
    stored = await repo.store.read(trust_store.find_secret, MESH_KEY)
    if stored is None:
        fresh = secrets.encrypt(generate_private_key(), aad=MESH_KEY)
        stored = await repo.store.write(trust_store.put_secret(MESH_KEY, fresh))
        log.info("made the server's WireGuard key")
    return secrets.decrypt(stored, aad=MESH_KEY)


class MeshCoordinator:
    """The mesh's members and the server's interface (see the module's docstring).

    Args:
        config: the ``--mesh-*`` options.
        interface: the server's interface (brought up by :meth:`run`).
        records: every stored member row (removed ones included).
        trust: signs the pushed membership.
        repo: the store (removals and endpoints are written there).
    """

    def __init__(
        self,
        config: MeshConfig,
        interface: WireGuardInterface,
        records: Iterable[MeshMemberRecord],
        trust: BusTrust,
        repo: Repo,
    ) -> None:
        self.config = config
        self.repo = repo
        self.interface = interface
        self.trust = trust
        self.members = {r.node_id: r for r in records if r.removed_at is None}
        self.revision = 0
        self._changed = anyio.Event()
        self._lock = anyio.Lock()

    # --- what nodes are told ----------------------------------------------------------------

    def server_member(self, api_host: str | None = None) -> MeshMember:
        """The server's own entry."""
        endpoint = self.config.endpoint
        if endpoint is None and api_host:
            host = f"[{api_host}]" if ":" in api_host else api_host
            endpoint = f"{host}:{self.config.port}"
        return MeshMember(
            node_id=None,
            address=self.config.address,
            public_key=self.interface.public_key,
            endpoint=endpoint,
        )

    def membership(self, api_host: str | None = None) -> MeshPeers:
        """The whole membership, the server first, then by address."""
        members = sorted(self.members.values(), key=lambda r: ipaddress.IPv4Address(r.address))
        return MeshPeers(
            revision=self.revision,
            cidr=str(self.config.network),
            members=[
                self.server_member(api_host),
                *(
                    MeshMember(
                        node_id=r.node_id,
                        address=r.address,
                        public_key=r.public_key,
                        endpoint=r.endpoint,
                    )
                    for r in members
                ),
            ],
        )

    def grant(self, record: MeshMemberRecord, api_host: str | None) -> dict[str, Any]:
        """The ``mesh`` part of a join's answer."""
        membership = self.membership(api_host)
        return {
            "address": record.address,
            "cidr": membership.cidr,
            "revision": membership.revision,
            "members": [m.model_dump() for m in membership.members],
        }

    # --- changes ----------------------------------------------------------------------------

    def admit(self, request: MeshJoin, node_id: str, pin: Op[T]) -> Op[tuple[T, MeshMemberRecord]]:
        """The writer op that pins a joining node's keys (``pin``) and gives it its address,
        in one transaction: both or neither."""
        admit = mesh_store.admit_member(
            self.config.network, node_id, request.public_key, request.endpoint
        )

        async def op(conn: AsyncConnection) -> tuple[T, MeshMemberRecord]:
            pinned = await pin(conn)
            return pinned, await admit(conn)

        return op

    async def admitted(self, record: MeshMemberRecord) -> None:
        """A node joined the mesh: a peer of the server's interface before its grant is sent
        (so its first handshake is answered), of the others' after the next push."""
        self.members[record.node_id] = record
        log.info("node %s is in the mesh at %s", record.node_id, record.address)
        self._change()
        await self._apply()

    async def _apply(self) -> None:
        """The server's interface's peers: every member."""
        async with self._lock:
            await self.interface.set_peers(peers_of(self.members.values()))

    async def removed(self, node_id: str) -> None:
        """A node was removed: dropped from every member's peers (its address stays taken)."""
        if self.members.pop(node_id, None) is None:
            return
        await self.repo.store.write(mesh_store.remove_member(node_id, time.time()))
        self._change()

    def observe_endpoint(self, node_id: str, endpoint: str | None) -> None:
        """A heartbeat's ``mesh_endpoint``: a changed one is stored and pushed."""
        member = self.members.get(node_id)
        if member is None or endpoint is None or endpoint == member.endpoint:
            return
        self.members[node_id] = replace(member, endpoint=endpoint)
        self.repo.store.write_nowait(mesh_store.set_endpoint(node_id, endpoint))
        log.info("node %s's mesh endpoint is now %s", node_id, endpoint)
        self._change()

    def _change(self) -> None:
        self.revision = max(self.revision + 1, int(time.time() * 1000))
        self._changed.set()

    # --- running ----------------------------------------------------------------------------

    async def up(self) -> None:
        """Bring the server's interface up with every member as a peer.

        Raises:
            MeshError: the interface cannot be brought up (the error says why).
        """
        await self.interface.up()
        await self.interface.set_peers(peers_of(self.members.values()))
        self.revision = int(time.time() * 1000)
        log.info(
            "mesh %s: interface %s up at %s, %d members",
            self.config.network,
            self.config.interface,
            self.config.address,
            len(self.members),
        )

    async def run(self, bus: Bus) -> None:
        """Push the membership after every change (and on agents' requests) until cancelled."""

        async def on_sync(payload: bytes, reply: str | None, headers: Headers | None) -> None:
            self._changed.set()

        await bus.subscribe(subjects.MESH_SYNC, on_sync)
        self._changed.set()
        while True:
            await self._changed.wait()
            await anyio.sleep(PUSH_DELAY)
            self._changed = anyio.Event()
            try:
                await self._apply()
                payload = encode(self.membership())
                await bus.publish(
                    subjects.MESH_PEERS, self.trust.prove_task(None, subjects.MESH_PEERS, payload)
                )
            except (KnitError, OSError) as exc:
                log.error("could not push the mesh's membership: %s", exc)

    async def status(self) -> list[dict[str, Any]]:
        """``GET /mesh``: every member, the server first, with what the server's interface
        sees of it (latest handshake, bytes received and sent)."""
        try:
            seen = await self.interface.peers()
        except KnitError as exc:
            log.warning("wg show failed: %s", exc)
            seen = {}
        rows = []
        for member in self.membership().members:
            peer = seen.get(member.public_key)
            handshake = peer.latest_handshake if peer is not None else None
            rows.append(
                {
                    "node_id": member.node_id,
                    "address": member.address,
                    "public_key": member.public_key,
                    "endpoint": (peer.endpoint if peer and peer.endpoint else member.endpoint),
                    "latest_handshake": handshake.isoformat() if handshake else None,
                    "transfer": {
                        "rx_bytes": peer.rx_bytes if peer else 0,
                        "tx_bytes": peer.tx_bytes if peer else 0,
                    },
                }
            )
        return rows

    def address_of(self, node_id: str) -> str | None:
        """A node's mesh address, None when it is not a member."""
        member = self.members.get(node_id)
        return member.address if member is not None else None


__all__ = ["MESH_KEY", "MeshConfig", "MeshCoordinator", "server_mesh_key"]
