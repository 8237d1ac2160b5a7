"""knit.wire.logs and the log subjects: what goes to a node and comes back, and what a
node's bus credentials let it do with them."""

from __future__ import annotations

import pytest

from knit.trust.natsjwt import node_permissions
from knit.wire import subjects
from knit.wire.errors import WireError
from knit.wire.logs import (
    MAX_LINES,
    LogChunk,
    LogClose,
    LogCredit,
    LogEnd,
    LogOpen,
    decode_from_node,
    decode_to_node,
)
from knit.wire.messages import encode

pytestmark = pytest.mark.unit

INSTANCE = "0193a4b2c3d47e5f8a9b0c1d2e3f4a5c"


def test_messages_round_trip() -> None:
    to_node = [
        LogOpen(stream_id="s1", node_id="n1", instance_id=INSTANCE, follow=True, credit=8),
        LogCredit(stream_id="s1", credit=4),
        LogClose(stream_id="s1"),
    ]
    for message in to_node:
        assert decode_to_node(encode(message)) == message
    from_node = [LogChunk(stream_id="s1", seq=0, lines=["a", "b"]), LogEnd(stream_id="s1")]
    for answer in from_node:
        assert decode_from_node(encode(answer)) == answer


def test_a_chunk_past_its_limits_or_a_forged_instance_is_refused() -> None:
    too_many = encode(LogChunk(stream_id="s1", seq=0, lines=[])).replace(
        b'"lines":[]', b'"lines":[' + b",".join([b'"x"'] * (MAX_LINES + 1)) + b"]"
    )
    with pytest.raises(WireError):
        decode_from_node(too_many)
    opening = encode(LogOpen(stream_id="s1", node_id="n1", instance_id=INSTANCE, credit=1))
    with pytest.raises(WireError):
        decode_to_node(opening.replace(INSTANCE.encode(), b"../../etc"))


def test_log_subjects_are_per_node() -> None:
    assert subjects.logs_to("n1") == "knit.logs.to.n1"
    assert subjects.logs_from("n1") == "knit.logs.from.n1"
    with pytest.raises(ValueError):
        subjects.logs_from("n1.>")


def test_a_node_may_send_only_its_own_logs_and_hear_only_its_own_requests() -> None:
    permissions = node_permissions("n1")
    assert subjects.logs_from("n1") in permissions["pub"]["allow"]
    assert subjects.logs_to("n1") in permissions["sub"]["allow"]
    everything = permissions["pub"]["allow"] + permissions["sub"]["allow"]
    assert not [s for s in everything if "logs" in s and not s.endswith(".n1")]
