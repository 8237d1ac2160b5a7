"""The server's own nats-server is a supervised child: killed, it is started again on the
same address with the same credentials, and the cluster carries on without anyone's help.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from tests.support.knit import SLEEPER, KnitCluster, unique_name

pytestmark = [pytest.mark.e2e]


def nats_child(knit: KnitCluster) -> int | None:
    server = knit.server.pid
    assert server is not None
    for child in psutil.Process(server).children(recursive=True):
        if child.name() == "nats-server":
            return int(child.pid)
    return None


def test_a_killed_nats_server_comes_back_and_the_cluster_carries_on(
    knit: KnitCluster, busybox_image: str
) -> None:
    first = nats_child(knit)
    assert first is not None, "the server runs no nats-server of its own"
    os.kill(first, signal.SIGKILL)
    again = knit.api.wait(
        lambda: (pid := nats_child(knit)) not in (None, first) and pid,
        timeout=15,
        what="a new nats-server started by the server",
    )
    assert psutil.Process(again).is_running()
    # (The child exists a moment before it answers and the server says so.)
    knit.api.wait(
        lambda: "embedded nats-server running again" in knit.server.log.read_text(),
        timeout=15,
        what="the server saying its nats-server runs again",
    )
    # The agent reconnected with its credentials: it takes and runs new work.
    created = knit.create_deployment(
        {"name": unique_name("after-nats"), "image": busybox_image, "command": SLEEPER}
    )
    knit.api.wait_instances(created["id"], "running", timeout=60)
    assert all(n["status"] == "healthy" for n in knit.api.nodes())
