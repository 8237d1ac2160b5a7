"""Knit's WireGuard mesh on a LAN of hosts (``tests.support.hosts``): ``knit server
--mesh-cidr`` on one host, ``knit agent --mesh-endpoint`` on others, as users run them.

Interface names must be unique on the machine (wireguard-go keeps its sockets in one
folder for every namespace): :func:`interface_of` derives one from the LAN's tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tests.support.hosts import Host, Lan
from tests.support.knit_processes import KnitAgent, KnitServer

WG_PORT = 51820
"""The WireGuard UDP port of every member."""


def interface_of(lan: Lan, host: Host, prefix: str = "kw") -> str:
    """``host``'s WireGuard interface name: at most 15 characters, unique per LAN."""
    return f"{prefix}{host.index}{lan.tag}"[:15]


def mesh_server(lan: Lan, host: Host, workdir: Path, cidr: str, prefix: str = "kw") -> KnitServer:
    """``knit server --mesh-cidr cidr`` on ``host`` (its API on the host's LAN address)."""
    return KnitServer(
        workdir,
        host.docker_host,
        address=host.address,
        netns=host.netns,
        extra_args=[
            "--mesh-cidr",
            cidr,
            "--mesh-endpoint",
            f"{host.address}:{WG_PORT}",
            "--mesh-interface",
            interface_of(lan, host, prefix),
        ],
    )


def mesh_agent(
    lan: Lan,
    host: Host,
    workdir: Path,
    server_url: str | None,
    token: str | None,
    *,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    prefix: str = "kw",
) -> KnitAgent:
    """``knit agent --mesh-endpoint HOST:51820`` on ``host``, named after it; it joins with
    ``token`` on its first start (None: a later start, from its data dir)."""
    return KnitAgent(
        workdir,
        host.docker_host,
        name=name or f"agent-{host.name}",
        server_url=server_url if token else None,
        join_token=token,
        labels=labels,
        extra_args=[
            "--hostname",
            host.name,
            "--mesh-endpoint",
            f"{host.address}:{WG_PORT}",
            "--mesh-interface",
            interface_of(lan, host, prefix),
        ],
        netns=host.netns,
    )
