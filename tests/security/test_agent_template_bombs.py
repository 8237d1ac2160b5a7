"""Template bombs fail their instance with a clear error; the node stays healthy throughout.

Before, templates rendered on the agent's event loop: ``{{ ((2**4096)**4096)**4096 }}`` or
nested ``range(100000)`` loops froze the agent for minutes, its node went unhealthy and the
instance moved on to freeze the next node. A real server, nats-server and agent, the
templates submitted through the API like any user's.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.security.agent_support import BUSYBOX, heartbeat_gaps, sleeper, still_running
from tests.support.knit import SLEEPER, KnitCluster, unique_name
from tests.support.knit_processes import HEARTBEAT_INTERVAL
from tests.support.knit_wire import SubjectRecorder

pytestmark = pytest.mark.e2e

BOMBS = {
    "nested-loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "longer than",
    ),
    "silent-loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "stopped after 2 s",
    ),
    "power-tower": ("{{ ((2**4096)**4096)**4096 }}", "stopped"),
    "repetition": ("{{ 'x' * 10**9 }}", "too large"),
    "padding": ("{{ 'x'|center(10**9) }}", "MiB of memory"),
    "huge-output": (
        "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
        "longer than",
    ),
}


def test_template_bombs_fail_alone_and_the_node_stays_healthy(knit: KnitCluster) -> None:
    agent = knit.agents[0]
    assert agent.node_id is not None
    _, bystander = sleeper(knit)
    unhealthy: list[str] = []

    def node_healthy() -> None:
        for node in knit.api.nodes():
            if node["id"] == agent.node_id and node["status"] != "healthy":
                unhealthy.append(node["status"])

    with SubjectRecorder(knit.nats_url, "knit.agent.heartbeat") as beats:
        began = time.monotonic()
        created = {
            name: knit.create_deployment(
                {
                    "name": unique_name(name),
                    "image": BUSYBOX,
                    "command": SLEEPER,
                    "templates": [{"content": bomb, "destination": "/etc/bomb.conf"}],
                }
            )
            for name, (bomb, _) in BOMBS.items()
        }
        errors: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while len(errors) < len(created) and time.monotonic() < deadline:
            node_healthy()
            for name, deployment in created.items():
                try:
                    [instance] = knit.api.instances_of(deployment["id"])
                except (httpx.HTTPError, ValueError):
                    continue
                if instance.get("status") == "error" and name not in errors:
                    errors[name] = str(instance.get("error"))
            time.sleep(0.2)
        took = time.monotonic() - began
        messages = beats.json_messages()

    assert sorted(errors) == sorted(BOMBS), f"not failed after {took:.0f} s: {errors}"
    for name, (_, words) in BOMBS.items():
        reason = errors[name]
        assert reason.startswith("templates: /etc/bomb.conf: "), reason
        assert words in reason, (name, reason)
    assert unhealthy == []
    gaps = heartbeat_gaps(messages, agent.node_id)
    assert gaps and max(gaps) < 3 * HEARTBEAT_INTERVAL, f"heartbeats stalled: {max(gaps):.2f} s"
    still_running(knit.docker_host, [bystander])
    assert "Traceback" not in agent.log.read_text()
