"""WireGuard keys: the base64 of 32-byte X25519 keys.

Layer: adapter helper for the mesh; imports cryptography and the standard library only. Private
keys are secrets: no function here logs a key or repeats one in an error message.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)


def decode_key(key_b64: str, what: str = "key") -> bytes:
    """Return the 32 bytes of a base64 WireGuard key.

    Args:
        key_b64: the key, base64.
        what: how to name the key in the error (the error never repeats the key itself).

    Raises:
        ValueError: ``key_b64`` is not the base64 of 32 bytes.
    """
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{what} is not the base64 of 32 bytes")
    return raw


def generate_private_key() -> str:
    """Return a new WireGuard private key: the base64 of a random X25519 private key."""
    key = X25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


def public_key(private_b64: str) -> str:
    """Return the base64 WireGuard public key of a base64 private key.

    Raises:
        ValueError: ``private_b64`` is not the base64 of 32 bytes.
    """
    key = X25519PrivateKey.from_private_bytes(decode_key(private_b64, "private key"))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
