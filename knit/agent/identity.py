"""The agent's identity: what it received when it joined, kept in its data dir.

Layer: agent. Imports ``knit.trust``, ``knit.wire.mesh`` (pure) and the standard library.

Files in the data dir (mode 0700), each written atomically with mode 0600:

- ``identity.json``: the node id the server gave, the NATS URLs, the node's NATS user JWT,
  the server's public keys and the API it joined through (see :class:`Identity`);
- ``nats.seed``: the private half of the node's NATS user key (made by the agent, never
  sent anywhere);
- ``node.key``: the node's X25519 key pair (knit.secrets.NodeKeyPair);
- ``node-id``: the node id alone, for scripts (and, on an open bus without a join, the id
  the agent made for itself);
- ``wireguard.key``: the node's WireGuard private key (a member of the mesh only; made by the
  agent, never sent anywhere: ``knit.agent.mesh``).

A member of the mesh keeps its place in it in ``identity.json`` too (:class:`MeshIdentity`):
its address, the mesh's network, the server's entry and the last membership applied, so that
a restart brings its interface up, with the server as a peer, before NATS is reachable (NATS
is reached through the tunnel).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from knit.errors import KnitError
from knit.trust.nkeys import KeyKind, NKey
from knit.wire.mesh import MeshMember

NODE_ID_FILE = "node-id"
IDENTITY_FILE = "identity.json"
NATS_SEED_FILE = "nats.seed"
_VALID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class MeshIdentity:
    """This node's place in the mesh, as the join gave it and the last membership updated it.

    Attributes:
        address: the node's mesh address (IPv4, no prefix).
        cidr: the mesh's network (``10.90.0.0/16``).
        endpoint: the ``HOST:PORT`` the node last said the others reach it at
            (``--mesh-endpoint``); its port is the interface's listen port.
        server: the server's entry (``node_id`` None): always a peer.
        members: the last membership applied (the server's entry and this node's included).
        revision: that membership's revision.
    """

    address: str
    cidr: str
    endpoint: str
    server: MeshMember
    members: tuple[MeshMember, ...]
    revision: int = 0

    def __post_init__(self) -> None:
        network = ipaddress.IPv4Network(self.cidr, strict=True)
        if ipaddress.IPv4Address(self.address) not in network:
            raise ValueError(f"mesh address {self.address} is not in {self.cidr}")
        if self.server.node_id is not None:
            raise ValueError("the server's mesh entry has a node id")

    @property
    def interface_address(self) -> str:
        """The address with the mesh's prefix length (``10.90.0.2/16``), for the interface."""
        return f"{self.address}/{ipaddress.IPv4Network(self.cidr).prefixlen}"

    @property
    def listen_port(self) -> int:
        """The interface's UDP port: the port of :attr:`endpoint`."""
        return int(self.endpoint.rpartition(":")[2])

    def to_json(self) -> dict[str, Any]:
        """As kept in ``identity.json``."""
        return {
            "address": self.address,
            "cidr": self.cidr,
            "endpoint": self.endpoint,
            "server": self.server.model_dump(mode="json"),
            "members": [m.model_dump(mode="json") for m in self.members],
            "revision": self.revision,
        }

    @classmethod
    def from_json(cls, data: Any) -> MeshIdentity:
        """The inverse of :meth:`to_json`.

        Raises:
            ValueError: not such a mapping (also KeyError, TypeError).
        """
        return cls(
            address=str(data["address"]),
            cidr=str(data["cidr"]),
            endpoint=str(data["endpoint"]),
            server=MeshMember.model_validate(data["server"]),
            members=tuple(MeshMember.model_validate(m) for m in data["members"]),
            revision=int(data["revision"]),
        )


