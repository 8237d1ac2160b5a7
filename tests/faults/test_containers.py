"""Container exits: ``docker kill``, ``docker stop`` and ``docker rm -f`` behind Knit's back,
and a command that keeps crashing. The agent sees the exit in Docker's events and reports it;
the deployment's ``restart_policy`` decides: ``always`` starts the same container again,
``on-failure`` only after a non-zero exit, ``never`` leaves it stopped; ``max_restarts``
bounds the restarts. A container removed from Docker is replaced by a new one.
"""

from __future__ import annotations

import time

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
from tests.support.waiting import holds_for

pytestmark = pytest.mark.e2e

FAST = {"mode": "always", "backoff": 0.2}


def instance_status(knit: FaultCluster, deployment_id: str, instance_id: str) -> str | None:
    for inst in knit.api.instances_of(deployment_id):
        if inst["instance_id"] == instance_id:
            return str(inst["status"])
    return None


def scenario_container_kill(env: FaultEnv) -> None:
    """``docker kill`` under each restart policy, ``docker stop`` under ``on-failure``."""
    with fault_cluster(env, "container-kill", agents=2) as knit:
        always = knit.create_deployment(sleeper_spec("always", 2, restart_policy=FAST))["id"]
        on_failure = knit.create_deployment(
            sleeper_spec("onfail", 2, restart_policy={"mode": "on-failure", "backoff": 0.2})
        )["id"]
        never = knit.create_deployment(sleeper_spec("never", 1, restart_policy={"mode": "never"}))[
            "id"
        ]
        _, [victim, _] = knit.wait_exact(always, 2, timeout=60)
        _, [crashed, clean] = knit.wait_exact(on_failure, 2, timeout=60)
        _, [left] = knit.wait_exact(never, 1, timeout=60)
        first_start = started_at(victim.engine, victim.id)

        killed_at = time.time()
        docker("kill", victim.id, docker_host=victim.engine)
        docker("kill", crashed.id, docker_host=crashed.engine)
        docker("stop", "-t", "5", clean.id, docker_host=clean.engine)  # exits 0 (its trap)
        docker("kill", left.id, docker_host=left.engine)
        exited = knit.wait_event(
            "instance.exited", deployment_id=always, instance_id=victim.instance_id, timeout=10
        )
        detected_at = event_time(exited)
        restarted_at, live = knit.wait_exact(always, 2, timeout=20)
        assert victim.id in {c.id for c in live}, "the same container, not a new one"
        assert started_at(victim.engine, victim.id) != first_start, "started again"

        # on-failure: the killed one (137) is started again, the cleanly stopped one is not.
        def settled() -> bool:
            return (
                instance_status(knit, on_failure, crashed.instance_id) == "running"
                and instance_status(knit, on_failure, clean.instance_id) == "stopped"
                and instance_status(knit, never, left.instance_id) == "stopped"
            )

        knit.api.wait(settled, timeout=20, what="on-failure and never settled")

        def unchanged() -> bool:
            states = {c.id: c.state for c in knit.containers(on_failure)}
            nothing = {c.id: c.state for c in knit.containers(never)}
            return states == {crashed.id: "running", clean.id: "exited"} and nothing == {
                left.id: "exited"
            }

        holds_for(unchanged, duration=2.0, what="stopped containers stay stopped, no new ones")
        for deployment_id in (always, on_failure, never):
            knit.check_events_explain(deployment_id)
        kinds = kinds_of(knit.events(deployment_id=never))
        assert "instance.exited" in kinds and "instance.restarting" not in kinds, kinds
        env.figures.record(
            "container-kill",
            detect_s=detected_at - killed_at,
            restart_s=restarted_at - detected_at,
        )


def scenario_container_crashloop(env: FaultEnv) -> None:
    """A command that always fails is restarted with backoff at most ``max_restarts`` times;
    a container removed from Docker is replaced by a new one."""
    with fault_cluster(env, "container-crashloop", agents=2) as knit:
        spec = sleeper_spec("crash", 1, restart_policy={**FAST, "max_restarts": 2})
        spec["command"] = ["sh", "-c", "sleep 0.3; exit 3"]
        crashing = knit.create_deployment(spec)["id"]
        removed = knit.create_deployment(sleeper_spec("removed", 1))["id"]
        _, [gone] = knit.wait_exact(removed, 1, timeout=60)

        def restarted_twice_and_stopped() -> bool:
            events = knit.events(deployment_id=crashing)
            kinds = kinds_of(events)
            insts = knit.api.instances_of(crashing)
            # The last exit came after the second restart: "stopped" is not the instance
            # waiting for that restart's task (no exit is reported while a task runs).
            exits = [event_time(e) for e in events if e["kind"] == "instance.exited"]
            starts = [event_time(e) for e in events if e["kind"] == "instance.restarting"]
            # Docker agrees: a report taken while the last start was under way may say
            # "exited" for a moment; the container itself must have ended.
            return (
                kinds.count("instance.restarting") == 2
                and kinds.count("instance.exited") >= 3
                and max(exits) >= max(starts)
                and len(insts) == 1
                and insts[0]["status"] == "stopped"
                and [c.state for c in knit.containers(crashing)] == ["exited"]
            )

        knit.api.wait(restarted_twice_and_stopped, timeout=30, what="two restarts, then stopped")
        [inst] = knit.api.instances_of(crashing)
        assert inst["exit_code"] == 3

        def still() -> bool:
            kinds = kinds_of(knit.events(deployment_id=crashing))
            states = [c.state for c in knit.containers(crashing)]
            ok = kinds.count("instance.restarting") == 2 and states == ["exited"]
            if not ok:
                insts = [(i["status"], i.get("restarts")) for i in knit.api.instances_of(crashing)]
                # shown on failure
                print(f"not holding: events {kinds}, containers {states}, instances {insts}")
            return ok

        holds_for(
            still,
            duration=2.0,
            what="no third restart, no new container",
        )
        restarts = sorted(
            event_time(e)
            for e in knit.events(deployment_id=crashing)
            if e["kind"] == "instance.restarting"
        )

        removed_at = time.time()
        docker("rm", "-f", gone.id, docker_host=gone.engine)
        replaced_at, [fresh] = knit.wait_exact(removed, 1, timeout=30)
        assert fresh.id != gone.id and fresh.instance_id == gone.instance_id
        # Removal kills the container first: Knit sees it exit, or vanish, and starts a new one.
        kinds = kinds_of(knit.check_events_explain(removed, removed_by_test=[gone.id]))
        assert "instance.exited" in kinds or "instance.vanished" in kinds, kinds
        env.figures.record(
            "container-crashloop",
            restarts=len(restarts),
            restart_gap_s=restarts[1] - restarts[0],
            removed_replace_s=replaced_at - removed_at,
        )


def test_docker_kill_and_stop_follow_the_restart_policy(fault_env: FaultEnv) -> None:
    scenario_container_kill(fault_env)


def test_a_crash_loop_stops_at_max_restarts_and_a_removed_container_is_replaced(
    fault_env: FaultEnv,
) -> None:
    scenario_container_crashloop(fault_env)


SCENARIOS = [scenario_container_kill, scenario_container_crashloop]
