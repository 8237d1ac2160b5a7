"""Knit's wire: the NATS subjects and the versioned JSON messages sent on them.

Layer: wire. Pure: imports pydantic, the standard library and, for the form of a node's
X25519 key, ``knit.trust.macs.decode_x25519_public``.

- ``knit.wire.subjects``: every subject and the broadcast queue group name.
- ``knit.wire.messages``: the closed set of typed messages, ``encode`` and the ``decode_*``.
- ``knit.wire.errors``: ``WireError`` (undecodable or unsupported message).
"""
