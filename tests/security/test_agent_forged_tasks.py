"""Forged tasks whose ids are paths: they are dropped undecoded and touch nothing.

Before issue 10, anyone who reached NATS could publish on ``knit.tasks.<node>``, and a
``StopTask`` for instance ``/`` reached ``shutil.rmtree("/")`` and a ``DeployTask`` for
``/etc/cron.d`` wrote attacker content there. The bus now refuses such publishers; these
tasks are proved as the server's (``agent_support.publish``: a compromised or buggy
server), so the agent's own checks are what stops them. A real server, nats-server and
agent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.security.agent_support import (
    deploy_task,
    encoded,
    files_outside_instances,
    heartbeat_gaps,
    listing,
    publish,
    sleeper,
    statuses_of,
    still_running,
    stop_task,
)
from tests.support.knit import KnitCluster
from tests.support.knit_processes import HEARTBEAT_INTERVAL
from tests.support.knit_wire import SubjectRecorder

pytestmark = pytest.mark.e2e

CRON = Path("/etc/cron.d")
CRONTAB = "* * * * * root touch /tmp/knit-pwned\n"


def path_ids(canary: Path, data_dir: Path) -> list[str]:
    """Instance ids an attacker would try: the root, traversals, absolute folders."""
    up = "/".join([".."] * len(data_dir.parts))
    return [
        "/",
        "..",
        "../../etc",
        "/etc/cron.d",
        str(canary),
        f"../{canary.name}",
        f"{up}{canary}",
        "../" * 8 + "etc/cron.d",
        "A" * 32,
    ]


def test_forged_tasks_with_path_ids_touch_nothing(knit: KnitCluster, tmp_path: Path) -> None:
    agent = knit.agents[0]
    assert agent.node_id is not None
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep").write_text("precious")
    (agent.data_dir.parent / "canary").mkdir(exist_ok=True)  # ../canary from the data dir
    (agent.data_dir.parent / "canary" / "keep").write_text("precious")
    created, container_id = sleeper(knit)
    before_files = files_outside_instances(agent.data_dir)
    before_cron = listing(CRON)

    forged: list[dict[str, Any]] = []
    for bad in path_ids(canary, agent.data_dir):
        forged.append(stop_task(instance_id=bad))
        forged.append(
            deploy_task(
                instance_id=bad,
                deployment={"templates": [{"content": CRONTAB, "destination": "/x"}]},
            )
        )
        forged.append(stop_task(task_id=bad))
        forged.append(deploy_task(deployment={"id": bad}))
    forged.append(deploy_task(deployment={"name": "../../etc/cron.d"}))
    forged.append(
        deploy_task(deployment={"templates": [{"content": CRONTAB, "destination": "../x"}]})
    )
    subjects = [f"knit.tasks.{agent.node_id}", "knit.tasks.broadcast"]
    with SubjectRecorder(knit.nats_url, "knit.>") as wire:
        publish(knit, [(subject, encoded(task)) for task in forged for subject in subjects])
        time.sleep(3 * HEARTBEAT_INTERVAL + 1.0)
        messages = wire.json_messages()

    assert statuses_of(messages, [t["task_id"] for t in forged]) == []  # dropped, unanswered
    assert "undecodable task dropped" in agent.log.read_text()
    still_running(knit.docker_host, [container_id])
    assert files_outside_instances(agent.data_dir) == before_files
    assert listing(CRON) == before_cron
    assert (canary / "keep").read_text() == "precious" and listing(canary) == ["keep"]
    assert (agent.data_dir.parent / "canary" / "keep").read_text() == "precious"
    assert not Path("/tmp/knit-pwned").exists()
    gaps = heartbeat_gaps(messages, agent.node_id)
    assert gaps and max(gaps) < 3 * HEARTBEAT_INTERVAL, gaps
    [node] = [n for n in knit.api.nodes() if n["id"] == agent.node_id]
    assert node["status"] == "healthy"
    assert knit.api.instances_of(created["id"])[0]["status"] == "running"
