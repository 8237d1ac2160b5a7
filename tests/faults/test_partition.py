"""Partitions: an agent cut off, for less and for more than the deployment's ``lost_after``:
frozen with SIGSTOP (silent and deaf, its containers still running), or running on with its
link to NATS cut (a relay that resets its connections and refuses new ones).

Shorter: the node is unhealthy after the TTL, its instances ``unknown`` and not replaced; when
it is back they are ``running`` again, the very same containers. Longer: once ``lost_after``
has passed they are ``lost`` and replaced; when the agent is back, the originals stay and the
replacements are stopped.
"""

from __future__ import annotations

import time

import pytest

from tests.support.docker import docker
from tests.support.knit_faults import (
    CuttableLink,
    FaultEnv,
    event_time,
    fault_cluster,
    kinds_of,
    sleeper_spec,
)
from tests.support.knit_processes import NODE_TTL
from tests.support.waiting import holds_for

pytestmark = pytest.mark.e2e

REPLICAS = 4
LOST_AFTER = 4.0


def scenario_partition_short(env: FaultEnv) -> None:
    """Cut off for less than ``lost_after``: unknown, nothing replaced, the same containers."""
    with fault_cluster(env, "partition-short", agents=2) as knit:
        created = knit.create_deployment(sleeper_spec("short", REPLICAS, lost_after=LOST_AFTER))
        deployment_id = created["id"]
        _, before = knit.wait_exact(deployment_id, REPLICAS, timeout=60)
        victim = before[0].node_id
        on_victim = {c.instance_id for c in before if c.node_id == victim}
        agent = knit.agent_of(victim)

        frozen_at = knit.sigstop(agent)
        unhealthy = knit.wait_event(
            "node.unhealthy", node_id=victim, after=frozen_at, timeout=NODE_TTL + 10
        )
        detected_at = event_time(unhealthy)

        def unknown() -> bool:
            statuses = {i["instance_id"]: i["status"] for i in knit.api.instances_of(deployment_id)}
            return all(statuses.get(i) == "unknown" for i in on_victim)

        knit.api.wait(unknown, timeout=5, what="the cut-off node's instances unknown")
        # Not replaced while the node may come back: nothing new in Docker, no other
        # instance, until just before lost_after ends.
        ids = sorted(c.id for c in before)
        remaining = detected_at + LOST_AFTER - 1.0 - time.time()
        holds_for(
            lambda: (
                sorted(c.id for c in knit.containers(deployment_id)) == ids
                and len(knit.api.instances_of(deployment_id)) == REPLICAS
            ),
            duration=max(0.0, remaining),
            what="no replacement while the node is only unknown",
        )
        thawed_at = knit.sigcont(agent)
        back_at, after = knit.wait_exact(deployment_id, REPLICAS, timeout=15, steady=1.5)
        assert sorted(c.id for c in after) == ids, "the very same containers"
        kinds = kinds_of(knit.check_events_explain(deployment_id))
        assert kinds.count("instance.unknown") == len(on_victim), kinds
        assert "instance.lost" not in kinds and "instance.placed" in kinds, kinds
        assert kinds.count("instance.placed") == REPLICAS, "no placement after the first"
        assert "node.healthy" in kinds_of(knit.events(node_id=victim))
        env.figures.record(
            "partition-short",
            detect_s=detected_at - frozen_at,
            cut_s=thawed_at - frozen_at,
            back_s=back_at - thawed_at,
        )


