"""What servers of one database tell each other (``knit.servers.notices``).

A server that changed desired state in the database (a deployment created, updated or
deleted, a node drained, joined or removed, API tokens, registry credentials or networks)
tells the others with a ``ServerNotice``: the leader applies it to its actors at once and
answers, the others forget what they keep in memory of it. A notice carries ids only:
every receiver reads what changed from the database, the truth (decision 0024). Agents may
not publish on the subject (their bus permissions name their own subjects only).

Layer: wire. Pure: pydantic and ``knit.wire.messages``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from knit.wire.messages import Struct, WireMessage, _decode


class NoticeKind(StrEnum):
    """What changed."""

    DEPLOYMENT_CREATED = "deployment_created"
    DEPLOYMENT_UPDATED = "deployment_updated"
    DEPLOYMENT_DELETED = "deployment_deleted"
    NODE_ELIGIBLE = "node_eligible"
    NODE_JOINED = "node_joined"
    NODE_REMOVED = "node_removed"
    TOKENS = "tokens"
    REFERENCES = "references"


class ServerNotice(WireMessage):
    """A change stored by the server ``origin``.

    Attributes:
        kind: what changed.
        target: the id of the deployment or node it concerns (None for tokens and
            references).
        eligible: for ``node_eligible``: drained (False) or not.
        origin: the id of the server that stored it (it ignores its own notices).
    """

    type: Literal["server_notice"] = "server_notice"
    kind: NoticeKind
    target: Annotated[str, Field(max_length=64)] | None = None
    eligible: bool | None = None
    origin: Annotated[str, Field(min_length=1, max_length=64)]


class NoticeReply(Struct):
    """The leader's answer: it applied the notice; ``rollout`` is a deployment's rollout
    after an update (None: none started, or not known)."""

    applied: bool = True
    rollout: dict[str, Any] | None = None


_NOTICE = TypeAdapter(ServerNotice)
_REPLY = TypeAdapter(NoticeReply)


def decode_notice(payload: bytes | str) -> ServerNotice:
    """Decode a ``knit.servers.notices`` or ``knit.servers.leader`` message.

    Raises:
        UnsupportedVersion: the message is from a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_NOTICE, payload, "server notice")


def decode_reply(payload: bytes | str) -> NoticeReply:
    """Decode the leader's reply to a notice.

    Raises:
        WireError: not a reply.
    """
    return _decode(_REPLY, payload, "notice reply")


__all__ = ["NoticeKind", "NoticeReply", "ServerNotice", "decode_notice", "decode_reply"]
