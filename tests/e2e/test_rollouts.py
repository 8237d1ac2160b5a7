"""A deployment's lifecycle end to end (issue 12): rolling updates that keep serving, health
checks that fail and roll back or pause, scaling without restarts, template changes in
batches, rollback by number, and a server killed in the middle of a rollout.

Everything goes through the REST API as a user's would; what serves is checked by fetching
each instance's page (busybox httpd, its port published on 127.0.0.1) and what runs by asking
Docker. The module's cluster is the e2e one (a server and one agent, ``conftest.py``); the
server-kill test starts a cluster of its own.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.knit import KnitCluster, cluster_for, unique_name
from tests.support.knit_api import JSON
from tests.support.knit_docker import container_ids
from tests.support.knit_rollouts import (
    FAILING_CHECK,
    PagePoller,
    Sample,
    containers_per_instance,
    describe,
    pages,
    put_deployment,
    rollback,
    scale,
    serving,
    started_at,
    versions,
    wait_rollout,
    wait_serving,
    web_spec,
)
from tests.support.waiting import holds_for

pytestmark = pytest.mark.e2e

REPLICAS = 3
HEALTHY_DEADLINE = 5.0
"""The deadline of the versions that fail (seconds)."""
ROLLBACK_SLACK = 8.0
"""How long after ``HEALTHY_DEADLINE`` a failed rollout may take to be rolled back or paused."""
MAX_SAMPLE_GAP = 2.0
"""The longest the page poller may go without a sample (seconds)."""


def with_version(spec: JSON, page: str, **changes: object) -> JSON:
    """``spec`` whose page says ``page`` (its ``VERSION``), with other fields changed."""
    return {**spec, "env": {"VERSION": page}, **changes}


def page_by_version(**by_version: str) -> Callable[[JSON], str | None]:
    """The page an instance must serve: ``v1="v1"`` means version 1 says ``v1``."""
    expected = {int(key.lstrip("v")): page for key, page in by_version.items()}
    return lambda instance: expected.get(int(instance["version"]))


def poller(
    knit: KnitCluster,
    deployment_id: str,
    expect: Callable[[JSON], str | None],
    path: str = "/",
) -> PagePoller:
    """A page poller of this deployment: ``expect(instance)`` is the page at ``path``."""
    return PagePoller(knit.server.api_url, knit.docker_host, deployment_id, path, expect)


def deployed(knit: KnitCluster, spec: JSON) -> str:
    """Create the deployment and wait until its ``replicas`` serve version 1; its id."""
    created = knit.create_deployment(spec)
    wait_serving(knit, created["id"], count=int(spec["replicas"]), version=1)
    return str(created["id"])


def updated(knit: KnitCluster, deployment_id: str, spec: JSON, version: int) -> JSON:
    """PUT ``spec``, which must make ``version``; wait until it is rolled out; the deployment."""
    answer = put_deployment(knit, deployment_id, spec)
    assert answer["version"] == version, answer
    done = wait_rollout(knit, deployment_id, "complete", version=version)
    wait_serving(knit, deployment_id, count=int(spec["replicas"]), version=version)
    return done


def stable_versions(knit: KnitCluster, deployment_id: str) -> list[tuple[int, bool]]:
    """``GET .../versions`` as (version, stable), newest first."""
    return [(int(v["version"]), bool(v["stable"])) for v in versions(knit, deployment_id)]


def check_pages(knit: KnitCluster, instances: list[JSON], expected: str, path: str = "/") -> None:
    found = pages(knit.docker_host, instances, path)
    assert sorted(found.values()) == [expected] * len(instances), found


def check_sampled(watch: PagePoller) -> None:
    """The poller sampled all through the rollout (every ~0.1 s; a loaded machine slows it
    down, but a gap of seconds would make its claims empty), and the API always answered."""
    times = [s.at for s in watch.samples]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 5 and max(gaps) <= MAX_SAMPLE_GAP, (
        f"{len(times)} samples over {times[-1] - times[0]:.1f} s, "
        f"the longest gap {max(gaps, default=0):.1f} s"
    )
    assert not watch.api_errors, f"the API failed to answer: {watch.api_errors[:5]}"


# -- rolling updates -----------------------------------------------------------------------


def test_start_first_update_keeps_three_healthy_instances_serving_throughout(
    knit: KnitCluster,
) -> None:
    spec = web_spec(unique_name("start-first"), "v1", order="start_first", max_parallel=1)
    deployment_id = deployed(knit, spec)

    watch = poller(knit, deployment_id, expect=page_by_version(v1="v1", v2="v2"))
    with watch.running():
        answer = put_deployment(knit, deployment_id, with_version(spec, "v2"))
        assert answer["version"] == 2, answer
        done = wait_rollout(knit, deployment_id, "complete", version=2)
        final = wait_serving(knit, deployment_id, count=REPLICAS, version=2)

    watch.check_no_failure()
    check_sampled(watch)
    fewest, sample = watch.fewest(lambda s: len(s.serving))
    assert fewest >= REPLICAS, f"{fewest} healthy instances at {sample.at:.2f}: {sample.brief()}"
    assert watch.versions_served() == {1, 2}, "the poller did not see both versions serve"
    check_pages(knit, final, "v2")
    assert done["version"] == 2 and done["rollout"]["state"] == "complete"
    assert stable_versions(knit, deployment_id) == [(2, True), (1, True)]


def test_stop_first_update_never_has_fewer_than_two_running(knit: KnitCluster) -> None:
    spec = web_spec(unique_name("stop-first"), "v1", order="stop_first", max_parallel=1)
    deployment_id = deployed(knit, spec)

    watch = poller(knit, deployment_id, expect=page_by_version(v1="v1", v2="v2"))
    with watch.running():
        answer = put_deployment(knit, deployment_id, with_version(spec, "v2"))
        assert answer["version"] == 2, answer
        done = wait_rollout(knit, deployment_id, "complete", version=2)
        final = wait_serving(knit, deployment_id, count=REPLICAS, version=2)

    watch.check_no_failure()
    check_sampled(watch)
    fewest, sample = watch.fewest(lambda s: len(s.running))
    assert fewest >= REPLICAS - 1, f"{fewest} running at {sample.at:.2f}: {sample.brief()}"
    fewest, sample = watch.fewest(lambda s: len(s.serving))
    assert fewest >= REPLICAS - 1, f"{fewest} healthy at {sample.at:.2f}: {sample.brief()}"
    assert watch.versions_served() == {1, 2}
    check_pages(knit, final, "v2")
    assert done["rollout"]["state"] == "complete"
    assert stable_versions(knit, deployment_id) == [(2, True), (1, True)]


# -- failing versions ----------------------------------------------------------------------


def at_v2_then_failing_v3(knit: KnitCluster, prefix: str, on_failure: str) -> tuple[str, JSON]:
    """A deployment rolled out to a stable v2 (stop_first), then PUT a v3 whose health check
    never passes; its id and v3's spec."""
    spec = web_spec(
        unique_name(prefix),
        "v1",
        order="stop_first",
        max_parallel=1,
        healthy_deadline=HEALTHY_DEADLINE,
        on_failure=on_failure,
    )
    deployment_id = deployed(knit, spec)
    v2 = with_version(spec, "v2")
    updated(knit, deployment_id, v2, 2)
    return deployment_id, with_version(v2, "v3", health_check=FAILING_CHECK)


