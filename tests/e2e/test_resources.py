"""Resources on a real Docker Engine: the container gets the deployment's limits, one that
goes over its memory limit is killed by the kernel and its restart policy applies, and the
node's reservation holds across a server restart (rebuilt from the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.knit import cluster_for, unique_name
from tests.support.knit_docker import container_ids, inspect_container

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"
MiB = 2**20
# Holds 64 MiB in a shell variable: well over a 16 MiB limit.
MEMORY_HOG = ["sh", "-c", 'x=$(head -c 64m /dev/zero | tr "\\0" a); sleep 100']


def test_a_container_over_its_memory_limit_is_killed_and_its_restart_policy_applies(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[{}]) as knit:
        [agent] = knit.agents
        created = knit.create_deployment(
            {
                "name": unique_name("hog"),
                "image": BUSYBOX,
                "command": MEMORY_HOG,
                "resources": {"cpu": 0.5, "memory": "16MiB"},
                "restart_policy": {"mode": "on-failure", "backoff": 0.2, "max_restarts": 1},
            }
        )
        deployment_id = created["id"]
        assert created["resources"] == {"cpu": 0.5, "memory": 16 * MiB}

        def kinds() -> list[str]:
            events = knit.api.listing(f"/events?deployment_id={deployment_id}&limit=1000")
            return [str(e["kind"]) for e in events]

        def restarted_once_then_stopped() -> list[dict[str, Any]] | None:
            insts = knit.api.instances_of(deployment_id)
            seen = kinds()
            done = (
                seen.count("instance.restarting") == 1
                and seen.count("instance.exited") == 2
                and len(insts) == 1
                and insts[0]["status"] == "stopped"
            )
            return insts if done else None

        [inst] = knit.api.wait(
            restarted_once_then_stopped,
            timeout=60,
            what="killed, restarted once (max_restarts 1), killed again and stopped",
            describe=lambda: f"{knit.api.describe_instances(deployment_id)} {kinds()}",
        )
        assert inst["exit_code"] == 137  # SIGKILL, from the kernel's OOM killer
        [container_id] = container_ids(knit.docker_host, {"knit.deployment": deployment_id})
        container = inspect_container(knit.docker_host, container_id)
        host = container["HostConfig"]
        assert host["Memory"] == host["MemorySwap"] == 16 * MiB
        assert host["NanoCpus"] == 500_000_000
        assert container["State"]["OOMKilled"] is True

        # The stopped instance keeps its room (its container can be started again), also
        # after a server restart, which rebuilds reservations from the store.
        node = knit.api.ok(knit.api.get(f"/nodes/{agent.node_id}"))
        assert (node["reserved_cpus"], node["reserved_memory_bytes"]) == (0.5, 16 * MiB)
        assert node["free_memory_bytes"] == node["memory_bytes"] - 16 * MiB
        knit.server.stop()
        knit.server.start_and_wait()
        node = knit.api.ok(knit.api.get(f"/nodes/{agent.node_id}"))
        assert (node["reserved_cpus"], node["reserved_memory_bytes"]) == (0.5, 16 * MiB)

        knit.api.ok(knit.api.delete(f"/deployments/{deployment_id}"))
        knit.api.wait_gone(deployment_id)

        def released() -> bool | None:
            node = knit.api.ok(knit.api.get(f"/nodes/{agent.node_id}"))
            return node["reserved_memory_bytes"] == 0 or None

        knit.api.wait(released, timeout=30, what="the reservation released")
