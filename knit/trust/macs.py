"""Who sent a message on the bus: message authentication codes between the server and a node.

Layer: trust (pure). Imports ``cryptography`` and the standard library only.

A subscriber on NATS cannot see which connection published a message, so a message that
names a node (a heartbeat, a task status) or is meant for one (a task) proves where it comes
from itself: its JSON ends with a ``proof`` field (:func:`attach`), a MAC of its subject
and of the message's encoding without that field, under a key only the server and that
node hold: keyed BLAKE2b (RFC 7693's MAC mode), 32 bytes, which costs a third of
HMAC-SHA256 here (~1 µs for a small message). A message from a node says which node it
claims to be in its proof (``"<node id> <mac>"``: the receiver finds the key before it
parses the message); one to a node holds the MAC alone; one to any node the server's
signature (``"sig <signature>"``). The proof is the last field so that the receiver finds
it without parsing (:func:`detach`); a message stays JSON for anyone watching the bus (the
receivers' schemas ignore the field). NATS headers would do as well, at twice the cost per
message in nats-py on the server (docs/performance.md).

The keys are never sent: at join the node gives the server its X25519 public key and
receives the server's; each side derives the same shared secret (X25519) and from it, with
HKDF bound to the node id, two keys: ``up`` (node → server) and ``down`` (server → node),
so a message cannot be reflected back in the other direction. The server keeps no key of
its own per node, only the pinned public keys, and derives a node's keys when it first
needs them.

A task for *any* node (``knit.tasks.broadcast``) cannot be under one node's key: it is
signed with the server's Ed25519 task key instead, whose public half every node receives
at join.

Cost (measured on this machine, ``python -m simulations.bench_trust``): a MAC of a 300-byte
heartbeat ~1 µs, of a 24 KB one ~15 µs; an Ed25519 signature ~50 µs, its verification
~120 µs (broadcasts only).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from binascii import b2a_base64
from dataclasses import dataclass
from hashlib import blake2b

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROOF = b',"proof":"'
"""How the proof field of a message begins (it is the message's last field)."""
SIGNED = "sig "
"""How the proof of a message signed by the server (not MAC'd) begins."""


def attach(payload: bytes, proof: str) -> bytes:
    """``payload`` (a JSON object's encoding, with at least one field) with ``proof`` as
    its last field."""
    return b"".join((payload[:-1], PROOF, proof.encode("ascii"), b'"}'))


def detach(message: bytes) -> tuple[bytes, str] | None:
    """The message without its proof field, and the proof; None without one."""
    at = message.rfind(PROOF)
    if at < 0 or not message.endswith(b'"}'):
        return None
    proof = message[at + len(PROOF) : -2]
    if not proof.isascii():
        return None
    return message[:at] + b"}", proof.decode("ascii")


_SALT = b"knit bus v1"


@dataclass(frozen=True, slots=True)
class LinkKeys:
    """The two HMAC keys one node shares with the server.

    Attributes:
        up: authenticates what the node publishes (heartbeats, statuses).
        down: authenticates what the server sends the node (tasks).
    """

    up: bytes
    down: bytes

    def __repr__(self) -> str:
        return "LinkKeys(<hidden>)"


def decode_x25519_public(text: str) -> bytes:
    """The 32 bytes of an X25519 public key written as base64 (a node's key in its join and
    heartbeats).

    Raises:
        ValueError: not base64 of 32 bytes.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    if len(raw) != 32:
        raise ValueError("must be a 32-byte X25519 public key (base64)")
    return raw


def derive_link_keys(private: X25519PrivateKey, peer_public: bytes, node_id: str) -> LinkKeys:
    """The keys of the link between the holder of ``private`` and the peer, for ``node_id``.

    The server calls it with its private key and the node's public key, the node with its
    private key and the server's: both get the same keys.

    Raises:
        ValueError: ``peer_public`` is not a usable X25519 public key.
    """
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=_SALT, info=node_id.encode()).derive(
        shared
    )
    return LinkKeys(up=material[:32], down=material[32:])


def mac(key: bytes, subject: str, payload: bytes) -> str:
    """The MAC of a message on ``subject`` with ``payload``: 43 characters of base64."""
    digest = blake2b(subject.encode() + b"\n", key=key, digest_size=32)
    digest.update(payload)
    return b2a_base64(digest.digest(), newline=False)[:43].decode("ascii")


def mac_ok(key: bytes, subject: str, payload: bytes, presented: str | None) -> bool:
    """Whether ``presented`` is the MAC of the message under ``key`` (constant time)."""
    if not presented:
        return False
    return hmac.compare_digest(mac(key, subject, payload), presented)


def sign(key: Ed25519PrivateKey, subject: str, payload: bytes) -> str:
    """The server's signature of a message (base64url, no padding)."""
    raw = key.sign(subject.encode() + b"\n" + payload)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def signature_ok(public: bytes, subject: str, payload: bytes, presented: str | None) -> bool:
    """Whether ``presented`` is the signature of the message by the Ed25519 key ``public``."""
    if not presented:
        return False
    try:
        raw = base64.urlsafe_b64decode(presented + "=" * (-len(presented) % 4))
        Ed25519PublicKey.from_public_bytes(public).verify(raw, subject.encode() + b"\n" + payload)
    except (ValueError, InvalidSignature):
        return False
    return True


def new_task_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key for signing broadcast tasks."""
    return Ed25519PrivateKey.generate()


__all__ = [
    "PROOF",
    "SIGNED",
    "LinkKeys",
    "attach",
    "derive_link_keys",
    "detach",
    "mac",
    "mac_ok",
    "new_task_key",
    "sign",
    "signature_ok",
]