def test_a_version_that_never_becomes_healthy_is_rolled_back_to_the_stable_one(
    knit: KnitCluster,
) -> None:
    deployment_id, v3 = at_v2_then_failing_v3(knit, "rollback", "rollback")

    watch = poller(knit, deployment_id, expect=page_by_version(v2="v2", v3="v3"))
    with watch.running():
        began = time.monotonic()
        answer = put_deployment(knit, deployment_id, v3)
        assert answer["version"] == 3, answer
        done = wait_rollout(
            knit,
            deployment_id,
            "rolled_back",
            version=2,
            timeout=HEALTHY_DEADLINE + ROLLBACK_SLACK + 20,
        )
        took = time.monotonic() - began
        final = wait_serving(knit, deployment_id, count=REPLICAS, version=2)

    assert took <= HEALTHY_DEADLINE + ROLLBACK_SLACK, (
        f"rolled back {took:.1f} s after the update (healthy_deadline {HEALTHY_DEADLINE:g} s)"
    )
    rollout = done["rollout"]
    assert rollout["state"] == "rolled_back" and rollout["message"], rollout
    watch.check_no_failure()
    check_sampled(watch)
    fewest, sample = watch.fewest(lambda s: len(s.serving))
    assert fewest >= REPLICAS - 1, f"{fewest} healthy at {sample.at:.2f}: {sample.brief()}"
    check_pages(knit, final, "v2")
    assert stable_versions(knit, deployment_id) == [(3, False), (2, True), (1, True)]


