"""What an agent sends to join the cluster (``POST /join``), and its rules.

Layer: domain. Pure: imports pydantic, ``knit.trust.nkeys`` and the standard library.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from knit.trust.nkeys import KeyKind, decode_public


def _x25519(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    if len(raw) != 32:
        raise ValueError("must be a 32-byte X25519 public key (base64)")
    return value


def _user_nkey(value: str) -> str:
    decode_public(value, KeyKind.USER)  # ValueError says what is wrong
    return value


class JoinRequest(BaseModel):
    """A node asking to join, with the public halves of the keys it made for itself.

    Attributes:
        hostname: the host's name (shown until its first heartbeat says it again).
        public_key: its X25519 public key, base64: secrets are sealed to it, and the keys
            of its messages' MACs derive from it.
        nats_key: its NATS user public key (``U...``): its bus credentials name it, and
            only the holder of the private half can use them.
        node_id: an id the node asks for (None: the server picks one). It must be new to
            the cluster: an id that is or was a node's is refused (409).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hostname: Annotated[str, Field(min_length=1, max_length=255)]
    public_key: Annotated[str, AfterValidator(_x25519)]
    nats_key: Annotated[str, Field(max_length=64), AfterValidator(_user_nkey)]
    node_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] | None = None


__all__ = ["JoinRequest"]
