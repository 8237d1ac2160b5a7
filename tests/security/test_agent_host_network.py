"""Host networking is opt-in per agent: a deployment on a ``host`` network runs only on agents
started with ``--allow-host-network``, the others refuse its tasks even when forged. A real
server, nats-server, two agents (one allowing) and Docker."""

from __future__ import annotations

import pytest

from knit.domain.placement import HOST_NETWORK_REFUSED
from tests.security.agent_support import (
    BUSYBOX,
    deploy_task,
    encoded,
    files_outside_instances,
    publish,
    sleeper,
    still_running,
    wait_final,
)
from tests.support.knit import SLEEPER, KnitCluster, unique_name
from tests.support.knit_docker import container_ids, docker_network, inspect_container
from tests.support.knit_wire import SubjectRecorder

pytestmark = pytest.mark.e2e


def test_a_host_network_deployment_waits_for_an_agent_that_allows_it(knit: KnitCluster) -> None:
    closed = knit.agents[0]
    network = unique_name("host")
    knit.create_network(network, None, driver="host")
    created = knit.create_deployment(
        {
            "name": unique_name("onhost"),
            "image": BUSYBOX,
            "network_attachments": [network],
            "command": SLEEPER,
        }
    )

    def pending_reason() -> str | None:
        shown = knit.api.deployment(created["id"])
        return shown["pending_reason"] if shown["status"] == "pending" else None

    reason = knit.api.wait(pending_reason, what="the deployment pending, with a reason")
    assert HOST_NETWORK_REFUSED in reason and str(closed.node_id) in reason
    assert container_ids(knit.docker_host, {"knit.deployment": created["id"]}) == []

    opened = knit.add_agent(extra_args=["--allow-host-network"])
    [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
    assert instance["node_id"] == opened.node_id
    container = inspect_container(knit.docker_host, instance["container_id"])
    assert container["HostConfig"]["NetworkMode"] == "host"
    assert docker_network(knit.docker_host, network) is None
    flags = {n["id"]: n["allow_host_network"] for n in knit.api.nodes()}
    assert flags[str(opened.node_id)] is True and flags[str(closed.node_id)] is False
    assert "host networking allowed" in opened.log.read_text()


def test_a_forged_host_network_task_is_refused_by_an_agent_that_does_not_allow_it(
    knit: KnitCluster,
) -> None:
    closed = knit.agents[0]
    _, bystander = sleeper(knit, node_selector={}, replicas=1)
    before = files_outside_instances(closed.data_dir)
    task = deploy_task(deployment={"network_attachments": [{"name": "hostnet", "driver": "host"}]})
    with SubjectRecorder(knit.nats_url, "knit.task.status") as statuses:
        publish(knit, [(f"knit.tasks.{closed.node_id}", encoded(task))])
        final = wait_final(statuses, task["task_id"])
    assert (final["state"], final["step"]) == ("failed", "network")
    assert "--allow-host-network" in final["error"]
    assert container_ids(knit.docker_host, {"knit.instance": task["instance_id"]}) == []
    still_running(knit.docker_host, [bystander])
    assert files_outside_instances(closed.data_dir) == before
