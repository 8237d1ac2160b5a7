"""The real services a simulation runs against: a nats-server and a ``knit server`` process.

Layer: simulations. Imports anyio, httpx, psutil, the standard library and ``knit.natsd``
(the nats-server binary, free ports). Both are child processes of the harness, on 127.0.0.1
only, stopped by PID (SIGTERM, then SIGKILL) when the run ends.
"""

from __future__ import annotations

import contextlib
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
from knit.natsd import find_nats_server, free_port, wait_for_port

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


class NatsProcess(ChildProcess):
    """nats-server on a free 127.0.0.1 port, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port(HOST)
        command = [find_nats_server(), "-a", HOST, "-p", str(self.port), "-n", "knit-sim"]
        super().__init__("nats-server", command, workdir / "nats-server.log")

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://{HOST}:{self.port}"

    async def start(self, timeout: float) -> None:
        """Start it and wait until it accepts connections.

        Raises:
            ServiceError: it did not listen within ``timeout`` seconds.
        """
        self.spawn()
        try:
            await wait_for_port(HOST, self.port, timeout=timeout)
        except TimeoutError:
            raise ServiceError(f"nats-server did not listen in time:\n{self.tail()}") from None

    async def restart(self, timeout: float) -> None:
        """Stop it, then start it again on the same port."""
        await self.stop(grace=5)
        await self.start(timeout)


@dataclass
class ServerSample:
    """One sample of the server process."""

    rss_bytes: int
    cpu_s: float


class ServerProcess(ChildProcess):
    """``python -m knit.cli server`` with its own data dir, against the harness's NATS."""

    def __init__(self, log_dir: Path, data_dir: Path, nats_url: str, node_ttl: float) -> None:
        self.port = free_port(HOST)
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
            "--nats",
            nats_url,
            "--node-ttl",
            f"{node_ttl:g}",
        ]
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


async def get_json(http: httpx.AsyncClient, path: str) -> Any:
    """GET a JSON document.

    Raises:
        httpx.HTTPError: the request failed or the status is not 2xx.
    """
    response = await http.get(path)
    response.raise_for_status()
    return response.json()
