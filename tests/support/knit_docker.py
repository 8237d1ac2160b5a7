"""Docker's own view of what Knit did, for end-to-end tests: containers found by label,
inspected, exec'd into; networks and their subnets; cleanup. Uses the ``docker`` CLI only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from tests.support.docker import DockerCLIError, docker

JSON = dict[str, Any]


def container_ids(
    docker_host: str, labels: Mapping[str, str], *, include_stopped: bool = True
) -> list[str]:
    """The full ids of containers carrying all ``labels`` (running only, unless
    ``include_stopped``)."""
    filters: list[str] = []
    for key, value in labels.items():
        filters += ["--filter", f"label={key}={value}"]
    flags = ["-aq", "--no-trunc"] if include_stopped else ["-q", "--no-trunc"]
    return docker("ps", *flags, *filters, docker_host=docker_host).split()


def inspect_containers(docker_host: str, labels: Mapping[str, str]) -> list[JSON]:
    """``docker inspect`` of every container (any state) carrying all ``labels``."""
    ids = container_ids(docker_host, labels)
    if not ids:
        return []
    data = json.loads(docker("inspect", *ids, docker_host=docker_host))
    assert isinstance(data, list)
    return data


def inspect_container(docker_host: str, container_id: str) -> JSON:
    """``docker inspect`` of one container."""
    data = json.loads(docker("inspect", container_id, docker_host=docker_host))
    assert isinstance(data, list) and len(data) == 1
    result: JSON = data[0]
    return result


def docker_exec(docker_host: str, container_id: str, *command: str) -> tuple[int, str]:
    """Run ``command`` in a container; return its exit code and output (stdout + stderr)."""
    done = subprocess.run(
        ["docker", "exec", container_id, *command],
        capture_output=True,
        text=True,
        env=dict(os.environ, DOCKER_HOST=docker_host),
        timeout=30,
    )
    return done.returncode, done.stdout + done.stderr


def remove_containers_by_label(docker_host: str, key: str, value: str) -> int:
    """Force-remove the containers labelled ``key=value``; return how many (best effort)."""
    try:
        ids = container_ids(docker_host, {key: value})
        if ids:
            docker("rm", "-f", "-v", *ids, docker_host=docker_host)
    except DockerCLIError:
        return 0
    return len(ids)


def docker_network(docker_host: str, name: str) -> JSON | None:
    """``docker network inspect NAME``, or None when there is no such network."""
    try:
        data = json.loads(docker("network", "inspect", name, docker_host=docker_host))
    except DockerCLIError:
        return None
    found: list[JSON] = [n for n in data if n.get("Name") == name]
    return found[0] if found else None


def remove_docker_network(docker_host: str, name: str) -> None:
    """Remove the Docker network ``name`` if it exists (best effort)."""
    with contextlib.suppress(DockerCLIError):
        if docker_network(docker_host, name) is not None:
            docker("network", "rm", name, docker_host=docker_host)


def docker_subnets(docker_host: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets of every Docker network on the Engine."""
    ids = docker("network", "ls", "-q", docker_host=docker_host).split()
    if not ids:
        return []
    subnets = []
    for network in json.loads(docker("network", "inspect", *ids, docker_host=docker_host)):
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                subnets.append(ipaddress.ip_network(config["Subnet"], strict=False))
    return subnets


def spare_subnet(docker_host: str, avoid: Sequence[str] = ()) -> str:
    """A /24 in 10.200.0.0 to 10.250.255.0 that overlaps no Docker network nor ``avoid``."""
    taken = [*docker_subnets(docker_host), *(ipaddress.ip_network(s) for s in avoid)]
    for _ in range(200):
        candidate = ipaddress.ip_network(
            f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24"
        )
        if not any(candidate.overlaps(t) for t in taken if t.version == 4):
            return str(candidate)
    raise AssertionError("no spare /24 found in 10.200.0.0/13")
