"""The agent's side of the mesh: its WireGuard key, its interface, the membership it applies.

Layer: agent. Imports ``knit.mesh`` (the WireGuard adapter), ``knit.agent.identity``,
``knit.agent.trust``, ``knit.bus`` (its counters), ``knit.wire`` and ``actors``.

A member (``knit agent --mesh-endpoint HOST:PORT``) makes its WireGuard key once
(``wireguard.key`` in the data dir, mode 0600: it never leaves the node, never reaches a
command line or a log) and sends the public half at join (:func:`mesh_join`). Its place in
the mesh is kept in the identity (``knit.agent.identity.MeshIdentity``), so every start
brings the interface up (:meth:`MeshNode.up`) with the last membership it knew, the server
at least, before connecting to NATS, which it reaches through the tunnel.

The server publishes the whole membership on ``knit.mesh.peers`` after every change, signed
with its task key like a broadcast task. :class:`MeshUpdater` applies each list that proves
itself (:func:`read_peers`) and is not older than the last applied: every member but this
node becomes a peer (``knit.mesh.peers.peers_of``), a member gone from the list is dropped from the
interface. After every (re)connection to NATS it asks for the list again (``MeshSync`` on
``knit.mesh.sync``): lists published while it was away are lost.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from actors import Actor, ActorError, ActorRef
from knit.agent.identity import Identity, MeshIdentity, read_private, save_identity, write_private
from knit.agent.refusals import Refusals
from knit.agent.trust import AgentTrust
from knit.bus import BusStats
from knit.domain.mesh import MeshJoin, parse_endpoint
from knit.errors import KnitError
from knit.mesh.keys import decode_key, generate_private_key, public_key
from knit.mesh.peers import peers_of
from knit.mesh.wireguard import Backend, MeshError, Peer, WireGuardInterface
from knit.trust import macs
from knit.wire import subjects
from knit.wire.mesh import MeshPeers, MeshSync, decode_peers
from knit.wire.messages import encode

log = logging.getLogger(__name__)

WIREGUARD_KEY_FILE = "wireguard.key"
DEFAULT_INTERFACE = "knit0"
SYNC_CHECK = 1.0
"""Seconds between two looks at the bus's reconnection count (a change asks for the list)."""


class PeersRefused(KnitError):
    """A membership list that does not prove it comes from the server, or is unreadable."""


# --- keys -------------------------------------------------------------------------------


def load_or_create_wireguard_key(data_dir: Path) -> str:
    """The node's WireGuard private key (base64), from ``wireguard.key`` (made, mode 0600,
    the first time).

    Raises:
        KnitError: the file is too open, unreadable, or does not hold a key (the message
            never repeats it).
    """
    path = data_dir / WIREGUARD_KEY_FILE
    if not path.exists():
        write_private(path, generate_private_key() + "\n")
    key = read_private(path).strip()
    try:
        decode_key(key, "the WireGuard private key")
    except ValueError as exc:
        raise KnitError(f"{path} does not hold a WireGuard private key") from exc
    return key


def mesh_join(data_dir: Path, endpoint: str) -> MeshJoin:
    """What ``POST /join`` carries to make this node a member: its public key and endpoint.

    Raises:
        KnitError: the key file is unusable.
        ValueError: ``endpoint`` is not ``HOST:PORT``.
    """
    return MeshJoin(
        public_key=public_key(load_or_create_wireguard_key(data_dir)),
        endpoint=parse_endpoint(endpoint),
    )


# --- decisions (pure) -------------------------------------------------------------------


def is_stale(revision: int, applied: int) -> bool:
    """Whether a membership of ``revision`` is older than the one applied (the same
    revision is applied again: it converges an interface that missed a step)."""
    return revision < applied


def read_peers(trust: AgentTrust | None, message: bytes) -> MeshPeers:
    """A ``knit.mesh.peers`` message, checked and decoded.

    Args:
        trust: the node's keys (None: an open bus, nothing is proved; a proof, if there is
            one, is taken off unchecked).
        message: as received.

    Raises:
        PeersRefused: not signed by the server's task key, or not a membership.
    """
    if trust is not None:
        body = trust.open_signed(subjects.MESH_PEERS, message)
        if body is None:
            raise PeersRefused("a mesh membership not signed by the server")
    else:
        parts = macs.detach(message)
        body = message if parts is None else parts[0]
    try:
        return decode_peers(body)
    except KnitError as exc:
        raise PeersRefused(str(exc)) from exc


