"""Deployments end to end: a real server and agent, checked against Docker itself.

One ``knit server`` and one ``knit agent`` (labelled zone=blue) serve the whole module; each
test uses its own names and is cleaned up after (see ``conftest.py``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import httpx
import pytest

from tests.support.docker import docker
from tests.support.knit import SLEEPER, KnitCluster, unique_name
from tests.support.knit_docker import (
    container_ids,
    docker_exec,
    docker_network,
    inspect_container,
    inspect_containers,
    spare_subnet,
)
from tests.support.process import free_port
from tests.support.registry import Registry, untag

pytestmark = pytest.mark.e2e

BUSYBOX = "knit-test/busybox:latest"
GREETING = "hello <world> & 'friends' \"quoted\""
"""Rendered as is: a config file is not HTML, nothing may be escaped."""
EVERY_VARIABLE = """\
greeting={{ env.GREETING }}
node.id={{ node.id }}
node.hostname={{ node.hostname }}
node.zone={{ node.labels.zone }}
deployment.id={{ deployment.id }}
deployment.name={{ deployment.name }}
deployment.image={{ deployment.image }}
instance.id={{ instance.id }}
instance.index={{ instance.index }}
"""


def the_node(knit: KnitCluster) -> dict[str, Any]:
    """The module's one node, as ``GET /nodes`` shows it."""
    node_id = knit.agents[0].node_id
    [node] = [n for n in knit.api.nodes() if n["id"] == node_id]
    return node


def read_file(docker_host: str, container_id: str, path: str) -> str:
    code, out = docker_exec(docker_host, container_id, "cat", path)
    assert code == 0, f"cat {path} in {container_id[:12]} failed: {out}"
    return out


