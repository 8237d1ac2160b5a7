"""Ids for rows and messages: random (version 4) UUIDs as 32 lowercase hex digits.

Layer: shared (standard library only); ``knit.store``, ``knit.wire`` and the agent use it.

``uuid.uuid4().hex`` reads the kernel's random source and builds a ``UUID`` object for
every id; instances, tasks, events and messages each need one, thousands a second at scale.
:func:`new_id` draws from a generator seeded from the kernel's random source once per
process (and again in a forked child, so parent and child never share a sequence): the ids
are unique and unguessable enough for what they are, names of rows and messages. They are
not secrets and nothing authenticates with them (node keys and credentials use
``knit.secrets``).
"""

from __future__ import annotations

import os
import random

_rng = random.Random(os.urandom(32))
_bits = _rng.getrandbits
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def new_id() -> str:
    """A fresh id: a version 4 UUID in hex, like ``uuid.uuid4().hex``."""
    return f"{_bits(128) & _CLEAR | _SET:032x}"


def _reseed() -> None:
    _rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)

__all__ = ["new_id"]
