"""Who is a node: joining the cluster with a join token, and removing a node.

Layer: server. Imports the store's trust module, ``knit.server.trust`` and the actors'
messages; the API reaches it through the control plane (``POST /join``,
``DELETE /nodes/{id}``).

**Join.** An agent presents a join token (spent in the transaction that admits it) and the
public halves of the keys it made: its X25519 key and its NATS user key. The server gives it a new
node id, pins both keys (store first, then memory), and answers with what the agent needs
to be a node: its id, the NATS URLs, its user JWT (its permissions: its own task subject,
the broadcast queue, heartbeats and statuses), and the server's public keys (link and
task). No secret crosses the wire: the keys that authenticate its messages are derived on
each side (knit.trust.macs).

**Removal.** Its messages are refused at once (memory first), its NodeActor stops, its row
and keys leave the store and its NATS key joins the account's revocations, which the
embedded nats-server reloads (or, with ``--nats-operator-auth``, which is pushed to the
external NATS cluster's resolver, knit/server/claims.py): its connection closes and cannot
open again. Its instances
are forgotten (it will never report them again) and placed elsewhere at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from knit.domain.join import BusCredentialSpec, JoinRequest
from knit.errors import Conflict, KnitError, SecretError
from knit.ids import new_id
from knit.natsd import NatsAuth
from knit.secrets import SecretBox
from knit.server.mesh import MeshCoordinator
from knit.server.records import iso
from knit.server.repo import Repo
from knit.server.trust import BusTrust
from knit.store import trust as trust_store
from knit.store.ops import Op
from knit.store.trust import NodeKeyRecord
from knit.trust.keys import ServerKeys
from knit.wire.servers import NoticeKind

log = logging.getLogger(__name__)

SERVER_KEYS = "server-keys"
"""The name of the server's keys among the cluster secrets (and their associated data)."""
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


async def load_trust(repo: Repo, secrets: SecretBox, *, insecure: bool) -> BusTrust:
    """The server's keys (made and stored, encrypted, on the first start) and every joined
    node's pins and removed node's revocation, from the store.

    Raises:
        SecretError: the stored keys do not decrypt (another secret key).
        StoreError: the store failed.
    """
    store = repo.store
    stored = await store.read(trust_store.find_secret, SERVER_KEYS)
    if stored is None:
        fresh = secrets.encrypt(ServerKeys.generate().to_text(), aad=SERVER_KEYS)
        stored = await store.write(trust_store.put_secret(SERVER_KEYS, fresh))
        log.info("made the cluster's keys (bus operator and accounts, link and task keys)")
    try:
        keys = ServerKeys.from_text(secrets.decrypt(stored, aad=SERVER_KEYS))
    except SecretError as exc:
        raise SecretError(
            "the cluster's keys in the database do not decrypt with this server's secret key "
            "(KNIT_SECRET_KEY or secret.key in the data dir): every server of a database "
            "needs the same secret key (docs/high-availability.md)"
        ) from exc
    pins = await store.read(trust_store.all_node_keys)
    revoked = await store.read(trust_store.revocations)
    return BusTrust(keys, pins, revoked, insecure=insecure)


async def reload_pins(repo: Repo, trust: BusTrust) -> None:
    """Refresh ``trust``'s pins and revocations from the store (another server admitted or
    removed a node).

    Raises:
        StoreError: the store failed.
    """
    pins = await repo.store.read(trust_store.all_node_keys)
    trust.refresh(pins, await repo.store.read(trust_store.revocations))


