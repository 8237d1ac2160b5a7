"""Ids for rows and messages: time-ordered (version 7) UUIDs as 32 lowercase hex digits.

Layer: shared (standard library only); ``knit.store``, ``knit.wire`` and the agent use it.

A version 7 UUID (RFC 9562) starts with the Unix time in milliseconds, then 74 random bits.
Ids made close in time sort close together, so a table's primary-key index grows at its end
instead of at random places: at 100,000 instances (and their tasks and events) random
version 4 ids made every insert touch a different index page, and SQLite spent most of
its time copying pages to and from the kernel (the store's placement benchmark: ~10,000
writes/s with random ids, ~38,000 with time-ordered ones; docs/decisions/0009).

:func:`new_id` draws the random bits from a generator seeded from the kernel's random source
once per process (and again in a forked child, so parent and child never share a sequence):
``uuid.uuid4()`` reads the kernel and builds a ``UUID`` object per id, and instances, tasks,
events and messages each need one, thousands a second at scale. The ids are unique and
unguessable enough for what they are, names of rows and messages; they tell when they were
made. They are not secrets and nothing authenticates with them (node keys and credentials
use ``knit.secrets``).

:func:`is_id` checks the format (32 lowercase hex digits) without the version: rows made before
ids were time-ordered hold version 4 UUIDs in the same spelling. The agent refuses a task whose
ids are not in this format (they name folders and Docker labels; see docs/security.md).
"""

from __future__ import annotations

import os
import random
import re
import time

_rng = random.Random(os.urandom(32))
_bits = _rng.getrandbits
_time_ns = time.time_ns
# Below the 48 bits of milliseconds: version (4 bits), rand_a (12), variant (2), rand_b (62).
_CLEAR = ~((0xF << 76) | (0b11 << 62))
_SET = (0x7 << 76) | (0b10 << 62)  # version 7, RFC 9562 variant


def new_id() -> str:
    """A fresh id: a version 7 UUID in hex (``uuid.UUID(hex=...)`` parses it)."""
    # ``to_bytes().hex()`` is 2-3x faster than formatting the number as hex.
    value = (_time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF) << 80 | _bits(80)
    return (value & _CLEAR | _SET).to_bytes(16, "big").hex()


ID_PATTERN = r"^[0-9a-f]{32}$"
"""The spelling of every id Knit makes: 32 lowercase hex digits (no dashes)."""
_ID_RE = re.compile(ID_PATTERN)


def is_id(text: str) -> bool:
    """Whether ``text`` is spelt as Knit's ids are (32 lowercase hex digits)."""
    return _ID_RE.fullmatch(text) is not None


def _reseed() -> None:
    _rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)

__all__ = ["ID_PATTERN", "is_id", "new_id"]
