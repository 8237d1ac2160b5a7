"""knit.ids: version 8 UUIDs in hex, time-ordered by the second, unique, told apart by their
first 12 digits, never shared by a forked child."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from knit.ids import new_id

pytestmark = pytest.mark.unit


def test_ids_are_version_8_uuids_in_hex() -> None:
    for _ in range(1000):
        text = new_id()
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text and len(text) == 32
        assert parsed.version == 8 and parsed.variant == uuid.RFC_4122


def test_ids_begin_with_the_time_in_seconds() -> None:
    before = int(time.time())
    made = int(new_id()[:8], 16)
    after = int(time.time())
    assert before <= made <= after


def test_ids_made_in_a_later_second_sort_after(monkeypatch: pytest.MonkeyPatch) -> None:
    import knit.ids

    monkeypatch.setattr(knit.ids, "_time", lambda: 1_800_000_000.999)
    first = new_id()
    monkeypatch.setattr(knit.ids, "_time", lambda: 1_800_000_001.0)
    assert new_id() > first


def test_ids_made_together_differ_in_their_first_12_digits() -> None:
    # What tables show: the second, then the process's sequence number.
    made = [new_id() for _ in range(1000)]
    assert len({i[:12] for i in made}) == 1000


def test_ids_do_not_repeat() -> None:
    assert len({new_id() for _ in range(100_000)}) == 100_000


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids, then leave at once
        os.write(write, "".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    parent = "".join(new_id() for _ in range(4))
    assert len(child) == 128 and child != parent
