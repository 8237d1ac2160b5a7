"""The messages of log streams: the server asks a node for an instance's logs and grants it
credit (``knit.logs.to.{node_id}``); the node sends chunks of lines and an end
(``knit.logs.from.{node_id}``). See docs/decisions/0020-log-streams.md.

Each stream has an id the server makes (``stream_id``). The server grants credit in
chunks: the node sends a :class:`LogChunk` only while it holds credit, so what the server
holds for a stream never exceeds what it granted (a slow reader slows the container's log
reader on the node instead of filling memory). Both sides send something at least every
:data:`KEEPALIVE` seconds (a chunk without lines, a credit of 0); a side that hears nothing
from the other for :data:`SILENCE` seconds ends the stream.

Server → node messages carry the server's MAC under the node's ``down`` key, node → server
ones the node's (knit.trust.macs), as tasks and statuses do.

Layer: wire. Pure: pydantic and ``knit.wire.messages``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, TypeAdapter

from knit.wire.messages import KnitId, NodeId, Seconds, WireMessage, _decode

KEEPALIVE: Final = 5.0
"""Seconds of silence after which a side of a stream sends something anyway."""
SILENCE: Final = 20.0
"""Seconds without a word from the other side after which a stream is given up."""
MAX_LINES: Final = 512
"""Most lines in one chunk."""
MAX_LINE: Final = 16_384
"""Longest line (characters) sent; a longer one is cut."""

StreamId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Credit = Annotated[int, Field(ge=0, le=1024)]


class LogOpen(WireMessage):
    """Open a stream of one instance's container logs.

    Attributes:
        stream_id: the server's id for this stream.
        node_id: the node that must answer (a node refuses a request for another).
        instance_id: whose container (the node finds it by its instance label).
        follow: keep sending new lines until the container stops.
        tail: how many of the last lines first (None: all).
        since: only lines from this time on (seconds since the epoch; None: all).
        timestamps: prefix each line with Docker's RFC 3339 timestamp.
        credit: chunks the node may send before it waits for more.
        expires_at: the server's clock after which the request must not be started.
    """

    kind: Literal["log_open"] = "log_open"
    stream_id: StreamId
    node_id: NodeId
    instance_id: KnitId
    follow: bool = False
    tail: Annotated[int, Field(ge=0)] | None = 100
    since: Seconds | None = None
    timestamps: bool = False
    credit: Credit
    expires_at: Seconds | None = None


class LogCredit(WireMessage):
    """More credit for a stream (0: only to say the server is still there)."""

    kind: Literal["log_credit"] = "log_credit"
    stream_id: StreamId
    credit: Credit


class LogClose(WireMessage):
    """The server wants no more of a stream (its client left)."""

    kind: Literal["log_close"] = "log_close"
    stream_id: StreamId


class LogChunk(WireMessage):
    """Lines of a stream, in order (``seq`` counts chunks from 0; a chunk without lines is
    a keepalive and has no ``seq`` of its own: it repeats the next one)."""

    kind: Literal["log_chunk"] = "log_chunk"
    stream_id: StreamId
    seq: Annotated[int, Field(ge=0)]
    lines: Annotated[list[str], Field(max_length=MAX_LINES)]


class LogEnd(WireMessage):
    """The stream is over: the container stopped or its logs were all sent (``error``
    None), or it failed (``error`` says why: no such container here, the runtime failed,
    the server went silent)."""

    kind: Literal["log_end"] = "log_end"
    stream_id: StreamId
    error: Annotated[str, Field(max_length=1000)] | None = None


ToNode = Annotated[LogOpen | LogCredit | LogClose, Field(discriminator="kind")]
FromNode = Annotated[LogChunk | LogEnd, Field(discriminator="kind")]

_TO_NODE: TypeAdapter[LogOpen | LogCredit | LogClose] = TypeAdapter(ToNode)
_FROM_NODE: TypeAdapter[LogChunk | LogEnd] = TypeAdapter(FromNode)


def decode_to_node(payload: bytes | str) -> LogOpen | LogCredit | LogClose:
    """Decode a message of ``knit.logs.to.{node_id}`` (its proof already taken off).

    Raises:
        UnsupportedVersion: a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_TO_NODE, payload, "log request")


def decode_from_node(payload: bytes | str) -> LogChunk | LogEnd:
    """Decode a message of ``knit.logs.from.{node_id}`` (its proof already taken off).

    Raises:
        UnsupportedVersion: a newer schema version.
        WireError: anything else wrong.
    """
    return _decode(_FROM_NODE, payload, "log chunk")


__all__ = [
    "KEEPALIVE",
    "MAX_LINE",
    "MAX_LINES",
    "SILENCE",
    "LogChunk",
    "LogClose",
    "LogCredit",
    "LogEnd",
    "LogOpen",
    "decode_from_node",
    "decode_to_node",
]
