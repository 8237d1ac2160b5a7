"""Fixtures of the multi-host suite: a LAN of three hosts per module.

Each host is a network namespace with its own address on a shared switch and its own
``dockerd`` holding the busybox test image (``tests.support.hosts``). Everything the LAN made
is removed when the module ends, and the fixture then checks that nothing of it is left. What
test runs killed by SIGKILL left behind is removed first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import require
from tests.support.hosts import Lan, lan_problem, open_lan, sweep_abandoned_lans, traces_of


@pytest.fixture(scope="module")
def image_source(docker_host: str, busybox_image: str) -> str:
    """The Engine the hosts' images are copied from (the machine's), once this machine is
    known to be able to build a LAN of hosts; LANs that killed test runs left are removed."""
    problem = lan_problem()
    require(problem is None, f"no LAN of hosts here: {problem}")
    sweep_abandoned_lans()
    return docker_host


@pytest.fixture(scope="module")
def lan(image_source: str) -> Iterator[Lan]:
    """Three started hosts (``lan.hosts``: host1..host3, addresses .11 to .13 of the LAN),
    each with the busybox image copied from the machine's Engine."""
    started = time.monotonic()
    with open_lan(3, source=image_source) as made:
        print(f"\n{made!r} up in {time.monotonic() - started:.2f} s")
        yield made
    left = traces_of(made.tag)
    assert not left, f"the LAN left these behind: {left}"