def scenario_partition_long(env: FaultEnv) -> None:
    """Cut off for longer than ``lost_after``: lost, replaced; the originals win when back."""
    with fault_cluster(env, "partition-long", agents=2) as knit:
        created = knit.create_deployment(sleeper_spec("long", REPLICAS, lost_after=LOST_AFTER))
        deployment_id = created["id"]
        _, before = knit.wait_exact(deployment_id, REPLICAS, timeout=60)
        victim = before[0].node_id
        originals = {c.id for c in before if c.node_id == victim}
        agent = knit.agent_of(victim)

        frozen_at = knit.sigstop(agent)
        unhealthy = knit.wait_event(
            "node.unhealthy", node_id=victim, after=frozen_at, timeout=NODE_TTL + 10
        )
        detected_at = event_time(unhealthy)
        lost = knit.wait_event(
            "instance.lost", deployment_id=deployment_id, after=frozen_at, timeout=LOST_AFTER + 5
        )
        lost_at = event_time(lost)
        assert lost_at - detected_at >= LOST_AFTER - 0.1, "lost before lost_after"
        replaced_at, live = knit.wait_exact(
            deployment_id, REPLICAS, stale_nodes=[victim], timeout=30, steady=1.0
        )
        assert not {c.id for c in live} & originals

        thawed_at = knit.sigcont(agent)
        settled_at, final = knit.wait_exact(deployment_id, REPLICAS, timeout=30, steady=2.0)
        assert originals <= {c.id for c in final}, "the originals must be kept"
        kinds = kinds_of(knit.check_events_explain(deployment_id))
        for kind in ("instance.unknown", "instance.lost", "instance.recovered", "instance.surplus"):
            assert kinds.count(kind) == len(originals), (kind, kinds)
        env.figures.record(
            "partition-long",
            detect_s=detected_at - frozen_at,
            lost_s=lost_at - detected_at,
            replace_s=replaced_at - lost_at,
            back_settle_s=settled_at - thawed_at,
        )


def scenario_partition_link(env: FaultEnv) -> None:
    """An agent whose link to NATS is cut (it keeps running) for longer than ``lost_after``;
    one of its containers is killed while nobody can hear about it. When the link is mended,
    its full reports tell the server: the running original is kept, and everything is
    reconciled to exactly ``replicas``."""
    with fault_cluster(env, "partition-link", agents=1) as knit:
        assert knit.nats.port is not None
        with CuttableLink(knit.nats.port) as link:
            cut_off = knit.add_agent_with(nats_url=link.url)
            assert cut_off.node_id is not None
            spec = sleeper_spec("link", REPLICAS, lost_after=LOST_AFTER)
            deployment_id = knit.create_deployment(spec)["id"]
            _, before = knit.wait_exact(deployment_id, REPLICAS, timeout=60)
            mine = [c for c in before if c.node_id == cut_off.node_id]
            assert len(mine) >= 2, before
            kept, dead = mine[0], mine[1]

            cut_at = link.cut()
            unhealthy = knit.wait_event(
                "node.unhealthy", node_id=cut_off.node_id, after=cut_at, timeout=NODE_TTL + 10
            )
            docker("kill", dead.id, docker_host=dead.engine)  # nobody can be told
            lost = knit.wait_event(
                "instance.lost", deployment_id=deployment_id, after=cut_at, timeout=LOST_AFTER + 5
            )
            replaced_at, _ = knit.wait_exact(
                deployment_id, REPLICAS, stale_nodes=[cut_off.node_id], timeout=30
            )
            mended_at = link.mend()
            settled_at, final = knit.wait_exact(deployment_id, REPLICAS, timeout=30, steady=2.0)
            assert kept.id in {c.id for c in final}, "the running original kept"
            # The dead original is either removed (a replacement stays) or, if the reports
            # the agent queued while cut off showed it running first, recovered and started
            # again by its policy (a replacement goes): exactly REPLICAS either way.
            kinds = kinds_of(knit.check_events_explain(deployment_id))
            assert "instance.recovered" in kinds and "instance.surplus" in kinds, kinds
        env.figures.record(
            "partition-link",
            detect_s=event_time(unhealthy) - cut_at,
            lost_s=event_time(lost) - event_time(unhealthy),
            replace_s=replaced_at - event_time(lost),
            back_settle_s=settled_at - mended_at,
        )


def test_a_short_partition_replaces_nothing(fault_env: FaultEnv) -> None:
    scenario_partition_short(fault_env)


def test_a_long_partition_replaces_then_keeps_the_originals(fault_env: FaultEnv) -> None:
    scenario_partition_long(fault_env)


def test_a_cut_link_replaces_then_the_full_report_settles_it(fault_env: FaultEnv) -> None:
    scenario_partition_link(fault_env)


SCENARIOS = [scenario_partition_short, scenario_partition_long, scenario_partition_link]