def test_a_version_that_never_becomes_healthy_pauses_and_the_old_instances_keep_serving(
    knit: KnitCluster,
) -> None:
    deployment_id, v3 = at_v2_then_failing_v3(knit, "pause", "pause")
    before = {i["instance_id"] for i in knit.api.instances_of(deployment_id)}

    watch = poller(knit, deployment_id, expect=page_by_version(v2="v2", v3="v3"))
    with watch.running():
        began = time.monotonic()
        answer = put_deployment(knit, deployment_id, v3)
        assert answer["version"] == 3, answer
        done = wait_rollout(knit, deployment_id, "paused", version=3, timeout=HEALTHY_DEADLINE + 30)
        took = time.monotonic() - began
        rollout = done["rollout"]
        assert rollout["message"], f"a pause without a reason: {rollout}"
        assert took <= HEALTHY_DEADLINE + ROLLBACK_SLACK, f"paused after {took:.1f} s"

        def left_serving() -> list[JSON]:
            return [
                i
                for i in knit.api.instances_of(deployment_id)
                if serving(i) and i["version"] == 2 and i["instance_id"] in before
            ]

        left = left_serving()
        assert len(left) == REPLICAS - 1, f"v2 instances left: {describe(knit, deployment_id)}"
        holds_for(
            lambda: (
                [i["instance_id"] for i in left_serving()] == [i["instance_id"] for i in left]
                and knit.api.deployment(deployment_id)["rollout"]["state"] == "paused"
            ),
            duration=2.0,
            what="the rollout paused, the v2 instances left untouched",
            watch=knit.watch,
        )

    watch.check_no_failure()
    check_sampled(watch)
    fewest, sample = watch.fewest(lambda s: len(s.serving))
    assert fewest >= REPLICAS - 1, f"{fewest} healthy at {sample.at:.2f}: {sample.brief()}"
    check_pages(knit, left, "v2")
    assert stable_versions(knit, deployment_id) == [(3, False), (2, True), (1, True)]


# -- scaling and identical updates ---------------------------------------------------------


def docker_view(knit: KnitCluster, deployment_id: str) -> dict[str, str]:
    """The deployment's running containers in Docker: id → State.StartedAt."""
    ids = container_ids(knit.docker_host, {"knit.deployment": deployment_id}, include_stopped=False)
    return {cid: started_at(knit.docker_host, cid) for cid in ids}


def check_nothing_restarts(knit: KnitCluster, deployment_id: str, version: int) -> None:
    """For two seconds: the same containers, started at the same time, the same version."""
    containers = docker_view(knit, deployment_id)
    count = len(versions(knit, deployment_id))
    holds_for(
        lambda: (
            docker_view(knit, deployment_id) == containers
            and knit.api.deployment(deployment_id)["version"] == version
        ),
        duration=2.0,
        what="the same containers and version after an identical PUT",
        watch=knit.watch,
    )
    assert len(versions(knit, deployment_id)) == count, "an identical PUT made a version"


