"""Ids for rows and messages: 32 lowercase hex digits, time-ordered to the second.

Layer: shared (standard library only); ``knit.store``, ``knit.wire`` and the agent use it.

An id is a version 8 (custom) UUID, RFC 9562's variant: 32 bits of Unix time in seconds, a
16-bit sequence number, the version, then 74 random bits. Its first 12 hex digits, what
tables show (``docker ps`` style), are the second it was made and the sequence: the process
counts its ids (from a random start), so ids one process makes in the same second differ
there unless it made 65,536 of them that second (the CLI then shows more digits;
``knit.commands.output.short_ids``). They were version 7 UUIDs (milliseconds first), whose
12 first digits were the millisecond alone, shared by every instance of a deployment
(docs/decisions/0021).

Ids made close in time sort close together (in the order made, within a second too, but
for the sequence wrapping around), so a table's primary-key index grows at its end instead
of at random places: at 100,000 instances
(and their tasks and events) random version 4 ids made every insert touch a different
index page, and SQLite spent most of its time copying pages to and from the kernel
(docs/decisions/0009).

:func:`new_id` draws the random bits, and the sequence's start, from a generator seeded from
the kernel's random source once per process (and again in a forked child, so parent and child
never share a sequence):
``uuid.uuid4()`` reads the kernel and builds a ``UUID`` object per id, and instances, tasks,
events and messages each need one, thousands a second at scale. The ids are unique and
unguessable enough for what they are, names of rows and messages; they tell when they were
made. They are not secrets and nothing authenticates with them (node keys and credentials
use ``knit.secrets``).

:func:`is_id` checks the format (32 lowercase hex digits) without the version: rows made
earlier hold version 4 or 7 UUIDs in the same spelling. The agent refuses a task whose ids
are not in this format (they name folders and Docker labels; see docs/security.md).
"""

from __future__ import annotations

import itertools
import os
import random
import re
import time

_rng = random.Random(os.urandom(32))
_bits = _rng.getrandbits
_time = time.time
_sequence = itertools.count(_rng.getrandbits(16))  # (``next`` on it is atomic in CPython)
# Below the 32 bits of seconds and the 16 of the sequence: version (4 bits), 12 random,
# variant (2), 62 random.
_SET = (0x8 << 76) | (0b10 << 62)  # version 8, RFC 9562 variant
_RANDOM = (1 << 76) - 1 & ~(0b11 << 62)  # the 74 random bits' places


def new_id() -> str:
    """A fresh id: a version 8 UUID in hex (``uuid.UUID(hex=...)`` parses it)."""
    # ``to_bytes().hex()`` is 2-3x faster than formatting the number as hex.
    head = (int(_time()) & 0xFFFF_FFFF) << 16 | next(_sequence) & 0xFFFF
    value = head << 80 | _SET | _bits(76) & _RANDOM
    return value.to_bytes(16, "big").hex()


ID_PATTERN = r"^[0-9a-f]{32}$"
"""The spelling of every id Knit makes: 32 lowercase hex digits (no dashes)."""
_ID_RE = re.compile(ID_PATTERN)


def is_id(text: str) -> bool:
    """Whether ``text`` is spelt as Knit's ids are (32 lowercase hex digits)."""
    return _ID_RE.fullmatch(text) is not None


def _reseed() -> None:
    global _sequence
    _rng.seed(os.urandom(32))
    _sequence = itertools.count(_rng.getrandbits(16))


os.register_at_fork(after_in_child=_reseed)

__all__ = ["ID_PATTERN", "is_id", "new_id"]
