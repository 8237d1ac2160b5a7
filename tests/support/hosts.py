"""A LAN of "hosts" for multi-host tests: network namespaces on one switch, each with its own
address and its own ``dockerd``, all removed afterwards.

Layer: test support. Imports the standard library, psutil and ``tests.support``.

The topology (TAG is six hex digits, X a free /24 of 172.31.0.0/16)::

    root namespace (the test)        switch namespace knsw-TAG
      knr-TAG 172.31.X.1  ─── veth ─── uplink ─┐
                                              knb-TAG (bridge)
    host1 = namespace knh1-TAG                 │
      eth0 172.31.X.11    ─── veth ─── h1 ─────┤
    host2, host3...        (.12, .13...)       │

The bridge lives in a namespace of its own, not in the root namespace: there, frames bridged
between two hosts cross the root's iptables FORWARD chain (``br_netfilter`` is loaded), whose
policy is DROP under the machine's Docker, and every ping between hosts is lost (measured).
The switch namespace has an empty firewall. The root namespace joins the LAN through a veth of
its own, so the test process reaches every host at ``Host.address`` and every host reaches the
test at ``Lan.gateway``.

Hosts have no default route: every packet of a test stays on the LAN, and one sent anywhere else
fails at once ("network unreachable") instead of being handed to the root namespace, which
forwards toward the machine's own network.

Each host's ``dockerd`` keeps its iptables rules (they live in the host's namespace, not the
machine's): a published port is DNATed from ``Host.address``, and what containers send to other
hosts is masqueraded behind ``Host.address`` (unmasqueraded, the other host would answer a
container subnet it has no route to). Each host's default bridge gets its own subnet
(``--bip 172.30.1N.1/24``), so container addresses differ between hosts.

Start a process on a host with ``Host.popen`` (or ``Host.run`` to completion), or give a
``KnitProcess`` the host's namespace::

    with open_lan(3) as lan:
        server_host, agent_host = lan.hosts[0], lan.hosts[1]
        server = KnitServer(workdir, server_host.docker_host, address=server_host.address,
                            netns=server_host.netns)
        server.start_and_wait()            # the API at http://172.31.X.11:PORT
        agent_host.run(["busybox", "ping", "-c", "1", server_host.address])
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import psutil

from tests.support.docker import (
    BUSYBOX_IMAGE,
    docker,
    docker_host_from_env,
    ensure_busybox_image,
    file_lock,
    find_static_busybox,
)
from tests.support.dockerd import Dockerd, init_binary
from tests.support.netns import (
    delete_namespace,
    ip,
    mounts_under,
    namespaces,
    netns_problem,
    nsenter,
    unmount_under,
    with_pdeathsig,
)

T = TypeVar("T")

LAN_SUPERNET = ipaddress.IPv4Network("172.31.0.0/16")
"""The /24 of each LAN is picked in here, among those not routed on this machine."""
HOST_OFFSET = 10
"""Host N gets address .(10 + N) of the LAN."""
LAN_FOLDERS = Path("/tmp")
"""Where each LAN's folder (``knl-TAG``) is made."""
OWNER_FILE = "owner"
"""In a LAN's folder: the PID and start time of the process that made it."""
_SUBNET_LOCK = Path("/tmp/knit-test-lan.lock")
"""Two test runs choosing a subnet at once take turns (a chosen subnet is routed at once)."""


class HarnessError(RuntimeError):
    """The LAN could not be built, or not entirely removed; the message says what."""


class HostCommandError(HarnessError):
    """A command run on a host exited with an error; the message holds its output."""


