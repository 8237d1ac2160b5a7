"""NATS nkeys: Ed25519 keys in NATS's text encoding (``U...`` public keys, ``SU...`` seeds).

Layer: trust (pure). Imports ``cryptography`` and the standard library only.

NATS names every identity in its decentralized authentication (operators, accounts, users)
by an Ed25519 public key written as base32 of a prefix byte that tells the kind, the 32
bytes and a CRC-16 (XMODEM, little-endian); the private half is a *seed* written the same
way with two prefix bytes. This module writes and reads that encoding (the format of the
``nkeys`` reference implementation) on top of ``cryptography``'s Ed25519, so Knit needs no
further dependency to issue and use NATS credentials. A seed is a secret: nothing here
logs or reprs one.
"""

from __future__ import annotations

import base64
import binascii
from enum import IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

_SEED_PREFIX = 18 << 3  # "S"


class KeyKind(IntEnum):
    """What an nkey names; the value is its prefix byte (the first letter of its text)."""

    OPERATOR = 14 << 3  # "O"
    ACCOUNT = 0  # "A"
    USER = 20 << 3  # "U"


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial 0), as nkeys checksums its keys."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        crc &= 0xFFFF
    return crc


def _encode(body: bytes) -> str:
    raw = body + crc16(body).to_bytes(2, "little")
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _decode(text: str) -> bytes:
    """The body of an encoded key (prefix bytes and key bytes), its checksum verified.

    Raises:
        ValueError: not base32, too short, or the checksum is wrong.
    """
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("not an nkey (bad base32)") from None
    if len(raw) < 3:
        raise ValueError("not an nkey (too short)")
    body, checksum = raw[:-2], raw[-2:]
    if crc16(body) != int.from_bytes(checksum, "little"):
        raise ValueError("not an nkey (bad checksum)")
    return body


def encode_public(kind: KeyKind, raw: bytes) -> str:
    """The text of a public key of ``kind`` (32 raw bytes)."""
    return _encode(bytes([kind]) + raw)


def decode_public(text: str, kind: KeyKind) -> bytes:
    """The 32 bytes of a public key of ``kind``.

    Raises:
        ValueError: the text is not a valid public nkey of that kind.
    """
    body = _decode(text)
    if len(body) != 33 or body[0] != kind:
        raise ValueError(f"not a {kind.name.lower()} public nkey")
    return body[1:]


class NKey:
    """An Ed25519 key pair that NATS knows by its nkey text.

    Args:
        kind: what it names.
        private: the Ed25519 private key.
    """

    __slots__ = ("_private", "kind", "public_key")

    def __init__(self, kind: KeyKind, private: Ed25519PrivateKey) -> None:
        self.kind = kind
        self._private = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = encode_public(kind, raw)
        """The public key's text (``U...``, ``A...``, ``O...``)."""

    @classmethod
    def generate(cls, kind: KeyKind) -> NKey:
        """A fresh random key of ``kind``."""
        return cls(kind, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: str) -> NKey:
        """The key pair of a seed's text (``SU...``, ``SA...``, ``SO...``).

        Raises:
            ValueError: not a valid seed (the message never repeats it).
        """
        body = _decode(seed.strip())
        if len(body) != 34 or body[0] & 0xF8 != _SEED_PREFIX:
            raise ValueError("not an nkey seed")
        kind_byte = ((body[0] & 0x07) << 5) | ((body[1] & 0xF8) >> 3)
        try:
            kind = KeyKind(kind_byte)
        except ValueError:
            raise ValueError("an nkey seed of an unsupported kind") from None
        return cls(kind, Ed25519PrivateKey.from_private_bytes(body[2:]))

    @property
    def seed(self) -> str:
        """The private key's text. A secret: keep it in a 0600 file or encrypted."""
        raw = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        prefix = bytes([_SEED_PREFIX | (self.kind >> 5), (self.kind & 0x1F) << 3])
        return _encode(prefix + raw)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"NKey({self.kind.name.lower()}, {self.public_key})"


def verify(public_key: str, kind: KeyKind, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the signature of ``data`` by the key ``public_key``."""
    try:
        key = Ed25519PublicKey.from_public_bytes(decode_public(public_key, kind))
        key.verify(signature, data)
    except (ValueError, InvalidSignature):
        return False
    return True


__all__ = ["KeyKind", "NKey", "crc16", "decode_public", "encode_public", "verify"]
