"""The ``knit`` command as a user types it: ``deploy -f``, ``ps``, ``nodes``, ``rm``.

Each command runs as its own process against the module's server (``--api URL``); the result
is checked through the REST API and Docker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.knit import SLEEPER, KnitCluster, unique_name
from tests.support.knit_docker import container_ids
from tests.support.knit_processes import run_cli
from tests.support.process import free_port

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"


def spec(name: str) -> dict[str, object]:
    return {
        "name": name,
        "image": BUSYBOX,
        "command": SLEEPER,
        "env": {"WHO": "cli"},
        "templates": [{"content": "who={{ env.WHO }}", "destination": "/etc/who"}],
    }


def deploy_file(knit: KnitCluster, path: Path) -> str:
    """``knit deploy -f path``; return the new deployment's id (tracked for cleanup)."""
    done = run_cli("deploy", "-f", str(path), "--api", knit.server.api_url)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}{knit.logs()}"
    name = yaml.safe_load(path.read_text())["name"]
    [deployment] = [d for d in knit.api.listing("/deployments") if d["name"] == name]
    knit.deployments.append(deployment["id"])
    assert name in done.stdout or deployment["id"] in done.stdout
    return str(deployment["id"])


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_deploy_from_a_file_runs_the_deployment(
    knit: KnitCluster, e2e_docker: str, tmp_path: Path, suffix: str
) -> None:
    name = unique_name(f"cli-{suffix}")
    path = tmp_path / f"deployment.{suffix}"
    body = spec(name)
    path.write_text(yaml.safe_dump(body) if suffix == "yaml" else json.dumps(body))

    deployment_id = deploy_file(knit, path)
    [instance] = knit.api.wait_instances(deployment_id, "running", count=1, timeout=60)
    ids = container_ids(e2e_docker, {"knit.deployment": deployment_id}, include_stopped=False)
    assert len(ids) == 1 and ids[0].startswith(instance["id"])


def test_ps_nodes_and_rm_by_name(knit: KnitCluster, e2e_docker: str, tmp_path: Path) -> None:
    name = unique_name("cli-rm")
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(spec(name)))
    deployment_id = deploy_file(knit, path)
    [instance] = knit.api.wait_instances(deployment_id, "running", count=1, timeout=60)

    nodes = run_cli("nodes", "--api", knit.server.api_url)
    assert nodes.returncode == 0, nodes.stderr
    node_id = knit.agents[0].node_id
    assert node_id is not None
    [line] = [x for x in nodes.stdout.splitlines() if x.startswith(node_id[:12])]
    assert "healthy" in line.split()

    ps = run_cli("ps", "--api", knit.server.api_url)
    assert ps.returncode == 0, ps.stderr
    lines = [x for x in ps.stdout.splitlines() if instance["id"][:12] in x]
    assert len(lines) == 1, f"ps does not list {instance['id'][:12]} once:\n{ps.stdout}"
    assert "running" in lines[0]
    assert deployment_id in lines[0] or name in lines[0]

    rm = run_cli("rm", name, "--api", knit.server.api_url)
    assert rm.returncode == 0, f"exit {rm.returncode}: {rm.stderr}"
    knit.api.wait(
        lambda: container_ids(e2e_docker, {"knit.deployment": deployment_id}) == [],
        timeout=30,
        what="knit rm removing the containers",
    )
    knit.api.wait_gone(deployment_id)
    assert name not in [d["name"] for d in knit.api.listing("/deployments")]


def test_rm_of_an_unknown_name_fails_with_a_message(knit: KnitCluster) -> None:
    missing = unique_name("no-such")
    done = run_cli("rm", missing, "--api", knit.server.api_url)
    assert done.returncode != 0
    assert missing in done.stderr
    assert "Traceback" not in done.stderr