def lan_problem() -> str | None:
    """Why no LAN of hosts can be built here (not root, a tool missing, iptables not working
    in a namespace), or None."""
    problem = netns_problem()
    if problem is not None:
        return problem
    if not Path("/dev/net/tun").exists():  # the mesh's WireGuard (wireguard-go) on the hosts
        return "no /dev/net/tun"
    tools = ("dockerd", "docker", "iptables", "unshare", "setpriv")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if init_binary() is None:
        missing.append("docker-init or tini")
    if missing:
        return f"missing {', '.join(missing)} (scripts/setup.sh installs them)"
    if find_static_busybox() is None:
        return "no static busybox: apt-get install busybox-static"
    done = subprocess.run(
        ["unshare", "--net", "--", "iptables", "-t", "nat", "-S"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        return f"iptables does not work in a network namespace: {done.stderr.strip()}"
    return None


def in_parallel(work: Callable[[T], object], items: Iterable[T]) -> None:
    """Run ``work(item)`` for every item, each on a thread; wait for all of them.

    Raises:
        Exception: the first item's exception, once every thread has finished.
    """
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(work, item) for item in items]
    for future in futures:
        future.result()


class Host:
    """One host of a ``Lan``: a network namespace with an address on the LAN and a ``dockerd``.

    Made by ``Lan.add_hosts``. Its files (the Engine's data root, socket and log) live under
    ``root``; the processes started with ``popen`` are stopped when the LAN closes.

    Attributes:
        index: 1 for ``host1``...
        name: ``host1``, ``host2``...
        netns: its network namespace (``knh1-TAG``).
        address: its address on the LAN (``172.31.X.11``).
        root: its folder (``/tmp/knl-TAG/h1``).
        engine: its ``dockerd``.
        processes: what ``popen`` started.
    """

    def __init__(self, lan: Lan, index: int) -> None:
        self.index = index
        self.name = f"host{index}"
        self.netns = f"knh{index}-{lan.tag}"
        self.address = str(lan.subnet.network_address + HOST_OFFSET + index)
        self.root = lan.root / f"h{index}"
        bip = f"172.30.{HOST_OFFSET + index}.1/24"
        self.engine = Dockerd(self.netns, self.root, flags=["--bip", bip])
        self.processes: list[subprocess.Popen[bytes]] = []

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.address}, netns={self.netns})"

    @property
    def docker_host(self) -> str:
        """Its Engine's DOCKER_HOST: ``unix:///tmp/knl-TAG/hN/docker.sock``."""
        return self.engine.docker_host

    def command(self, args: Sequence[str]) -> list[str]:
        """``args`` prefixed to run inside this host's namespace (``nsenter --net``), with
        SIGTERM if the test run dies (``setpriv --pdeathsig``)."""
        return with_pdeathsig(nsenter(self.netns, args))

    def run(
        self, args: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` inside this host's namespace to completion; return its exit code,
        stdout and stderr.

        Raises:
            HostCommandError: with ``check``, it exited with an error.
            subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds (then killed).
        """
        done = subprocess.run(
            self.command(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise HostCommandError(
                f"{self.name}: {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def popen(
        self,
        args: Sequence[str],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` inside this host's namespace, its output appended to ``log``
        (discarded without one). It is stopped (SIGTERM, then SIGKILL) when the LAN closes,
        unless it has exited by then.

        Start it from the thread that outlives it: the parent-death signal may follow the
        thread that started the process.
        """
        out = log.open("ab") if log is not None else None
        try:
            process = subprocess.Popen(
                self.command(args),
                stdin=subprocess.DEVNULL,
                stdout=out or subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
            )
        finally:
            if out is not None:
                out.close()
        self.processes.append(process)
        return process

    def docker(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``docker ARGS`` against this host's Engine; return its stdout.

        Raises:
            DockerCLIError: the command failed.
        """
        return docker(*args, docker_host=self.docker_host, timeout=timeout)

    def stop_processes(self, timeout: float = 10.0) -> None:
        """Stop the processes started with ``popen``: SIGTERM, then SIGKILL."""
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()


class Lan:
    """Hosts on one switch, and the root namespace attached to it (see the module's doc).

    ``open()`` chooses the subnet and builds the switch, ``add_hosts()`` adds started hosts,
    ``close()`` removes everything either made, whatever state it was left in. ``open_lan``
    does all three.

    Args:
        tag: the tag of a LAN left behind, to close it (default: a new one).

    Attributes:
        tag: the six hex digits in the name of everything it makes.
        root: its folder (``/tmp/knl-TAG``): one per host, and the image archive.
        switch: the switch's network namespace (``knsw-TAG``).
        bridge: the switch's bridge (``knb-TAG``), inside ``switch``.
        uplink: the root namespace's interface on the LAN (``knr-TAG``).
        hosts: the hosts, in order (``hosts[0]`` is ``host1``).
    """

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or uuid.uuid4().hex[:6]
        self.root = LAN_FOLDERS / f"knl-{self.tag}"
        self.switch = f"knsw-{self.tag}"
        self.bridge = f"knb-{self.tag}"
        self.uplink = f"knr-{self.tag}"
        self.hosts: list[Host] = []
        self._subnet: ipaddress.IPv4Network | None = None
        self._archive: Path | None = None

    def __repr__(self) -> str:
        return f"Lan({self.tag}, {self._subnet}, hosts={[h.name for h in self.hosts]})"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        """The LAN's /24.

        Raises:
            HarnessError: the LAN is not open.
        """
        if self._subnet is None:
            raise HarnessError("the LAN is not open")
        return self._subnet

    @property
    def gateway(self) -> str:
        """The root namespace's address on the LAN (``172.31.X.1``): where hosts reach the
        test process."""
        return str(self.subnet.network_address + 1)

    def open(self) -> None:
        """Make the folder, choose a free /24, build the switch and attach the root to it.

        Raises:
            HarnessError: no /24 of ``LAN_SUPERNET`` is free here.
            NetnsError: an ``ip`` command failed.
        """
        self.root.mkdir(mode=0o755)
        me = psutil.Process()
        (self.root / OWNER_FILE).write_text(f"{me.pid} {me.create_time()}\n")
        ip("netns", "add", self.switch)
        ip("link", "set", "lo", "up", netns=self.switch)
        ip("link", "add", self.bridge, "type", "bridge", netns=self.switch)
        ip("link", "set", self.bridge, "up", netns=self.switch)
        ip("link", "add", self.uplink, "type", "veth", "peer", "name", "uplink",
           "netns", self.switch)  # fmt: skip
        ip("link", "set", "uplink", "master", self.bridge, "up", netns=self.switch)
        with file_lock(_SUBNET_LOCK):
            self._subnet = free_subnet()
            ip("address", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.uplink)
        ip("link", "set", self.uplink, "up")

    def add_hosts(
        self,
        count: int,
        *,
        images: Sequence[str] = (BUSYBOX_IMAGE,),
        source: str | None = None,
        timeout: float = 60.0,
    ) -> list[Host]:
        """Add ``count`` hosts, their Engines started at once, each holding ``images``.

        Args:
            images: images copied from the Engine at ``source`` (``docker save`` once, then
                ``docker load`` into each host); the busybox test image is imported there
                first if it is missing.
            source: a DOCKER_HOST (default: ``$DOCKER_HOST`` or the machine's socket).
            timeout: seconds each Engine may take to answer.

        Raises:
            NetnsError: an ``ip`` command failed.
            AssertionError: a dockerd exited or did not answer in time.
            DockerCLIError: an image could not be saved or loaded.
        """
        archive = self._image_archive(images, source) if images else None
        added = []
        for _ in range(count):
            host = Host(self, len(self.hosts) + 1)
            self.hosts.append(host)
            added.append(host)
            self._plug(host)
        for host in added:  # from this thread: see Dockerd.spawn
            host.engine.spawn()

        def ready(host: Host) -> None:
            host.engine.wait_ready(timeout)
            if archive is not None:
                host.docker("load", "--input", str(archive), timeout=timeout)

        in_parallel(ready, added)
        return added

    def _plug(self, host: Host) -> None:
        """Make the host's namespace and wire it to the switch."""
        ip("netns", "add", host.netns)
        ip("link", "set", "lo", "up", netns=host.netns)
        port = f"h{host.index}"
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.netns,
           netns=self.switch)  # fmt: skip
        ip("link", "set", port, "master", self.bridge, "up", netns=self.switch)
        ip("address", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0",
           netns=host.netns)  # fmt: skip
        ip("link", "set", "eth0", "up", netns=host.netns)

    def _image_archive(self, images: Sequence[str], source: str | None) -> Path:
        """``docker save`` of ``images`` from the Engine at ``source``, made once per LAN."""
        if self._archive is None:
            source = source or docker_host_from_env()
            if BUSYBOX_IMAGE in images:
                ensure_busybox_image(source, BUSYBOX_IMAGE)
            archive = self.root / "images.tar"
            docker("save", "--output", str(archive), *images, docker_host=source, timeout=120)
            self._archive = archive
        return self._archive

    def close(self) -> None:
        """Remove everything the LAN made, whatever state it is in: stop the hosts' processes,
        remove their containers, stop their Engines (all hosts at once), kill whatever is
        left in the namespaces, delete the namespaces (with them go the veths and the
        bridge), unmount and delete the folder. Idempotent.

        Raises:
            HarnessError: something could not be removed (every other step still ran).
        """
        errors: list[str] = []

        def attempt(what: str, step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(f"{what}: {exc}")

        def stop(host: Host) -> None:
            attempt(f"{host.name}'s processes", host.stop_processes)
            attempt(f"{host.name}'s Engine", host.engine.close)

        in_parallel(stop, self.hosts)
        # Deleting a veth deletes its peer at once; a namespace's interfaces go later, when
        # the kernel gets round to destroying it: the root's own interface goes first.
        if self.uplink in root_links():
            attempt(self.uplink, lambda: ip("link", "del", self.uplink))
        for netns in sorted(n for n in namespaces() if n.endswith(f"-{self.tag}")):
            if netns.startswith(("knh", "knsw")):
                attempt(netns, functools.partial(delete_namespace, netns))
        attempt(str(self.root), lambda: unmount_under(self.root))
        if self.root.exists():
            attempt(str(self.root), lambda: shutil.rmtree(self.root))
        if errors:
            raise HarnessError("the LAN was not entirely removed:\n" + "\n".join(errors))

    def traces(self) -> list[str]:
        """What of this LAN is still on the machine: namespaces, root interfaces, processes
        or mounts naming its folder, the folder itself. [] after ``close()``."""
        return traces_of(self.tag)


def traces_of(tag: str) -> list[str]:
    """What any LAN tagged ``tag`` left on the machine ([] when nothing)."""
    root = str(LAN_FOLDERS / f"knl-{tag}")
    found = [f"namespace {n}" for n in sorted(namespaces()) if n.endswith(f"-{tag}")]
    found += [f"interface {name}" for name in root_links() if name.endswith(f"-{tag}")]
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if root in cmdline:
            found.append(f"process {process.info['pid']}: {cmdline[:120]}")
    found += [f"mount {point}" for point in mounts_under(Path(root))]
    if Path(root).exists():
        found.append(f"folder {root}")
    return found


def sweep_abandoned_lans() -> list[str]:
    """Remove the LANs whose maker died without closing them (a test run killed by SIGKILL):
    those whose folder names a process that no longer runs. Return their tags.

    Raises:
        HarnessError: one could not be entirely removed.
    """
    swept = []
    for folder in sorted(LAN_FOLDERS.glob("knl-*")):
        try:
            pid, started = (folder / OWNER_FILE).read_text().split()
            owner_alive = psutil.Process(int(pid)).create_time() == float(started)
        except psutil.NoSuchProcess:
            owner_alive = False
        except (OSError, ValueError):
            continue  # being made right now, or not a LAN's
        if not owner_alive:
            tag = folder.name.removeprefix("knl-")
            Lan(tag).close()
            swept.append(tag)
    return swept


def root_links() -> list[str]:
    """The names of the root namespace's network interfaces."""
    return [link["ifname"] for link in json.loads(ip("-json", "link", "show"))]


def routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 destination routed on this machine (all tables), without the default."""
    networks = []
    for route in json.loads(ip("-json", "-4", "route", "show", "table", "all")):
        dst = route.get("dst", "default")
        if dst != "default":
            networks.append(ipaddress.IPv4Network(dst, strict=False))
    return networks


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of ``LAN_SUPERNET`` that overlaps no route of this machine, picked at random.

    Raises:
        HarnessError: every one of them is taken.
    """
    taken = routed_networks()
    candidates = list(LAN_SUPERNET.subnets(new_prefix=24))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(network) for network in taken):
            return subnet
    raise HarnessError(f"every /24 of {LAN_SUPERNET} is routed on this machine already")


@contextlib.contextmanager
def open_lan(
    hosts: int = 3, *, images: Sequence[str] = (BUSYBOX_IMAGE,), source: str | None = None
) -> Iterator[Lan]:
    """A LAN of ``hosts`` started hosts holding ``images``; everything removed on exit, also
    when the block raises or the set-up itself fails halfway.

    Raises:
        NetnsError, AssertionError, DockerCLIError: the set-up failed (see ``Lan.open`` and
            ``Lan.add_hosts``).
        HarnessError: something could not be removed.
    """
    lan = Lan()
    try:
        lan.open()
        lan.add_hosts(hosts, images=images, source=source)
        yield lan
    finally:
        lan.close()
