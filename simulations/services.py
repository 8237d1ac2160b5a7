"""The real service a simulation runs against: a ``knit server`` process, with its own
nats-server (embedded and supervised by the server, with credentials, as users run it).

Layer: simulations. Imports anyio, httpx, psutil, the standard library and ``knit.natsd``
(free ports). The server is a child process of the harness, on 127.0.0.1 only, stopped by
PID (SIGTERM, then SIGKILL) when the run ends; it stops its nats-server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
import psutil

from knit.errors import KnitError
from knit.natsd import free_port, wait_for_port

HOST = "127.0.0.1"


class ServiceError(KnitError):
    """A service did not start, or died."""


def _pdeathsig(command: list[str]) -> list[str]:
    """Have the child die with the harness (``setpriv --pdeathsig``), where available."""
    if shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL", "--", *command]
    return command


class ChildProcess:
    """A child process with its output in a log file; stopped by PID."""

    def __init__(self, name: str, command: list[str], log: Path) -> None:
        self.name = name
        self.command = command
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The running process's PID."""
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process (its output appends to the log)."""
        self._log_handle = open(self.log, "ab")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            _pdeathsig(self.command),
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ^C to the harness reaches the harness only
        )

    async def stop(self, grace: float) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit code.

        Shielded: cancellation of the caller still waits for the process to end.
        """
        process = self.process
        if process is None:
            return None
        with anyio.CancelScope(shield=True):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await anyio.to_thread.run_sync(process.wait, grace)
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await anyio.to_thread.run_sync(process.wait)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.process = None
        return process.returncode

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log (for an error message)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServerSample:
    """One sample of the server process."""

    rss_bytes: int
    cpu_s: float


class ServerProcess(ChildProcess):
    """``python -m knit.cli server`` with its own data dir and its own (embedded, supervised)
    nats-server on a free port: the bus the agents join, with credentials. Its store is
    SQLite in the data dir, or the database at ``database_url`` (``--database-url``)."""

    def __init__(
        self, log_dir: Path, data_dir: Path, node_ttl: float, database_url: str | None = None
    ) -> None:
        self.port = free_port(HOST)
        self.nats_port = free_port(HOST)
        command = [
            sys.executable,
            "-m",
            "knit.cli",
            "--log-level",
            "WARNING",
            "server",
            "--http",
            f"{HOST}:{self.port}",
            "--data-dir",
            str(data_dir),
            "--nats-listen",
            f"{HOST}:{self.nats_port}",
            "--node-ttl",
            f"{node_ttl:g}",
        ]
        if database_url is not None:
            command += ["--database-url", database_url]
        super().__init__("knit server", command, log_dir / "server.log")
        self._ps: psutil.Process | None = None

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://{HOST}:{self.port}"

    async def start(self, timeout: float) -> None:
        """Start it and wait until ``GET /healthz`` answers.

        Raises:
            ServiceError: it exited, or did not answer within ``timeout`` seconds.
        """
        self.spawn()
        self._ps = psutil.Process(self.pid)
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            with anyio.move_on_after(timeout):
                while self.running:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get("/healthz")).status_code == 200:
                            return
                    await anyio.sleep(0.1)
        raise ServiceError(f"knit server did not answer in time:\n{self.tail()}")

    @property
    def nats_url(self) -> str:
        """The embedded nats-server's URL."""
        return f"nats://{HOST}:{self.nats_port}"

    def nats_pid(self) -> int | None:
        """The process id of the server's nats-server child, if one runs."""
        if self._ps is None:
            return None
        with contextlib.suppress(psutil.Error):
            for child in self._ps.children(recursive=True):
                if child.name() == "nats-server":
                    return int(child.pid)
        return None

    async def kill_nats(self, timeout: float) -> int:
        """SIGKILL the server's nats-server and wait until the server runs a new one.

        Returns the new one's process id.

        Raises:
            ServiceError: there was none, or no new one within ``timeout`` seconds.
        """
        old = self.nats_pid()
        if old is None:
            raise ServiceError("the server runs no nats-server")
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGKILL)
        with anyio.move_on_after(timeout):
            while True:
                new = self.nats_pid()
                if new not in (None, old):
                    await wait_for_port(HOST, self.nats_port, timeout=timeout)
                    return new
                await anyio.sleep(0.05)
        raise ServiceError("the server did not start its nats-server again in time")

    def sample(self) -> ServerSample | None:
        """Resident memory and CPU time used so far; None once it is gone."""
        if self._ps is None:
            return None
        try:
            with self._ps.oneshot():
                cpu = self._ps.cpu_times()
                return ServerSample(self._ps.memory_info().rss, cpu.user + cpu.system)
        except psutil.Error:
            return None


async def make_join_token(http: httpx.AsyncClient, uses: int) -> str:
    """A join token for ``uses`` agents, made through the API (with the admin token).

    Raises:
        httpx.HTTPError: the request failed or was refused.
    """
    response = await http.post("/join-tokens", json={"uses": uses, "ttl": 6 * 3600})
    response.raise_for_status()
    return str(response.json()["token"])


async def get_json(http: httpx.AsyncClient, path: str) -> Any:
    """GET a JSON document.

    Raises:
        httpx.HTTPError: the request failed or the status is not 2xx.
    """
    response = await http.get(path)
    response.raise_for_status()
    return response.json()
