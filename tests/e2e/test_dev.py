"""``knit dev``: a whole Knit in one process tree, stopped with SIGTERM and started again on
the same data dir. Nothing is lost, containers keep running and are adopted, not duplicated.
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.knit import SLEEPER, files_containing, unique_name
from tests.support.knit_api import KnitApi
from tests.support.knit_docker import (
    container_ids,
    inspect_container,
    remove_containers_by_label,
    remove_docker_network,
    spare_subnet,
)
from tests.support.knit_processes import KnitDev, ProcessWatch, run_cli, wait_for_api
from tests.support.registry import Registry, untag
from tests.support.waiting import holds_for, wait_until

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"

DEPLOYMENT_FIELDS = (
    "id",
    "name",
    "image",
    "registry_credentials_id",
    "network_attachments",
    "templates",
    "env",
    "command",
    "replicas",
)


def state(api: KnitApi) -> dict[str, Any]:
    """What must survive a restart, in the contract's fields."""
    return {
        "deployments": sorted(
            ({k: d.get(k) for k in DEPLOYMENT_FIELDS} for d in api.listing("/deployments")),
            key=lambda d: str(d["id"]),
        ),
        "registries": sorted(
            ((r["id"], r["url"], r["username"]) for r in api.listing("/registries")),
        ),
        "networks": sorted(
            ((n["id"], n["name"], n["driver"], n.get("subnet")) for n in api.listing("/networks")),
        ),
    }


def alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(240)
def test_dev_restart_on_the_same_data_dir_loses_nothing_and_adopts_its_containers(
    e2e_docker: str, registry: Registry, tmp_path: Path
) -> None:
    untag(registry.image, e2e_docker)
    dev = KnitDev(tmp_path, e2e_docker)
    watch = ProcessWatch([dev])
    api = KnitApi(dev.api_url, watch)
    node_ids: set[str] = set()
    network_name = unique_name("devnet")
    try:
        dev.start()
        wait_for_api(dev.api_url, timeout=60, watch=watch)
        [node] = api.wait_healthy_nodes(1, timeout=30)
        node_ids.add(node["id"])

        credentials = api.ok(
            api.post(
                "/registries",
                {"url": registry.url, "username": registry.username, "password": registry.password},
            ),
            201,
        )
        subnet = spare_subnet(e2e_docker)
        api.ok(
            api.post("/networks", {"name": network_name, "driver": "bridge", "subnet": subnet}),
            201,
        )
        private = api.ok(
            api.post(
                "/deployments",
                {
                    "name": unique_name("dev-private"),
                    "image": registry.image,
                    "registry_credentials_id": credentials["id"],
                    "network_attachments": [network_name],
                    "templates": [{"content": "{{ instance.index }}", "destination": "/etc/index"}],
                    "command": SLEEPER,
                },
            ),
            201,
        )
        local = api.ok(
            api.post(
                "/deployments",
                {
                    "name": unique_name("dev-local"),
                    "image": BUSYBOX,
                    "replicas": 2,
                    "command": SLEEPER,
                },
            ),
            201,
        )
        replicas = {private["id"]: 1, local["id"]: 2}
        containers = {}
        for deployment_id, count in replicas.items():
            first = api.wait_instances(deployment_id, "running", count=count, timeout=90)
            ids = sorted(inspect_container(e2e_docker, i["id"])["Id"] for i in first)
            assert sorted(container_ids(e2e_docker, {"knit.deployment": deployment_id})) == ids
            containers[deployment_id] = ids
        before = state(api)
        assert before["deployments"] and before["registries"] and before["networks"]

        assert dev.pid is not None
        children = psutil.Process(dev.pid).children(recursive=True)
        code = dev.stop(timeout=20)
        stopped = (code, dev.killed, dev.logs())  # checked last: the restart matters more
        wait_until(
            lambda: not any(alive(c) for c in children),
            timeout=10,
            what=f"knit dev's children ({[c.pid for c in children]}) gone after it stopped",
        )
        for container_id in (c for ids in containers.values() for c in ids):
            assert inspect_container(e2e_docker, container_id)["State"]["Running"] is True

        dev.start()
        wait_for_api(dev.api_url, timeout=60, watch=watch)
        [again] = api.wait_healthy_nodes(1, timeout=30)
        assert again["id"] == node["id"], "the local agent came back as another node"
        assert [n["id"] for n in api.nodes()] == [node["id"]]
        for deployment_id, count in replicas.items():
            second = api.wait_instances(deployment_id, "running", count=count, timeout=60)
            adopted = sorted(inspect_container(e2e_docker, i["id"])["Id"] for i in second)
            assert adopted == containers[deployment_id], "the agent did not adopt its containers"

        def same_containers() -> bool:
            return all(
                sorted(container_ids(e2e_docker, {"knit.deployment": d})) == ids
                for d, ids in containers.items()
            )

        holds_for(
            same_containers,
            duration=3.0,
            what="no duplicate containers after the restart",
            watch=watch,
        )
        assert state(api) == before
        assert files_containing([dev.data_dir], registry.password) == [], "password in clear"
        assert stopped[:2] == (0, False), f"SIGTERM: exit {code}, killed={dev.killed}{stopped[2]}"
    finally:
        with contextlib.suppress(httpx.HTTPError, AssertionError, ValueError):
            for deployment in api.listing("/deployments") if dev.running else []:
                api.delete(f"/deployments/{deployment['id']}")
        dev.stop()
        api.close()
        for node_id in node_ids:
            remove_containers_by_label(e2e_docker, "knit.node", node_id)
        remove_docker_network(e2e_docker, network_name)


@pytest.mark.timeout(120)
def test_dev_writes_its_admin_token_where_knit_commands_find_it(
    e2e_docker: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    dev = KnitDev(tmp_path, e2e_docker, data_dir=repo / ".knit")
    watch = ProcessWatch([dev])
    try:
        dev.start()
        wait_for_api(dev.api_url, timeout=60, watch=watch)
        token_file = repo / ".knit" / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert not (repo / ".knit" / "server" / "admin.token").exists()
        token = token_file.read_text().strip()
        # `knit ps` from the folder holding .knit/ needs no token of its own.
        ps = run_cli("nodes", "--api", dev.api_url, token="", cwd=repo)
        assert ps.returncode == 0, ps.stderr + dev.logs()
        elsewhere = run_cli("nodes", "--api", dev.api_url, token="", cwd=tmp_path)
        assert elsewhere.returncode == 1 and "HTTP 401" in elsewhere.stderr
        assert token not in dev.log.read_text()
    finally:
        dev.stop()