@dataclass(frozen=True)
class Identity:
    """What makes this agent a node of one cluster.

    Attributes:
        node_id: the id the server gave it at join.
        server: the API URL it joined through.
        nats_urls: where it reaches NATS.
        nats_jwt: its NATS user JWT (None: the cluster's NATS is not Knit's own; the agent
            connects with ``--nats-creds`` or without credentials).
        server_key: the server's X25519 public key (base64): with the node's key it gives
            the keys that prove messages between them.
        task_key: the server's Ed25519 public key (base64) that signs tasks for any node.
        insecure_bus: the server believes messages without proof (a lab).
        mesh: the node's place in the mesh (None: not a member).
    """

    node_id: str
    server: str
    nats_urls: tuple[str, ...]
    nats_jwt: str | None
    server_key: str
    task_key: str
    insecure_bus: bool = False
    mesh: MeshIdentity | None = None


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the agent's data dir (mode 0700) if needed; return it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    return data_dir


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, the file created with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_private(path: Path) -> str:
    """Read a file that must not be readable by group or others (as ssh does).

    Raises:
        KnitError: it is, or it cannot be read.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KnitError(f"{path} is accessible by group or others: run `chmod 600 {path}`")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KnitError(f"cannot read {path}: {exc.strerror}") from exc


def load_identity(data_dir: Path) -> Identity | None:
    """The identity kept in ``data_dir`` (None: this agent has not joined).

    Raises:
        KnitError: the file is unreadable, too open, or not an identity.
    """
    path = data_dir / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(read_private(path))
        identity = Identity(
            node_id=str(data["node_id"]),
            server=str(data["server"]),
            nats_urls=tuple(str(u) for u in data["nats_urls"]),
            nats_jwt=None if data.get("nats_jwt") is None else str(data["nats_jwt"]),
            server_key=str(data["server_key"]),
            task_key=str(data["task_key"]),
            insecure_bus=bool(data.get("insecure_bus", False)),
            mesh=None if data.get("mesh") is None else MeshIdentity.from_json(data["mesh"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise KnitError(f"{path} is not a Knit agent identity ({type(exc).__name__})") from exc
    if not _VALID.match(identity.node_id):
        raise KnitError(f"{path} holds an invalid node id")
    return identity


def save_identity(data_dir: Path, identity: Identity) -> None:
    """Keep ``identity`` in ``data_dir`` (and the node id alone in ``node-id``)."""
    data = asdict(identity)
    data["nats_urls"] = list(identity.nats_urls)
    data["mesh"] = None if identity.mesh is None else identity.mesh.to_json()
    write_private(data_dir / IDENTITY_FILE, json.dumps(data, indent=2) + "\n")
    write_private(data_dir / NODE_ID_FILE, identity.node_id + "\n")


def forget_identity(data_dir: Path) -> None:
    """Forget the cluster this agent joined (its keys stay: they are its own)."""
    (data_dir / IDENTITY_FILE).unlink(missing_ok=True)
    (data_dir / NODE_ID_FILE).unlink(missing_ok=True)


def load_or_create_nats_key(data_dir: Path) -> NKey:
    """The node's NATS user key, from ``nats.seed`` (made, mode 0600, the first time).

    Raises:
        KnitError: the file is too open, unreadable or not a user seed.
    """
    path = data_dir / NATS_SEED_FILE
    if not path.exists():
        write_private(path, NKey.generate(KeyKind.USER).seed + "\n")
    try:
        key = NKey.from_seed(read_private(path))
    except ValueError as exc:
        raise KnitError(f"{path} does not hold a NATS user seed") from exc
    if key.kind is not KeyKind.USER:
        raise KnitError(f"{path} does not hold a NATS user seed")
    return key


def load_or_create_node_id(data_dir: Path) -> str:
    """The id in ``node-id``, made the first time: for an agent on an open bus that has
    not joined (``--insecure-bus``).

    The id is a NATS subject token (``knit.tasks.{id}``), so it is kept to ``[a-z0-9-]``.

    Raises:
        ValueError: the stored id is not a valid node id (the file was edited by hand).
    """
    path = ensure_data_dir(data_dir) / NODE_ID_FILE
    if path.exists():
        node_id = path.read_text().strip()
        if not _VALID.match(node_id):
            raise ValueError(f"{path} holds an invalid node id {node_id!r}")
        return node_id
    node_id = uuid.uuid4().hex
    write_private(path, node_id + "\n")
    return node_id


__all__ = [
    "IDENTITY_FILE",
    "NATS_SEED_FILE",
    "NODE_ID_FILE",
    "Identity",
    "MeshIdentity",
    "ensure_data_dir",
    "forget_identity",
    "load_identity",
    "load_or_create_nats_key",
    "load_or_create_node_id",
    "read_private",
    "save_identity",
    "write_private",
]
