"""Translation between Knit's runtime data and the Docker Engine's JSON: pure functions.

Layer: runtime. Pure, no I/O: imports the standard library, ``knit.errors`` and
``knit.runtime.base``. ``knit.runtime.docker.DockerRuntime`` sends what these functions build
and reads what the Engine answers through them; they are tested without an Engine
(tests/runtime/test_docker_translation.py).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from knit.errors import RuntimeFailure
from knit.runtime.base import (
    HEALTH_NONE,
    HEALTH_STATUSES,
    ContainerSpec,
    ContainerState,
    HealthCheck,
    PortProtocol,
    PublishedPort,
    RuntimeEvent,
)

log = logging.getLogger(__name__)

# Keys Docker adds to a container event's attributes beside the container's labels.
_EVENT_NON_LABEL_KEYS = frozenset(
    {"image", "name", "exitCode", "signal", "execID", "oldName", "height", "width"}
)
_EXITED_STATUS = re.compile(r"^Exited \((-?\d+)\)")
# A running container's list status ends with its health: "Up 3 seconds (healthy)",
# "(unhealthy)", "(health: starting)".
_HEALTH_STATUS = re.compile(r"\((?:health: )?(starting|healthy|unhealthy)\)$")
# Health checks run as execs: three events a check that nothing in Knit reads.
_IGNORED_ACTIONS = frozenset({"exec_create", "exec_start", "exec_die", "exec_detach"})
_NANOSECONDS = 1_000_000_000


def existing_network_id(
    name: str,
    network: dict[str, Any],
    wanted: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
) -> str:
    """The id of the existing network ``name`` (inspect's or list's JSON ``network``).

    Raises:
        RuntimeFailure: "network", it has no ``wanted`` subnet (None: any will do).
    """
    configs = (network.get("IPAM") or {}).get("Config") or []
    subnets = [ipaddress.ip_network(c["Subnet"], strict=False) for c in configs if c.get("Subnet")]
    if wanted is not None and wanted not in subnets:
        have = ", ".join(str(s) for s in subnets) or "none"
        raise RuntimeFailure("network", f"network {name} exists with subnet {have}, not {wanted}")
    return str(network["Id"])


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """The Engine's ``POST /containers/create`` body for ``spec``.

    Raises:
        RuntimeFailure: host networking with networks or ports, or a relative mount source.
    """
    if spec.network_mode == "host" and (spec.networks or spec.ports):
        raise RuntimeFailure("create", f"{spec.name}: host networking takes no networks or ports")
    binds = []
    for mount in spec.mounts:
        if not os.path.isabs(mount.source):  # a relative source would name a Docker volume
            raise RuntimeFailure(
                "create", f"{spec.name}: mount source {mount.source!r} is relative"
            )
        binds.append(f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}")
    port_bindings: dict[str, list[dict[str, str]]] = {}
    for port in spec.ports:
        port_bindings.setdefault(f"{port.container_port}/{port.protocol}", []).append(
            {
                "HostIp": port.host_ip or "",
                "HostPort": "" if port.host_port is None else str(port.host_port),
            }
        )
    network_mode = spec.network_mode or (spec.networks[0] if spec.networks else "bridge")
    config: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "Labels": dict(spec.labels),
        "ExposedPorts": {key: {} for key in port_bindings},
        "HostConfig": {
            "Binds": binds,
            "PortBindings": port_bindings,
            "NetworkMode": network_mode,
            "RestartPolicy": {"Name": "no"},  # Knit decides about restarts
        },
    }
    if spec.command is not None:
        config["Cmd"] = list(spec.command)
    if spec.healthcheck is not None:
        config["Healthcheck"] = healthcheck_config(spec.healthcheck)
    if spec.cpu is not None:
        config["HostConfig"]["NanoCpus"] = round(spec.cpu * 1e9)
    if spec.memory_bytes is not None:
        # No swap on top: above the limit the kernel kills the container (swap equal to
        # the memory limit; Docker's default would double it with swap).
        config["HostConfig"]["Memory"] = spec.memory_bytes
        config["HostConfig"]["MemorySwap"] = spec.memory_bytes
    return config


def healthcheck_config(check: HealthCheck) -> dict[str, Any]:
    """Docker's ``Healthcheck``: ``Test`` is the command if it starts with ``CMD`` or
    ``CMD-SHELL``, else ``["CMD", *command]``; times in nanoseconds."""
    command = list(check.command)
    test = command if command[0] in ("CMD", "CMD-SHELL") else ["CMD", *command]
    return {
        "Test": test,
        "Interval": _ns(check.interval),
        "Timeout": _ns(check.timeout),
        "Retries": check.retries,
        "StartPeriod": _ns(check.start_period),
    }


def _ns(seconds: float) -> int:
    return round(seconds * _NANOSECONDS)


def _health(value: object, running: bool) -> str:
    """A running container's health status as Knit names it ("none" when not running)."""
    status = str(value)
    return status if running and status in HEALTH_STATUSES else HEALTH_NONE


