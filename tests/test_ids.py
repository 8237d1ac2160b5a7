"""knit.ids: version 7 UUIDs in hex, time-ordered, unique, never shared by a forked child."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from knit.ids import new_id

pytestmark = pytest.mark.unit


def test_ids_are_version_7_uuids_in_hex() -> None:
    for _ in range(1000):
        text = new_id()
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text and len(text) == 32
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_ids_begin_with_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    made = int(new_id()[:12], 16)
    after = time.time_ns() // 1_000_000
    assert before <= made <= after


def test_ids_made_later_sort_after() -> None:
    first = new_id()
    time.sleep(0.002)
    assert new_id() > first


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
