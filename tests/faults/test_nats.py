"""NATS lost and back: the nats-server stopped for longer than the node TTL, then started
again on the same port.

Nobody is to blame but NATS: no node is declared unhealthy, nothing is replaced. The server
and the agents reconnect by themselves (with backoff: they burn no CPU meanwhile), and what
was missed in between is covered: a deployment accepted during the outage is placed, and a
container killed during the outage is started again, within 10 s of NATS being back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from tests.support.docker import docker
from tests.support.knit_faults import (
    FaultCluster,
    FaultEnv,
    event_time,
    fault_cluster,
    kinds_of,
    sleeper_spec,
    started_at,
)
from tests.support.knit_processes import KnitProcess

pytestmark = pytest.mark.e2e

REPLICAS = 3
OUTAGE = 5.0
"""Seconds NATS stays down: longer than the node TTL (3 s)."""
RECOVERY_GOAL = 10.0


def cpu_seconds(process: KnitProcess) -> float:
    """User + system CPU time the process has used so far (from /proc)."""
    assert process.pid is not None
    with open(f"/proc/{process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nodes_heard_since(knit: FaultCluster, since: float) -> bool:
    """Whether every node is healthy with a heartbeat received after ``since``."""
    nodes = knit.api.nodes()
    return all(
        n["status"] == "healthy" and event_time({"at": n["last_heartbeat"]}) > since for n in nodes
    )


def scenario_nats_restart(env: FaultEnv) -> None:
    """Stop nats-server for longer than the TTL; meanwhile accept a deployment and kill a
    container; start nats-server again and time the recovery."""
    with fault_cluster(env, "nats-restart", agents=2) as knit:
        kept = knit.create_deployment(
            sleeper_spec("kept", REPLICAS, restart_policy={"mode": "always", "backoff": 0.2})
        )["id"]
        _, before = knit.wait_exact(kept, REPLICAS, timeout=60)
        ids = sorted(c.id for c in before)
        victim = before[0]
        first_start = started_at(victim.engine, victim.id)
        processes = [knit.server, *knit.agents]
        cpu_before = [cpu_seconds(p) for p in processes]

        down_at = time.time()
        knit.nats.stop()
        time.sleep(1.0)
        late = knit.create_deployment(sleeper_spec("late", 2))["id"]  # accepted, not sent
        docker("kill", victim.id, docker_host=victim.engine)
        time.sleep(max(0.0, down_at + OUTAGE - time.time()))
        cpu_used = [cpu_seconds(p) - c for p, c in zip(processes, cpu_before, strict=True)]
        knit.nats.start()
        up_at = time.time()

        def ok(check: Callable[[], object]) -> bool:
            try:
                check()
            except AssertionError:
                return False
            return True

        # When each part was back: the nodes heard, the killed container running again, the
        # deployment accepted during the outage running.
        parts: dict[str, Callable[[], bool]] = {
            "heard": lambda: nodes_heard_since(knit, up_at),
            "restarted": lambda: ok(lambda: knit.check_exact(kept, REPLICAS)),
            "placed": lambda: ok(lambda: knit.check_exact(late, 2)),
        }
        back: dict[str, float] = {}

        def recovered() -> bool:
            for name, check in parts.items():
                if name not in back and check():
                    back[name] = time.time()
            return len(back) == len(parts)

        knit.api.wait(
            recovered,
            timeout=RECOVERY_GOAL * 3,
            what="everything converged after NATS came back",
            describe=lambda: f"{back}\n{knit.describe(kept)}\n{knit.describe(late)}",
        )
        recovered_at = time.time()
        _, after = knit.wait_exact(kept, REPLICAS, timeout=5, steady=1.5)
        assert sorted(c.id for c in after) == ids, "nothing replaced"
        assert started_at(victim.engine, victim.id) != first_start, "the killed one restarted"
        all_events = knit.events()
        assert "node.unhealthy" not in kinds_of(all_events), "no node is to blame"
        kinds = kinds_of(knit.check_events_explain(kept))
        assert not {"instance.lost", "instance.unknown"} & set(kinds), kinds
        knit.check_events_explain(late)
        # Reconnecting waits between attempts: no process spun while NATS was away.
        for process, used in zip(processes, cpu_used, strict=True):
            assert used < OUTAGE * 0.5, f"{process.name} used {used:.2f} s of CPU in the outage"
        env.figures.record(
            "nats-restart",
            outage_s=up_at - down_at,
            recover_s=recovered_at - up_at,
            heard_s=back["heard"] - up_at,
            restarted_s=back["restarted"] - up_at,
            placed_s=back["placed"] - up_at,
            max_outage_cpu_s=max(cpu_used),
        )


def test_nats_down_and_back_recovers_without_blaming_nodes(fault_env: FaultEnv) -> None:
    scenario_nats_restart(fault_env)


SCENARIOS = [scenario_nats_restart]