def test_deploy_of_an_invalid_file_fails_naming_the_field_and_stores_nothing(
    knit: KnitCluster, tmp_path: Path
) -> None:
    before = knit.api.listing("/deployments")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**spec(unique_name("cli-bad")), "replicas": -1}))
    done = run_cli("deploy", "-f", str(path), "--api", knit.server.api_url)
    assert done.returncode != 0
    assert "replicas" in done.stderr
    assert "Traceback" not in done.stderr
    assert knit.api.listing("/deployments") == before


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "-f", "/nonexistent/knit-deployment.yaml"],
        ["nodes"],
        ["ps"],
    ],
    ids=["deploy-missing-file", "nodes-no-server", "ps-no-server"],
)
def test_cli_errors_go_to_stderr_with_a_non_zero_exit(knit: KnitCluster, args: list[str]) -> None:
    api = knit.server.api_url if args[0] == "deploy" else f"http://127.0.0.1:{free_port()}"
    done = run_cli(*args, "--api", api)
    assert done.returncode != 0
    assert done.stderr.strip()
    assert "Traceback" not in done.stderr


def test_rm_by_id_deletes_the_deployment(
    knit: KnitCluster, e2e_docker: str, tmp_path: Path
) -> None:
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(spec(unique_name("cli-rm-id"))))
    deployment_id = deploy_file(knit, path)
    knit.api.wait_instances(deployment_id, "running", count=1, timeout=60)
    done = run_cli("rm", deployment_id, "--api", knit.server.api_url)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    knit.api.wait_gone(deployment_id)
    knit.api.wait(
        lambda: container_ids(e2e_docker, {"knit.deployment": deployment_id}) == [],
        timeout=30,
        what="knit rm ID removing the containers",
    )


def running_containers(docker_host: str, deployment_id: str) -> list[str]:
    return sorted(
        container_ids(docker_host, {"knit.deployment": deployment_id}, include_stopped=False)
    )


def test_deploy_again_updates_then_history_scale_and_rollback(
    knit: KnitCluster, e2e_docker: str, tmp_path: Path
) -> None:
    name = unique_name("cli-life")
    path = tmp_path / "deployment.yaml"
    fast = {"min_healthy_time": 0.5, "healthy_deadline": 30}
    body = {**spec(name), "replicas": 2, "update": fast}
    path.write_text(yaml.safe_dump(body))
    deployment_id = deploy_file(knit, path)

    body["env"] = {"WHO": "cli v2"}  # the template renders it: a new version
    path.write_text(yaml.safe_dump(body))
    api = ["--api", knit.server.api_url]
    updated = run_cli("deploy", "-f", str(path), *api, timeout=120)
    assert updated.returncode == 0, f"{updated.stdout}{updated.stderr}{knit.logs()}"
    assert f"deployment {name} updated: version 2 (was 1)" in updated.stdout
    assert updated.stdout.rstrip().endswith("rollout complete: version 2")
    running = knit.api.wait_instances(deployment_id, "running", count=2, timeout=60)
    assert {i["version"] for i in running} == {2}
    ids = running_containers(e2e_docker, deployment_id)
    assert len(ids) == 2

    same = run_cli("deploy", "-f", str(path), *api)
    assert same.returncode == 0 and "unchanged (version 2)" in same.stdout, same.stderr
    assert running_containers(e2e_docker, deployment_id) == ids

    scaled = run_cli("scale", name, "3", *api, timeout=120)
    assert scaled.returncode == 0, f"{scaled.stdout}{scaled.stderr}"
    after = running_containers(e2e_docker, deployment_id)
    assert set(ids) < set(after) and len(after) == 3  # the two running ones kept

    history = run_cli("history", name, *api)
    assert history.returncode == 0, history.stderr
    rows = history.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["2", "1"] and "env" in rows[0]

    back = run_cli("rollback", name, "--version", "1", *api, timeout=120)
    assert back.returncode == 0, f"{back.stdout}{back.stderr}{knit.logs()}"
    assert back.stdout.rstrip().endswith("rollout complete: version 3")
    data = knit.api.deployment(deployment_id)
    assert (data["version"], data["env"], data["replicas"]) == (3, {"WHO": "cli"}, 3)
