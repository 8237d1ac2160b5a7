"""What the bus attack tests share: a node's stolen credentials and keys, read from its data
dir, and raw NATS clients that use them as an attacker would.

An attacker here is a process that reaches NATS: with no credentials, or with those of one
node it compromised (its ``identity.json``, ``nats.seed`` and ``node.key``), trying to act
as another node or as the server. It speaks NATS with nats-py directly; it computes proofs
with ``knit.trust`` (the pure algorithms, which are no secret) and the stolen keys.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from knit.secrets import NodeKeyPair
from knit.trust.macs import LinkKeys, attach, mac
from knit.trust.nkeys import NKey


@dataclass(frozen=True)
class Stolen:
    """Everything a compromised node holds."""

    node_id: str
    nats_urls: list[str]
    jwt: str | None
    seed: str
    keys: NodeKeyPair
    link: LinkKeys

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> Stolen:
        """Read a node's identity and keys off its disk."""
        identity = json.loads((data_dir / "identity.json").read_text())
        keys = NodeKeyPair.load_or_create(data_dir)
        node_id = identity["node_id"]
        return cls(
            node_id=node_id,
            nats_urls=list(identity["nats_urls"]),
            jwt=identity["nats_jwt"],
            seed=(data_dir / "nats.seed").read_text().strip(),
            keys=keys,
            link=keys.link_keys(identity["server_key"], node_id),
        )

    async def connect(self, **options: Any) -> Client:
        """A NATS connection with this node's credentials (no reconnection).

        Raises:
            nats.errors.Error: NATS refused it.
        """
        key = NKey.from_seed(self.seed)
        jwt = (self.jwt or "").encode()
        return await connect(
            self.nats_urls,
            user_jwt_cb=lambda: jwt,
            signature_cb=lambda nonce: base64.b64encode(key.sign(nonce.encode())),
            **options,
        )

    def prove(self, subject: str, payload: bytes, *, name: str | None = None) -> bytes:
        """``payload`` proved as this node would prove it (``name``: the node it claims)."""
        return attach(payload, f"{name or self.node_id} {mac(self.link.up, subject, payload)}")

    def prove_task(self, subject: str, payload: bytes) -> bytes:
        """A task proved as the server proves it for this node: what a compromised (or
        buggy) server could send; the node's own key gives the MAC away."""
        return attach(payload, mac(self.link.down, subject, payload))


async def connect(servers: list[str] | str, **options: Any) -> Client:
    """``nats.connect`` without reconnection, that closes what it opened when refused
    (nats-py leaves the socket of a refused connection open otherwise).

    Raises:
        nats.errors.Error: NATS refused it.
    """
    client = Client()
    try:
        await client.connect(servers, allow_reconnect=False, connect_timeout=5, **options)
    except BaseException:
        await client.close()
        raise
    return client


def heartbeat(
    node_id: str, public_key: str, *, removed: list[str] | None = None, seq: int = 1
) -> bytes:
    """A heartbeat naming ``node_id``: by default an empty full report (the node runs
    nothing); with ``removed``, a difference saying those instances are gone."""
    body: dict[str, Any] = {
        "v": 1,
        "msg_id": uuid.uuid4().hex,
        "kind": "heartbeat",
        "node_id": node_id,
        "hostname": "forged",
        "seq": seq,
        "capacity": {"cpus": 1, "memory_bytes": 1},
        "public_key": public_key,
        "interval": 0.5,
        "instances": [],
        "sent_at": time.time(),
    }
    if removed is not None:
        body["full"] = False
        body["removed"] = removed
    return json.dumps(body).encode()


def task_status(node_id: str, instance_id: str, state: str = "failed") -> bytes:
    """A task status naming ``node_id`` about ``instance_id``."""
    return json.dumps(
        {
            "v": 1,
            "msg_id": uuid.uuid4().hex,
            "kind": "task_status",
            "task_id": uuid.uuid4().hex,
            "instance_id": instance_id,
            "node_id": node_id,
            "state": state,
            "error": "forged",
            "at": time.time(),
        }
    ).encode()