def _published(ports: Mapping[str, Any] | None) -> list[PublishedPort]:
    """From inspect's ``NetworkSettings.Ports``: {"80/tcp": [{"HostIp", "HostPort"}] | None}."""
    published = []
    for key, bindings in (ports or {}).items():
        number, _, proto = key.partition("/")
        for binding in bindings or []:
            published.append(
                PublishedPort(
                    container_port=int(number),
                    protocol=_protocol(proto),
                    host_ip=str(binding.get("HostIp", "")),
                    host_port=int(binding["HostPort"]),
                )
            )
    return published


def _protocol(value: str) -> PortProtocol:
    return "udp" if value == "udp" else "tcp"


def state_from_inspect(data: Mapping[str, Any]) -> ContainerState:
    """A container's state from ``GET /containers/{id}/json``."""
    state = data.get("State") or {}
    status = str(state.get("Status", "unknown"))
    config = data.get("Config") or {}
    return ContainerState(
        id=str(data["Id"]),
        name=str(data.get("Name", "")).lstrip("/"),
        labels=dict(config.get("Labels") or {}),
        state=status,
        exit_code=int(state.get("ExitCode", 0)) if status in ("exited", "dead") else None,
        image=str(config.get("Image", "")),
        ports=_published((data.get("NetworkSettings") or {}).get("Ports")),
        health=_health((state.get("Health") or {}).get("Status"), status == "running"),
    )


def state_from_list(data: Mapping[str, Any]) -> ContainerState:
    """A container's state from one entry of ``GET /containers/json``: the exit code and the
    health are read from its ``Status`` text ("Exited (3) 2 seconds ago", "Up 1 second
    (healthy)")."""
    names = data.get("Names") or [""]
    text = str(data.get("Status", ""))
    exited = _EXITED_STATUS.match(text)
    health = _HEALTH_STATUS.search(text)
    state = str(data.get("State", "unknown"))
    ports = [
        PublishedPort(
            container_port=int(p["PrivatePort"]),
            protocol=_protocol(str(p.get("Type", "tcp"))),
            host_ip=str(p.get("IP", "")),
            host_port=int(p["PublicPort"]),
        )
        for p in data.get("Ports") or []
        if p.get("PublicPort")
    ]
    return ContainerState(
        id=str(data["Id"]),
        name=str(names[0]).lstrip("/"),
        labels=dict(data.get("Labels") or {}),
        state=state,
        exit_code=int(exited.group(1)) if exited else None,
        image=str(data.get("Image", "")),
        ports=ports,
        health=_health(health.group(1) if health else None, state == "running"),
    )


def event_from_json(line: bytes) -> RuntimeEvent | None:
    """One line of ``GET /events`` as a container event; None for an unreadable line, another
    type of event, or an exec (health checks run as execs)."""
    try:
        data = json.loads(line)
    except ValueError:
        log.warning("skipping an unreadable Docker event (%d bytes)", len(line))
        return None
    if data.get("Type") != "container":
        return None
    actor = data.get("Actor") or {}
    attributes: dict[str, str] = dict(actor.get("Attributes") or {})
    exit_code = attributes.get("exitCode", "")
    # "health_status: healthy": the action, then its detail.
    action, _, detail = str(data.get("Action") or data.get("status", "")).partition(":")
    if action in _IGNORED_ACTIONS:
        return None
    return RuntimeEvent(
        container_id=str(actor.get("ID") or data.get("id", "")),
        action=action,
        labels={k: v for k, v in attributes.items() if k not in _EVENT_NON_LABEL_KEYS},
        exit_code=int(exit_code) if exit_code.lstrip("-").isdigit() else None,
        name=attributes.get("name", ""),
        detail=detail.strip(),
    )


__all__ = [
    "container_config",
    "event_from_json",
    "existing_network_id",
    "healthcheck_config",
    "state_from_inspect",
    "state_from_list",
]
