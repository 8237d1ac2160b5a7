"""Network namespaces for tests: made with ``ip netns``, entered with ``nsenter``, emptied by PID.

Layer: test support. Imports the standard library and psutil only.

A command runs inside a namespace as ``nsenter --net=/run/netns/NAME COMMAND``, not ``ip netns
exec``: the latter also unshares the mount namespace and remounts /sys, which hides the cgroup
mounts a ``dockerd`` needs. ``nsenter --net`` does not fork, so the PID of the ``Popen`` is the
PID of the command itself.

Removing a namespace (``ip netns del``) only unmounts its name: it lives on while a process is
inside. ``kill_namespace`` therefore kills every process in it, and their descendants (the
processes of Docker containers live in namespaces of their own, below a shim that lives here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

NETNS_DIR = Path("/run/netns")
"""Where ``ip netns add`` mounts a namespace's name."""


class NetnsError(RuntimeError):
    """An ``ip`` or ``nsenter`` command failed; the message holds the command and its stderr."""


def ip(*args: str, netns: str | None = None, timeout: float = 10.0) -> str:
    """Run ``ip [-n NETNS] ARGS``; return its stdout.

    Raises:
        NetnsError: the command failed or timed out.
    """
    command = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(command)}: timed out after {timeout:g} s") from exc
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def nsenter(netns: str, command: Sequence[str]) -> list[str]:
    """``command`` prefixed to run inside the network namespace ``netns``."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *command]


def with_pdeathsig(command: Sequence[str]) -> list[str]:
    """``command`` prefixed with ``setpriv --pdeathsig TERM`` (where setpriv exists), so the
    child gets SIGTERM if the test run dies."""
    if shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "TERM", "--", *command]
    return list(command)


def namespaces() -> set[str]:
    """The names of the network namespaces in /run/netns."""
    try:
        return {path.name for path in NETNS_DIR.iterdir()}
    except FileNotFoundError:
        return set()


def namespace_pids(netns: str) -> list[int]:
    """The PIDs of the processes inside ``netns`` (``ip netns pids``; [] if it is gone)."""
    done = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10
    )
    return [int(pid) for pid in done.stdout.split()]


def kill_namespace(netns: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process inside ``netns`` and all their descendants; wait until they are
    gone (or zombies: their parent reaps them, not us). Return the PIDs still alive after
    ``timeout`` seconds ([] normally).

    Only processes found inside this namespace, or below one, are signalled.
    """
    victims: dict[int, psutil.Process] = {}
    for pid in namespace_pids(netns):
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            victims[pid] = process
            for child in process.children(recursive=True):
                victims[child.pid] = child
    for process in victims.values():
        with contextlib.suppress(psutil.Error):
            process.kill()  # checks the PID still names the process found above
    deadline = time.monotonic() + timeout
    alive = list(victims.values())
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    return [p.pid for p in alive]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def delete_namespace(netns: str) -> None:
    """Kill what runs in ``netns`` (``kill_namespace``), then delete it (no error if absent).

    Raises:
        NetnsError: a process survived SIGKILL, or ``ip netns del`` failed.
    """
    if netns not in namespaces():
        return
    survivors = kill_namespace(netns)
    if survivors:
        raise NetnsError(f"processes {survivors} in {netns} survived SIGKILL")
    ip("netns", "del", netns)


def mounts_under(folder: Path) -> list[str]:
    """The mount points at or below ``folder``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(folder).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # The mount point is the fifth field, with spaces and such escaped as \040 (octal).
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_under(folder: Path) -> None:
    """Unmount everything mounted at or below ``folder`` (overlay layers, namespace files).

    Raises:
        NetnsError: a mount point could not be unmounted.
    """
    for point in mounts_under(folder):
        done = subprocess.run(["umount", point], capture_output=True, text=True, timeout=30)
        if done.returncode != 0 and point in mounts_under(folder):
            lazy = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
            if lazy.returncode != 0:
                raise NetnsError(f"umount {point}: {done.stderr.strip()}")


def netns_problem() -> str | None:
    """Why network namespaces with veths cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "nsenter", "umount") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 util-linux)"
    return None