def test_scaling_up_and_down_and_an_identical_update_restart_nothing(knit: KnitCluster) -> None:
    spec = web_spec(unique_name("scale"), "v1")
    deployment_id = deployed(knit, spec)
    originals = docker_view(knit, deployment_id)
    assert len(originals) == REPLICAS

    answer = put_deployment(knit, deployment_id, spec)
    assert answer["version"] == 1, answer
    check_nothing_restarts(knit, deployment_id, 1)
    assert docker_view(knit, deployment_id) == originals

    scale(knit, deployment_id, 5)
    five = wait_serving(knit, deployment_id, count=5, version=None)
    grown = docker_view(knit, deployment_id)
    assert {c: grown[c] for c in originals} == originals, "scaling up restarted an instance"
    assert len({i["index"] for i in five}) == 5

    scale(knit, deployment_id, 2)
    two = wait_serving(knit, deployment_id, count=2, version=None)
    survivors = docker_view(knit, deployment_id)
    assert len(survivors) == 2
    assert {c: grown.get(c) for c in survivors} == survivors, "scaling down restarted one"
    assert len({i["index"] for i in two}) == 2
    check_pages(knit, two, "v1")

    current = knit.api.deployment(deployment_id)
    answer = put_deployment(knit, deployment_id, {**spec, "replicas": 2})
    assert answer["version"] == current["version"], answer
    check_nothing_restarts(knit, deployment_id, current["version"])
    assert docker_view(knit, deployment_id) == survivors


# -- templates -----------------------------------------------------------------------------


def replacing(sample: Sample, version: int, replicas: int) -> int:
    """How many slots are being replaced in ``sample``: wanted instances of ``version`` not
    healthy yet, plus slots that no wanted instance holds (an old one stopped, its
    replacement not created yet)."""
    wanted = [i for i in sample.instances if i.get("desired")]
    new = [i for i in wanted if i["version"] == version]
    old = [i for i in wanted if i["version"] != version]
    unready = [i for i in new if not serving(i)]
    return len(unready) + max(0, replicas - len(old) - len(new))


def test_a_template_change_is_rendered_again_and_rolled_out_in_batches(
    knit: KnitCluster,
) -> None:
    def template(text: str) -> list[JSON]:
        return [{"content": text + " #{{ instance.index }}\n", "destination": "/www/conf.txt"}]

    spec = {
        **web_spec(unique_name("template"), "v1", order="start_first", max_parallel=2),
        "templates": template("conf one"),
    }
    deployment_id = deployed(knit, spec)
    first = wait_serving(knit, deployment_id, count=REPLICAS, version=1)
    assert pages(knit.docker_host, first, "/conf.txt") == {
        i["index"]: f"conf one #{i['index']}" for i in first
    }

    def expect(instance: JSON) -> str:
        text = "conf one" if instance["version"] == 1 else "conf two"
        return f"{text} #{instance['index']}"

    watch = poller(knit, deployment_id, path="/conf.txt", expect=expect)
    with watch.running():
        answer = put_deployment(knit, deployment_id, {**spec, "templates": template("conf two")})
        assert answer["version"] == 2, answer
        wait_rollout(knit, deployment_id, "complete", version=2)
        final = wait_serving(knit, deployment_id, count=REPLICAS, version=2)

    watch.check_no_failure()
    check_sampled(watch)
    most = max(replacing(s, 2, REPLICAS) for s in watch.samples)
    worst = max(watch.samples, key=lambda s: replacing(s, 2, REPLICAS))
    assert most <= 2, f"{most} instances replaced at once (max_parallel 2): {worst.brief()}"
    assert most == 2, "never two instances replaced at once: not in batches of max_parallel"
    assert pages(knit.docker_host, final, "/conf.txt") == {
        i["index"]: f"conf two #{i['index']}" for i in final
    }
    check_pages(knit, final, "v1")