def test_private_image_with_every_template_variable_on_a_bridge_subnet_runs_as_declared(
    knit: KnitCluster, registry: Registry, e2e_docker: str
) -> None:
    untag(registry.image, e2e_docker)  # the pull must really go to the registry
    node = the_node(knit)
    subnet = spare_subnet(e2e_docker)
    network_name = unique_name("net")

    credentials = knit.create_registry(registry.url, registry.username, registry.password)
    assert credentials["url"] == registry.url
    assert credentials["username"] == registry.username
    network = knit.create_network(network_name, subnet)
    assert (network["name"], network["driver"], network["subnet"]) == (
        network_name,
        "bridge",
        subnet,
    )
    assert docker_network(e2e_docker, network_name) is None, (
        "a bridge network is created on a node the first time a container needs it"
    )

    name = unique_name("private")
    destination = "/etc/knit/app.conf"
    spec = {
        "name": name,
        "image": registry.image,
        "registry_credentials_id": credentials["id"],
        "network_attachments": [network_name],
        "templates": [{"content": EVERY_VARIABLE, "destination": destination}],
        "env": {"GREETING": GREETING},
        "command": SLEEPER,
    }
    created = knit.create_deployment(spec)
    for key, value in spec.items():
        assert created[key] == value, f"stored {key}: {created[key]!r}"
    assert created.get("replicas") == 1

    [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
    assert instance["node_id"] == node["id"]
    container = inspect_container(e2e_docker, instance["id"])
    assert container["Id"].startswith(instance["id"]) and len(instance["id"]) >= 12
    assert container["State"]["Running"] is True
    assert container["Config"]["Image"] == registry.image
    labels = container["Config"]["Labels"]
    assert labels["knit.deployment"] == created["id"]
    assert labels["knit.node"] == node["id"]
    assert labels["knit.instance"]
    if "instance_id" in instance:
        assert labels["knit.instance"] == instance["instance_id"]

    expected = EVERY_VARIABLE.replace("{{ env.GREETING }}", GREETING)
    for placeholder, value in {
        "{{ node.id }}": node["id"],
        "{{ node.hostname }}": node["hostname"],
        "{{ node.labels.zone }}": "blue",
        "{{ deployment.id }}": created["id"],
        "{{ deployment.name }}": name,
        "{{ deployment.image }}": registry.image,
        "{{ instance.id }}": labels["knit.instance"],
        "{{ instance.index }}": "0",
    }.items():
        expected = expected.replace(placeholder, str(value))
    content = read_file(e2e_docker, container["Id"], destination)
    assert content.rstrip("\n") == expected.rstrip("\n")

    [mount] = [m for m in container["Mounts"] if m["Destination"] == destination]
    assert mount["Type"] == "bind" and mount["RW"] is False
    code, out = docker_exec(e2e_docker, container["Id"], "sh", "-c", f"echo x >> {destination}")
    assert code != 0, f"the template file is writable: {out}"
    assert read_file(e2e_docker, container["Id"], destination) == content

    address = container["NetworkSettings"]["Networks"][network_name]["IPAddress"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    made = docker_network(e2e_docker, network_name)
    assert made is not None and made["Driver"] == "bridge"
    assert [c["Subnet"] for c in made["IPAM"]["Config"]] == [subnet]

    listed = knit.api.get("/registries")
    assert credentials["id"] in [r["id"] for r in knit.api.ok(listed, 200)]
    assert registry.password not in listed.text
    assert network_name in [n["name"] for n in knit.api.listing("/networks")]
    assert registry.password not in knit.log_text(), "the registry password shows in a log"
    assert knit.files_containing(registry.password) == [], "the password is stored in clear"


def test_wrong_registry_credentials_make_the_instance_error_with_an_auth_reason(
    knit: KnitCluster, registry: Registry, e2e_docker: str
) -> None:
    untag(registry.image, e2e_docker)
    wrong_password = "wrong-" + registry.password
    credentials = knit.create_registry(registry.url, registry.username, wrong_password)
    created = knit.create_deployment(
        {
            "name": unique_name("badauth"),
            "image": registry.image,
            "registry_credentials_id": credentials["id"],
            "command": SLEEPER,
        }
    )
    [instance] = knit.api.wait_instances(created["id"], "error", count=1, timeout=60)
    reason = instance.get("error") or ""
    assert re.search("auth", reason, re.IGNORECASE), f"reason does not mention auth: {reason!r}"
    assert wrong_password not in reason
    assert wrong_password not in knit.log_text(), "the registry password shows in a log"
    assert container_ids(e2e_docker, {"knit.deployment": created["id"]}) == []


def test_template_that_parses_but_fails_to_render_makes_the_instance_error(
    knit: KnitCluster, e2e_docker: str
) -> None:
    created = knit.create_deployment(
        {
            "name": unique_name("render"),
            "image": BUSYBOX,
            "templates": [{"content": "value={{ env.MISSING }}", "destination": "/etc/x.conf"}],
            "env": {"PRESENT": "yes"},
            "command": SLEEPER,
        }
    )
    [instance] = knit.api.wait_instances(created["id"], "error", count=1, timeout=30)
    reason = instance.get("error") or ""
    assert "MISSING" in reason or "undefined" in reason.lower(), f"unreadable reason: {reason!r}"
    running = container_ids(e2e_docker, {"knit.deployment": created["id"]}, include_stopped=False)
    assert running == []
    response = knit.api.delete(f"/deployments/{created['id']}")
    assert response.status_code in (200, 202, 204), response.text
    knit.api.wait_gone(created["id"])


def test_replicas_on_one_node_each_render_their_own_instance(
    knit: KnitCluster, e2e_docker: str
) -> None:
    created = knit.create_deployment(
        {
            "name": unique_name("replicas"),
            "image": BUSYBOX,
            "replicas": 3,
            "templates": [
                {
                    "content": "{{ instance.index }} {{ instance.id }}",
                    "destination": "/run/instance",
                }
            ],
            "command": SLEEPER,
        }
    )
    instances = knit.api.wait_instances(created["id"], "running", count=3, timeout=60)
    ids = container_ids(e2e_docker, {"knit.deployment": created["id"]})
    assert sorted(ids) == sorted(inspect_container(e2e_docker, i["id"])["Id"] for i in instances)
    rendered = {}
    for container_id in ids:
        labels = inspect_container(e2e_docker, container_id)["Config"]["Labels"]
        index, instance_id = read_file(e2e_docker, container_id, "/run/instance").split()
        assert instance_id == labels["knit.instance"]
        rendered[index] = instance_id
    assert sorted(rendered) == ["0", "1", "2"]
    assert len(set(rendered.values())) == 3

    everywhere = {i["id"]: i for i in knit.api.listing("/instances")}
    for instance in instances:
        assert instance["id"] in everywhere, "GET /instances misses an instance"
        assert everywhere[instance["id"]]["status"] == "running"


def test_deleting_a_deployment_stops_and_removes_its_containers(
    knit: KnitCluster, e2e_docker: str
) -> None:
    created = knit.create_deployment(
        {"name": unique_name("delete"), "image": BUSYBOX, "replicas": 2, "command": SLEEPER}
    )
    instances = knit.api.wait_instances(created["id"], "running", count=2, timeout=60)
    labels = {"knit.deployment": created["id"]}
    assert len(container_ids(e2e_docker, labels)) == 2

    response = knit.api.delete(f"/deployments/{created['id']}")
    assert response.status_code in (200, 202, 204), response.text
    knit.api.wait(
        lambda: container_ids(e2e_docker, labels) == [],
        timeout=30,
        what="the deleted deployment's containers removed from Docker",
        describe=lambda: str(
            [(c["Id"][:12], c["State"]["Status"]) for c in inspect_containers(e2e_docker, labels)]
        ),
    )
    knit.api.wait_gone(created["id"])
    assert created["id"] not in [d["id"] for d in knit.api.listing("/deployments")]
    remaining = {i["id"] for i in knit.api.listing("/instances")}
    assert not remaining & {i["id"] for i in instances}
    assert knit.api.delete(f"/deployments/{created['id']}").status_code == 404


def test_port_published_on_localhost_serves_a_templated_file(
    knit: KnitCluster, e2e_docker: str
) -> None:
    host_port, udp_port = free_port(), free_port()
    name = unique_name("httpd")
    created = knit.create_deployment(
        {
            "name": name,
            "image": BUSYBOX,
            "templates": [
                {
                    "content": "hello from {{ deployment.name }} #{{ instance.index }}",
                    "destination": "/www/index.html",
                }
            ],
            "ports": [
                {
                    "container_port": 8080,
                    "host_port": host_port,
                    "host_ip": "127.0.0.1",
                    "protocol": "tcp",
                },
                {
                    "container_port": 5353,
                    "host_port": udp_port,
                    "host_ip": "127.0.0.1",
                    "protocol": "udp",
                },
            ],
            "command": [
                "sh",
                "-c",
                "httpd -p 8080 -h /www; trap 'exit 0' TERM; while true; do sleep 1; done",
            ],
        }
    )
    [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
    bindings = inspect_container(e2e_docker, instance["id"])["HostConfig"]["PortBindings"]
    assert bindings["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]
    assert bindings["5353/udp"] == [{"HostIp": "127.0.0.1", "HostPort": str(udp_port)}]

    def page() -> str | None:
        response = httpx.get(f"http://127.0.0.1:{host_port}/index.html", timeout=2)
        return response.text if response.status_code == 200 else None

    body = knit.api.wait(page, timeout=15, what="the published port answering")
    assert body.strip() == f"hello from {name} #0"


def test_replicas_sharing_a_new_bridge_network_on_one_node_all_run(
    knit: KnitCluster, e2e_docker: str
) -> None:
    subnet = spare_subnet(e2e_docker)
    network_name = unique_name("shared")
    knit.create_network(network_name, subnet)
    created = knit.create_deployment(
        {
            "name": unique_name("shared"),
            "image": BUSYBOX,
            "replicas": 3,
            "network_attachments": [network_name],
            "command": SLEEPER,
        }
    )
    instances = knit.api.wait_instances(created["id"], "running", count=3, timeout=60)
    addresses = set()
    for instance in instances:
        networks = inspect_container(e2e_docker, instance["id"])["NetworkSettings"]["Networks"]
        address = ipaddress.ip_address(networks[network_name]["IPAddress"])
        assert address in ipaddress.ip_network(subnet)
        addresses.add(address)
    assert len(addresses) == 3
    made = docker_network(e2e_docker, network_name)
    assert made is not None and [c["Subnet"] for c in made["IPAM"]["Config"]] == [subnet]


def test_image_missing_from_the_registry_makes_the_instance_error_without_hanging(
    knit: KnitCluster, registry: Registry, e2e_docker: str
) -> None:
    credentials = knit.create_registry(registry.url, registry.username, registry.password)
    image = f"{registry.url}/knit/no-such-image:1"
    created = knit.create_deployment(
        {
            "name": unique_name("noimage"),
            "image": image,
            "registry_credentials_id": credentials["id"],
            "command": SLEEPER,
        }
    )
    [instance] = knit.api.wait_instances(created["id"], "error", count=1, timeout=60)
    reason = instance.get("error") or ""
    assert "no-such-image" in reason or "not found" in reason.lower(), reason
    assert container_ids(e2e_docker, {"knit.deployment": created["id"]}) == []


def test_a_container_removed_behind_knits_back_is_replaced(
    knit: KnitCluster, e2e_docker: str
) -> None:
    created = knit.create_deployment(
        {"name": unique_name("heal"), "image": BUSYBOX, "command": SLEEPER}
    )
    [instance] = knit.api.wait_instances(created["id"], "running", count=1, timeout=60)
    docker("rm", "-f", instance["id"], docker_host=e2e_docker)

    def replaced() -> list[dict[str, Any]] | None:
        instances = knit.api.instances_of(created["id"])
        running = [i for i in instances if i.get("status") == "running"]
        return running if len(running) == 1 and running[0]["id"] != instance["id"] else None

    [fresh] = knit.api.wait(
        replaced,
        timeout=30,
        what="the removed container no longer running in the API, a new one replacing it",
        describe=lambda: knit.api.describe_instances(created["id"]),
    )
    labels = {"knit.deployment": created["id"]}
    [container_id] = container_ids(e2e_docker, labels, include_stopped=False)
    assert container_id.startswith(fresh["id"])


def test_a_host_port_already_taken_errors_with_the_reason_and_the_first_keeps_running(
    knit: KnitCluster, e2e_docker: str
) -> None:
    host_port = free_port()
    ports = [
        {"container_port": 80, "host_port": host_port, "host_ip": "127.0.0.1", "protocol": "tcp"}
    ]
    first = knit.create_deployment(
        {"name": unique_name("port-a"), "image": BUSYBOX, "ports": ports, "command": SLEEPER}
    )
    [holder] = knit.api.wait_instances(first["id"], "running", count=1, timeout=60)
    second = knit.create_deployment(
        {"name": unique_name("port-b"), "image": BUSYBOX, "ports": ports, "command": SLEEPER}
    )
    [failed] = knit.api.wait_instances(second["id"], "error", count=1, timeout=30)
    assert str(host_port) in (failed.get("error") or ""), failed
    assert [i["id"] for i in knit.api.instances_of(first["id"])] == [holder["id"]]
    assert inspect_container(e2e_docker, holder["id"])["State"]["Running"] is True

    assert knit.api.delete(f"/deployments/{second['id']}").status_code in (200, 202, 204)
    knit.api.wait_gone(second["id"])
    knit.api.wait(
        lambda: container_ids(e2e_docker, {"knit.deployment": second["id"]}) == [],
        timeout=30,
        what="nothing left of the failed deployment in Docker",
    )