def without_userinfo(url: str) -> str:
    """``url`` without any ``user:password@`` (the server's own NATS login stays its own)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def advertised_urls(urls: Sequence[str], api_host: str | None) -> list[str]:
    """The NATS URLs to give a joining node: a wildcard listen address (``0.0.0.0``) is
    replaced by the host name the node reached the API with."""
    result = []
    for url in urls:
        parts = urlsplit(without_userinfo(url))
        if parts.hostname in WILDCARD_HOSTS and api_host:
            port = f":{parts.port}" if parts.port else ""
            parts = parts._replace(netloc=f"{api_host}{port}")
        result.append(urlunsplit(parts))
    return result


class NatsTrustHolder(Protocol):
    """A nats-server (or cluster) Knit tells whom to trust: ``EmbeddedNats`` (a reload),
    ``ClusterResolver`` (an account update pushed to an external cluster)."""

    async def reload(self, auth: NatsAuth) -> None:
        """Trust ``auth`` from now on.

        Raises:
            KnitError: the nats-server did not take it.
        """


class Membership:
    """Joins and removals (see the module's docstring).

    Args:
        repo: the store.
        trust: the bus's trust, updated here.
        changed: told the id of a node once it joined (``NoticeKind.NODE_JOINED``) or was
            removed (``NODE_REMOVED``): the leader's NodeDirectory forgets a removed node
            (its actor stops), other servers of the database refresh their pins.
        nats: what is told of a removal: the embedded nats-server, or an external cluster
            running Knit's operator-mode auth (None: an external NATS whose operator
            revokes credentials there).
        nats_urls: where nodes reach NATS (``--nats-advertise``, or the server's own URLs).
        issue_credentials: whether nodes get a NATS user JWT (the embedded server's, or an
            external one's with ``--nats-operator-auth``).
        mesh: the WireGuard mesh's coordinator (None: no mesh).
    """

    def __init__(
        self,
        repo: Repo,
        trust: BusTrust,
        changed: Callable[[NoticeKind, str], Awaitable[object]],
        nats: NatsTrustHolder | None,
        nats_urls: Sequence[str],
        *,
        issue_credentials: bool,
        mesh: MeshCoordinator | None = None,
    ) -> None:
        self.repo = repo
        self.trust = trust
        self.changed = changed
        self.nats = nats
        self.nats_urls = list(nats_urls)
        self.issue_credentials = issue_credentials
        self.mesh = mesh

    async def join(
        self, admission: Op[str] | None, request: JoinRequest, api_host: str | None
    ) -> dict[str, Any]:
        """Admit a node; its grant as JSON.

        Args:
            admission: the writer op that spends a use of the node's join token (it runs
                in the same transaction as the pinning: both or neither).
            request: what the node sent.
            api_host: the host name the node reached the API with.

        Raises:
            Unauthorized: the join token was refused (nothing was written).
            Conflict: its NATS key is in use or was revoked; the node id it asked for is
                or was a node's (the token is not spent).
            StoreError: the store failed (nothing was pinned).
        """
        record = NodeKeyRecord(
            node_id=request.node_id or new_id(),
            public_key=request.public_key,
            nats_key=request.nats_key,
            join_token_id=None,
            joined_at=time.time(),
        )
        pin = trust_store.pin_node(record, admit=admission)
        mesh = self.mesh
        if request.mesh is not None and mesh is None:
            raise Conflict("this cluster has no mesh: join without --mesh-endpoint")
        member = None
        if request.mesh is not None and mesh is not None:
            record, member = await self.repo.store.write(
                mesh.admit(request.mesh, record.node_id, pin)
            )
        else:
            record = await self.repo.store.write(pin)
        self.trust.pin(record)
        if member is not None and mesh is not None:
            try:
                await mesh.admitted(member)
            except KnitError as exc:  # (the next push tries again)
                log.error("node %s is not yet a peer of the server: %s", record.node_id, exc)
        self.repo.event(
            "node.joined",
            f"node {record.node_id} ({request.hostname}) joined",
            node_id=record.node_id,
        )
        log.info("node %s (%s) joined", record.node_id, request.hostname)
        await self.changed(NoticeKind.NODE_JOINED, record.node_id)
        jwt = None
        if self.issue_credentials and not self.trust.insecure:
            jwt = self.trust.node_jwt(record.node_id, record.nats_key)
        return {
            "node_id": record.node_id,
            "nats_urls": advertised_urls(self.nats_urls, api_host),
            "mesh": mesh.grant(member, api_host) if member is not None and mesh else None,
            "nats_jwt": jwt,
            "server_key": self.trust.keys.link_public,
            "task_key": self.trust.keys.task_public,
            "insecure_bus": self.trust.insecure,
        }

    def bus_credential(self, spec: BusCredentialSpec, api_host: str | None) -> dict[str, Any]:
        """Credentials for a tool on Knit's closed bus (see ``BusCredentialSpec``).

        Raises:
            Conflict: Knit does not run the bus (an external NATS, or an open one).
        """
        if not self.issue_credentials or self.trust.insecure:
            raise Conflict(
                "Knit issues bus credentials only for a closed nats-server of its own "
                "(embedded, or external with --nats-operator-auth)"
            )
        expires = int(time.time() + spec.ttl)
        jwt = self.trust.tool_jwt(spec.name, spec.nats_key, spec.publish, spec.subscribe, expires)
        log.info("bus credentials %r issued until %s", spec.name, iso(expires))
        return {
            "name": spec.name,
            "nats_urls": advertised_urls(self.nats_urls, api_host),
            "nats_jwt": jwt,
            "expires_at": iso(expires),
        }

    async def remove(self, node_id: str) -> dict[str, Any]:
        """Remove a node (see the module's docstring); answers ``{"id", "removed": true}``.

        Raises:
            NotFound: no such node.
        """
        pin = self.trust.pins.get(node_id)
        at = time.time()
        # Memory first: from here on nothing of the node's is believed.
        self.trust.forget(node_id, pin.nats_key if pin is not None else None, at)
        removed = await self.repo.store.write(trust_store.remove_node(node_id, at))
        await self.changed(NoticeKind.NODE_REMOVED, node_id)
        if self.mesh is not None:
            await self.mesh.removed(node_id)
        if removed is not None and self.nats is not None and not self.trust.insecure:
            try:
                await self.nats.reload(self.trust.nats_auth())
            except (KnitError, OSError) as exc:
                log.error("the nats-server did not take the revocation of %s: %s", node_id, exc)
        self.repo.event("node.removed", f"node {node_id} removed", node_id=node_id)
        log.info("node %s removed", node_id)
        return {"id": node_id, "removed": True}


__all__ = [
    "SERVER_KEYS",
    "Membership",
    "NatsTrustHolder",
    "advertised_urls",
    "load_trust",
    "without_userinfo",
]