# --- the node's interface ---------------------------------------------------------------


class MeshNode:
    """This node as a member of the mesh: its interface and the membership applied to it.

    Args:
        data_dir: where the identity is kept (each applied membership is saved there).
        identity: the node's identity; its ``mesh`` must be set.
        interface: the WireGuard interface (not up yet).
    """

    def __init__(self, data_dir: Path, identity: Identity, interface: WireGuardInterface) -> None:
        if identity.mesh is None:
            raise ValueError("this node is not a member of the mesh")
        self.data_dir = data_dir
        self.identity = identity
        self.interface = interface

    @classmethod
    def open(
        cls,
        data_dir: Path,
        identity: Identity,
        *,
        interface: str = DEFAULT_INTERFACE,
        endpoint: str | None = None,
        netns: str | None = None,
        backend: Backend = "auto",
    ) -> MeshNode:
        """The member an identity describes, with its key from the data dir.

        Args:
            data_dir: the agent's data dir.
            identity: the node's identity (a member of the mesh).
            interface: the interface's name (``--mesh-interface``).
            endpoint: where the others reach this node now (``--mesh-endpoint``; None: the
                one kept). A change is kept, and its port is the listen port.
            netns: a network namespace to run the interface in (tests).
            backend: which WireGuard (``knit.mesh.wireguard``).

        Raises:
            KnitError: the identity has no mesh, or the key file is unusable.
            ValueError: a malformed name, endpoint or address.
        """
        mesh = identity.mesh
        if mesh is None:
            raise KnitError("this node joined without the mesh: it has no mesh address")
        if endpoint is not None and endpoint != mesh.endpoint:
            mesh = dataclasses.replace(mesh, endpoint=parse_endpoint(endpoint))
            identity = dataclasses.replace(identity, mesh=mesh)
            save_identity(data_dir, identity)
        wg = WireGuardInterface(
            interface,
            load_or_create_wireguard_key(data_dir),
            mesh.interface_address,
            mesh.listen_port,
            netns=netns,
            backend=backend,
        )
        return cls(data_dir, identity, wg)

    @property
    def mesh(self) -> MeshIdentity:
        """This node's place in the mesh (the last membership applied included)."""
        assert self.identity.mesh is not None  # checked in __init__
        return self.identity.mesh

    @property
    def address(self) -> str:
        """The node's mesh address (no prefix)."""
        return self.mesh.address

    @property
    def endpoint(self) -> str:
        """Where the others reach this node (``HOST:PORT``)."""
        return self.mesh.endpoint

    @property
    def public_key(self) -> str:
        """The node's WireGuard public key."""
        return self.interface.public_key

    def peers(self) -> list[Peer]:
        """The peers the kept membership gives (the server's entry always among them)."""
        return peers_of((self.mesh.server, *self.mesh.members), self.public_key)

    async def up(self) -> None:
        """Bring the interface up with the kept membership's peers.

        On failure nothing is left behind. Cancellation too (``WireGuardInterface.up``).

        Raises:
            MeshError: a command failed: the error names it and its stderr (never the key).
        """
        await self.interface.up()
        try:
            await self.interface.set_peers(self.peers())
        except BaseException:
            await self.interface.down()
            raise
        log.info(
            "mesh interface %s up: address %s, %d peers (revision %d)",
            self.interface.name,
            self.interface.address,
            len(self.peers()),
            self.mesh.revision,
        )

    async def down(self) -> None:
        """Take the interface down (idempotent; shielded from cancellation)."""
        await self.interface.down()

    async def apply(self, membership: MeshPeers) -> bool:
        """Make the interface's peers those of ``membership`` and keep it; False if it was
        older than the one applied, or holds no server (it would cut this node off the bus,
        whence no later list could reach it).

        Cancellation may leave the peers partly applied; the next list converges them.

        Raises:
            MeshError: ``wg`` failed (the membership is not kept: the next one is applied
                whole).
        """
        mesh = self.mesh
        if is_stale(membership.revision, mesh.revision):
            log.info(
                "mesh membership revision %d ignored: %d is applied",
                membership.revision,
                mesh.revision,
            )
            return False
        servers = [m for m in membership.members if m.node_id is None]
        if len(servers) != 1:
            log.warning(
                "mesh membership revision %d ignored: it does not hold the server once",
                membership.revision,
            )
            return False
        members = tuple(membership.members)
        await self.interface.set_peers(peers_of(members, self.public_key))
        mesh = dataclasses.replace(
            mesh, server=servers[0], members=members, revision=membership.revision
        )
        self.identity = dataclasses.replace(self.identity, mesh=mesh)
        save_identity(self.data_dir, self.identity)
        log.info(
            "mesh membership revision %d applied: %d members", membership.revision, len(members)
        )
        return True


