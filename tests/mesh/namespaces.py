"""Two network namespaces joined by a veth pair, for WireGuard between them.

The namespaces, veths, interfaces and UAPI sockets carry per-test names and are removed after
each test, whatever happens; any process still inside a test's namespaces is killed by PID.
Traffic stays inside them: ``VETH_A`` and ``VETH_B`` exist only there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from knit.mesh.wireguard import UAPI_DIR
from tests.support import require

VETH_A = "192.168.237.1"  # only ever inside the test's own namespaces
VETH_B = "192.168.237.2"


def ping_command() -> list[str] | None:
    """``ping``, or busybox's (this machine has no ``ping``)."""
    if shutil.which("ping"):
        return ["ping"]
    if shutil.which("busybox"):
        return ["busybox", "ping"]
    return None


def require_wireguard() -> None:
    """Fail (CI) or skip unless root, ``/dev/net/tun``, wireguard-go, ``wg`` and ``ip``."""
    require(os.geteuid() == 0, "network namespaces and tun devices need root")
    require(Path("/dev/net/tun").exists(), "no /dev/net/tun")
    for tool, package in (("wireguard-go", "wireguard-go"), ("wg", "wireguard-tools")):
        require(shutil.which(tool) is not None, f"no {tool}: apt-get install {package}")
    require(shutil.which("ip") is not None, "no ip: apt-get install iproute2")


def ip(*args: str) -> None:
    """Run ``ip ARGS`` (raises on failure)."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def remove_namespace(netns: str) -> None:
    """Kill what runs in ``netns`` (by PID) and delete it."""
    pids = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10
    ).stdout.split()
    for pid in pids:  # only processes in this test's own namespace
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)


async def output(*command: str) -> str:
    """What ``command`` prints."""
    return (await anyio.run_process(list(command))).stdout.decode()


@dataclass
class Pair:
    """Two fresh namespaces joined by a veth pair, with names for a WireGuard link in each."""

    netns_a: str
    netns_b: str
    wg_a: str
    wg_b: str
    mesh_a: str
    mesh_b: str


@contextlib.contextmanager
def namespace_pair() -> Iterator[Pair]:
    """Namespaces A and B joined by a veth (``VETH_A``/30 in A, ``VETH_B``/30 in B)."""
    require_wireguard()
    tag = uuid.uuid4().hex[:8]
    subnet = int(tag[:2], 16)
    made = Pair(
        netns_a=f"knit-wga-{tag}",
        netns_b=f"knit-wgb-{tag}",
        wg_a=f"kwa{tag}",
        wg_b=f"kwb{tag}",
        mesh_a=f"10.237.{subnet}.1",
        mesh_b=f"10.237.{subnet}.2",
    )
    try:
        ip("netns", "add", made.netns_a)
        ip("netns", "add", made.netns_b)
        veth_a, veth_b = f"kva{tag}", f"kvb{tag}"
        ip("link", "add", veth_a, "netns", made.netns_a, "type", "veth",
           "peer", "name", veth_b, "netns", made.netns_b)  # fmt: skip
        for netns, veth, address in (
            (made.netns_a, veth_a, VETH_A),
            (made.netns_b, veth_b, VETH_B),
        ):
            ip("-n", netns, "address", "add", f"{address}/30", "dev", veth)
            ip("-n", netns, "link", "set", veth, "up")
            ip("-n", netns, "link", "set", "lo", "up")
        yield made
    finally:
        remove_namespace(made.netns_a)
        remove_namespace(made.netns_b)
        for name in (made.wg_a, made.wg_b):
            (UAPI_DIR / f"{name}.sock").unlink(missing_ok=True)