# -- rollback by number --------------------------------------------------------------------


def test_rollback_to_version_one_by_number_makes_version_three_with_its_spec(
    knit: KnitCluster,
) -> None:
    spec = web_spec(unique_name("back"), "v1", order="start_first")
    deployment_id = deployed(knit, spec)
    updated(knit, deployment_id, with_version(spec, "v2"), 2)

    assert rollback(knit, deployment_id, 1) == 3
    done = wait_rollout(knit, deployment_id, "complete", version=3)
    final = wait_serving(knit, deployment_id, count=REPLICAS, version=3)
    check_pages(knit, final, "v1")
    assert done["env"] == {"VERSION": "v1"}

    history = versions(knit, deployment_id)
    assert [v["version"] for v in history] == [3, 2, 1]
    by_number = {v["version"]: v for v in history}
    assert by_number[3]["spec"] == by_number[1]["spec"]
    assert by_number[2]["spec"]["env"] == {"VERSION": "v2"}
    assert all(v["stable"] for v in history), history


# -- a server killed in the middle of a rollout --------------------------------------------


def test_a_server_killed_mid_rollout_resumes_it_without_duplicates(
    e2e_docker: str, tmp_path: Path
) -> None:
    with cluster_for(tmp_path, e2e_docker, agents=[{}]) as knit:
        [agent] = knit.agents
        spec = web_spec(unique_name("sigkill"), "v1", order="start_first", max_parallel=1)
        deployment_id = deployed(knit, spec)
        answer = put_deployment(knit, deployment_id, with_version(spec, "v2"))
        assert answer["version"] == 2, answer

        def mid_rollout() -> bool:
            instances = knit.api.instances_of(deployment_id)
            new = [i for i in instances if i["version"] == 2 and i["desired"]]
            old = [i for i in instances if i["version"] == 1 and i["desired"]]
            return len(new) >= 1 and len(old) >= 2

        knit.api.wait(
            mid_rollout,
            timeout=30,
            what="the rollout's first batch under way",
            describe=lambda: describe(knit, deployment_id),
        )
        assert knit.server.kill() is not None
        knit.server.start_and_wait()
        knit.api.wait(
            lambda: any(
                n["id"] == agent.node_id and n["status"] == "healthy" for n in knit.api.nodes()
            ),
            timeout=30,
            what="the agent healthy again after the server restarted",
        )
        # Until the rollout completes: never two containers for one instance, nor more than
        # start_first's surge: a new instance starting, and an old one still stopping.
        most = REPLICAS + 2

        def resumed() -> bool:
            per_instance = containers_per_instance(knit.docker_host, deployment_id)
            assert max(per_instance.values(), default=1) == 1, f"duplicated: {per_instance}"
            assert sum(per_instance.values()) <= most, f"too many containers: {per_instance}"
            rollout = knit.api.deployment(deployment_id)["rollout"]
            assert rollout["state"] in ("running", "complete"), rollout
            return bool(rollout["state"] == "complete" and rollout["version"] == 2)

        knit.api.wait(
            resumed,
            timeout=60,
            what="the rollout resumed and complete",
            describe=lambda: describe(knit, deployment_id),
        )
        final = wait_serving(knit, deployment_id, count=REPLICAS, version=2)
        check_pages(knit, final, "v2")

        def exact() -> bool:
            instances = knit.api.instances_of(deployment_id)
            labels = {"knit.deployment": deployment_id}
            indexes = Counter(i["index"] for i in instances if i["desired"])
            return (
                len(container_ids(knit.docker_host, labels)) == REPLICAS
                and len(instances) == REPLICAS
                and sorted(indexes.values()) == [1] * REPLICAS
            )

        holds_for(
            exact,
            duration=3.0,
            what=f"exactly {REPLICAS} containers and instances, unique indexes",
            watch=knit.watch,
        )
