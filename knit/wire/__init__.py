"""Knit's wire: the NATS subjects and the versioned JSON messages sent on them.

Layer: wire. Pure: imports pydantic and the standard library only.

- ``knit.wire.subjects``: every subject and the broadcast queue group name.
- ``knit.wire.messages``: the closed set of typed messages, ``encode`` and the ``decode_*``.
- ``knit.wire.errors``: ``WireError`` (undecodable or unsupported message).
"""