# --- the actor --------------------------------------------------------------------------


@dataclass(frozen=True)
class PeersArrived:
    """A membership list that proved itself."""

    membership: MeshPeers


@dataclass(frozen=True)
class CheckSync:
    """Time to look whether the bus reconnected (then ask for the list again)."""


MeshMessage = PeersArrived | CheckSync


class MeshUpdater(Actor[MeshMessage]):
    """Applies the server's membership lists to this node's interface, and asks for the list
    after every (re)connection to NATS.

    Args:
        node: this node's interface and membership.
        node_id: this node's id (in ``MeshSync``).
        bus_stats: the bus's counters (``reconnects``).
        publish: publishes on the bus, with this node's proof (``AgentContext.publish``).
    """

    def __init__(
        self,
        node: MeshNode,
        node_id: str,
        bus_stats: BusStats,
        publish: Callable[[str, bytes], Awaitable[None]],
    ) -> None:
        self.node = node
        self.node_id = node_id
        self.bus_stats = bus_stats
        self.publish = publish
        self.synced: int | None = None  # the reconnection count when a sync was last sent

    async def started(self) -> None:
        """Look at the bus every ``SYNC_CHECK`` seconds; the first look asks for the list
        (tell it a ``CheckSync`` once subscribed, not to wait for the first second)."""
        self.every(SYNC_CHECK, CheckSync())

    async def handle(self, message: MeshMessage) -> None:
        """Apply a list, or ask for one if the bus reconnected (or the last ask failed)."""
        if isinstance(message, CheckSync):
            if self.synced != self.bus_stats.reconnects:
                await self.sync()
            return
        try:
            await self.node.apply(message.membership)
        except MeshError as exc:
            log.warning("mesh membership not applied: %s", exc)
            self.synced = None  # ask again: the next list is applied whole

    async def sync(self) -> None:
        """Publish a ``MeshSync``; a failure is retried at the next check."""
        reconnects = self.bus_stats.reconnects
        try:
            await self.publish(subjects.MESH_SYNC, encode(MeshSync(node_id=self.node_id)))
        except KnitError as exc:
            log.warning("mesh sync request not sent: %s", exc)
            self.synced = None
            return
        self.synced = reconnects


class PeersIntake:
    """The ``knit.mesh.peers`` subscription's handler: checks each list and hands the ones
    that prove themselves to the :class:`MeshUpdater`; the others are counted and logged
    (one line a second at most, never the message)."""

    def __init__(self, trust: AgentTrust | None, updater: ActorRef[MeshMessage]) -> None:
        self.trust = trust
        self.updater = updater
        self.refusals = Refusals(log)

    async def __call__(
        self, payload: bytes, reply: str | None, headers: Mapping[str, str] | None
    ) -> None:
        """Bus handler (runs in nats-py's task: it only checks and hands over)."""
        try:
            membership = read_peers(self.trust, payload)
        except PeersRefused as exc:
            self.refuse(str(exc))
            return
        try:
            self.updater.tell_nowait(PeersArrived(membership))
        except ActorError as exc:  # full or stopped: the next list, or a sync, catches up
            log.warning("mesh membership revision %d dropped: %s", membership.revision, exc)

    def refuse(self, why: str) -> None:
        """Count and log a refused list."""
        self.refusals.add(why)

    @property
    def refused(self) -> int:
        """How many were refused."""
        return self.refusals.count


__all__ = [
    "DEFAULT_INTERFACE",
    "WIREGUARD_KEY_FILE",
    "CheckSync",
    "MeshMessage",
    "MeshNode",
    "MeshUpdater",
    "PeersArrived",
    "PeersIntake",
    "PeersRefused",
    "is_stale",
    "load_or_create_wireguard_key",
    "mesh_join",
    "read_peers",
]
