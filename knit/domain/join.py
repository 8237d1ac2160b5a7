"""What an agent sends to join the cluster (``POST /join``), what a tool asks of the bus
(``POST /bus-credentials``), and their rules.

Layer: domain. Pure: imports pydantic, ``knit.trust``, ``knit.domain.mesh`` and the standard
library.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from knit.domain.mesh import MeshJoin
from knit.trust.macs import decode_x25519_public
from knit.trust.nkeys import KeyKind, decode_public


def _x25519(value: str) -> str:
    decode_x25519_public(value)  # ValueError says what is wrong
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
        mesh: the node's WireGuard public key and endpoint, to be a member of the mesh
            (None: it is not; a server without a mesh refuses it with 409).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hostname: Annotated[str, Field(min_length=1, max_length=255)]
    public_key: Annotated[str, AfterValidator(_x25519)]
    nats_key: Annotated[str, Field(max_length=64), AfterValidator(_user_nkey)]
    node_id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] | None = None
    mesh: MeshJoin | None = None


_TOKEN = r"(?:[A-Za-z0-9_-]+|\*)"
_SUBJECT = re.compile(rf"^(?:knit|_INBOX)(?:\.{_TOKEN})*(?:\.>)?$")
_QUEUE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_BUS_TTL = 86_400.0
"""The longest a bus credential lives (a day): it cannot be revoked, only outlived."""


def _subject(value: str) -> str:
    subject, _, queue = value.partition(" ")
    if len(value) > 255 or not _SUBJECT.match(subject) or (queue and not _QUEUE.match(queue)):
        raise ValueError(
            f"{value!r} is not a subject of Knit's bus (knit.… or _INBOX.…, tokens of "
            "[A-Za-z0-9_-], * or a final >), optionally followed by a queue group"
        )
    return value


Subjects = Annotated[list[Annotated[str, AfterValidator(_subject)]], Field(max_length=64)]


class BusCredentialSpec(BaseModel):
    """``POST /bus-credentials``: NATS credentials for a tool on Knit's embedded bus (a
    monitor, a debugging client, the simulation harness's processes that play many nodes).

    They allow what they list and nothing else, and expire (they cannot be revoked: keep
    ``ttl`` short). Messages on the bus still prove their sender: a tool allowed to publish
    heartbeats cannot speak for a node without that node's keys.

    Attributes:
        name: shown in nats-server's logs.
        nats_key: the tool's NATS user public key (``U...``); its private half stays with it.
        publish: subjects it may publish on.
        subscribe: subjects it may subscribe to (``SUBJECT QUEUE`` for a queue group only).
        ttl: seconds until the credentials expire (at most a day).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    nats_key: Annotated[str, Field(max_length=64), AfterValidator(_user_nkey)]
    publish: Subjects = Field(default_factory=list)
    subscribe: Subjects = Field(default_factory=list)
    ttl: Annotated[float, Field(gt=0, le=MAX_BUS_TTL)] = 3600.0


__all__ = ["MAX_BUS_TTL", "BusCredentialSpec", "JoinRequest"]
