"""One WireGuard interface, kernel or userspace (wireguard-go), driven with ``wg`` and ``ip``.

Layer: adapter for the control-plane mesh (spec section 6). Imports anyio and the standard
library; from Knit only ``knit.errors`` and ``knit.mesh.keys``.
Given a network namespace, every command runs under ``ip netns exec NETNS``. Keys are secrets:
they are never logged nor put on a command line; the private key reaches ``wg`` on its standard
input (``/dev/stdin``).

Two backends make the link; ``wg`` and ``ip`` configure both the same way:

- ``kernel``: ``ip link add NAME type wireguard`` (the Linux module);
- ``userspace``: a ``wireguard-go`` child process, whose tun device goes with it.

``auto`` (the default) probes: it tries the kernel's link first and falls back to wireguard-go
when the kernel does not know the type (``Unknown device type``, as on machines without the
module). The tests here run the userspace path: the development machines have no module.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import anyio
import anyio.abc

from knit.errors import KnitError
from knit.mesh.keys import decode_key, public_key

__all__ = ["Backend", "MeshError", "Peer", "PeerStatus", "WireGuardInterface"]

logger = logging.getLogger(__name__)

UAPI_DIR = Path("/var/run/wireguard")
START_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0
PREDECESSOR_WAIT = 3.0
"""Seconds ``up()`` waits for the interface of a killed predecessor to go away."""
# Linux allows 15 bytes; we also refuse a leading "-" so a name is never read as an option.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]{0,14}")

Backend = Literal["auto", "kernel", "userspace"]
"""Which WireGuard makes the link (see the module's docstring)."""


class MeshError(KnitError):
    """A WireGuard command failed, or wireguard-go would not start.

    ``command`` is the argument list that failed (it never holds a private key) and ``stderr``
    what it printed.
    """

    def __init__(self, message: str, command: Sequence[str] = (), stderr: str = "") -> None:
        detail = f"{message}: {' '.join(command)}" if command else message
        if stderr.strip():
            detail += f": {stderr.strip()}"
        super().__init__(detail)
        self.command = tuple(command)
        self.stderr = stderr


@dataclass(frozen=True)
class Peer:
    """A peer as configured: its key, the addresses routed to it, where to reach it.

    Attributes:
        public_key: the peer's base64 public key.
        allowed_ips: CIDRs routed to, and accepted from, the peer (``("10.99.0.3/32",)``).
        endpoint: ``host:port`` (``[v6]:port``) to reach it at; None to wait for it to call.
        keepalive: seconds between persistent keepalives; None for none.
    """

    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None = None
    keepalive: int | None = 25

    def __post_init__(self) -> None:
        decode_key(self.public_key, "peer public key")
        for cidr in self.allowed_ips:
            ipaddress.ip_network(cidr, strict=False)
        if self.endpoint is not None and not re.fullmatch(r"[^\s-]\S*:\d+", self.endpoint):
            raise ValueError(f"endpoint {self.endpoint!r} is not host:port")
        if self.keepalive is not None and not 0 < self.keepalive <= 65535:
            raise ValueError(f"keepalive {self.keepalive} is not in 1..65535")


@dataclass(frozen=True)
class PeerStatus:
    """A peer as the interface sees it (``wg show NAME dump``).

    Attributes:
        public_key: the peer's base64 public key.
        endpoint: where its last packet came from (or the configured endpoint); None if unknown.
        allowed_ips: its allowed IPs.
        latest_handshake: when the last handshake completed (UTC); None if never.
        rx_bytes: bytes received from it.
        tx_bytes: bytes sent to it.
    """

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: datetime | None
    rx_bytes: int
    tx_bytes: int


class WireGuardInterface:
    """One WireGuard interface: a kernel link, or a wireguard-go process child of this one.

    ``async with WireGuardInterface(...) as wg:`` is ``up()`` then, on leaving, ``down()``.
    """

    def __init__(
        self,
        name: str,
        private_key: str,
        address: str,
        listen_port: int,
        *,
        netns: str | None = None,
        backend: Backend = "auto",
    ) -> None:
        """Describe the interface; nothing is started until ``up()``.

        Args:
            name: interface name, at most 15 characters; also names the UAPI socket.
            private_key: base64 private key (a secret: never logged).
            address: the interface's mesh address with its prefix, e.g. ``"10.99.0.2/24"``.
            listen_port: UDP port to listen on (0: let WireGuard choose).
            netns: network namespace (``ip netns``) to run in; None for the current one.
            backend: ``kernel``, ``userspace`` (wireguard-go) or ``auto``: the kernel's if
                it knows the link type, wireguard-go otherwise.

        Raises:
            ValueError: a malformed name, key, address, port or namespace.
        """
        if not _NAME.fullmatch(name):
            raise ValueError(f"interface name {name!r} is not 1-15 of A-Z a-z 0-9 _ . = + -")
        decode_key(private_key, "private key")
        if "/" not in address:
            raise ValueError(f"address {address!r} has no prefix length (like 10.99.0.2/24)")
        ipaddress.ip_interface(address)
        if not 0 <= listen_port <= 65535:
            raise ValueError(f"listen port {listen_port} is not in 0..65535")
        if netns is not None and not re.fullmatch(r"[^/\s-][^/\s]*", netns):
            raise ValueError(f"network namespace {netns!r} is not a valid name")
        self.name = name
        self.address = address
        self.listen_port = listen_port
        self.netns = netns
        self.backend = backend
        self._private_key = private_key
        self._process: anyio.abc.Process | None = None
        self._kernel_link = False  # this object made a kernel link that is there now
        self._workdir: Path | None = None

    @property
    def public_key(self) -> str:
        """The interface's base64 public key."""
        return public_key(self._private_key)

    @property
    def socket_path(self) -> Path:
        """wireguard-go's UAPI socket (one directory for every network namespace)."""
        return UAPI_DIR / f"{self.name}.sock"

    async def __aenter__(self) -> Self:
        await self.up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.down()

    @property
    def kernel(self) -> bool:
        """Whether the interface is up as a kernel link (False: down, or wireguard-go)."""
        return self._kernel_link

    async def up(self) -> None:
        """Make the link (kernel or wireguard-go), set key and port, add the address and
        bring the link up.

        Waits at most ``START_TIMEOUT`` for wireguard-go and ``COMMAND_TIMEOUT`` per command.
        On failure or cancellation, whatever was started is stopped (``down()``) first.

        Raises:
            MeshError: the interface is up already, its name is in use (a link of that
                name, or wireguard-go's UAPI socket), or a command failed (the error names
                it and its stderr).
        """
        if self._process is not None or self._kernel_link:
            raise MeshError(f"{self.name} is up already")
        # A wireguard-go of a run that was killed ends with it (its parent-death signal) but
        # may take a moment to remove its link: a restart waits for that.
        for _ in range(round(PREDECESSOR_WAIT / 0.1)):
            if not (await self._socket_answers() or await self._link_exists()):
                break
            await anyio.sleep(0.1)
        if await self._socket_answers():
            raise MeshError(f"{self.socket_path} is in use: another wireguard-go runs {self.name}")
        if await self._link_exists():
            raise MeshError(
                f"an interface named {self.name} exists already: choose another name, or "
                f"remove it (ip link del {self.name}) if a crashed Knit left it"
            )
        try:
            if not await self._add_kernel_link():
                await self._start_daemon()
            key = (self._private_key + "\n").encode()
            port = str(self.listen_port)
            await self._run(
                "wg", "set", self.name, "private-key", "/dev/stdin", "listen-port", port, input=key
            )
            await self._run("ip", "address", "add", self.address, "dev", self.name)
            await self._run("ip", "link", "set", self.name, "up")
        except BaseException:
            await self.down()
            raise
        logger.info(
            "wireguard interface %s up (%s, netns %s)",
            self.name,
            "kernel" if self._kernel_link else "wireguard-go",
            self.netns,
        )

    async def set_peers(self, peers: Sequence[Peer]) -> None:
        """Make the interface's peers exactly ``peers``: add or update them, remove the rest.

        An endpoint once set is kept when a later ``Peer`` has none (``wg set`` cannot unset it).
        Cancellation may leave the peers partly applied; calling again converges.

        Raises:
            ValueError: two peers share a public key.
            MeshError: ``wg`` failed (is the interface up?).
        """
        wanted = {peer.public_key: peer for peer in peers}
        if len(wanted) != len(peers):
            raise ValueError("two peers share a public key")
        current = (await self._run("wg", "show", self.name, "peers")).split()
        args: list[str] = []
        for key in current:
            if key not in wanted:
                args += ["peer", key, "remove"]
        for peer in peers:
            args += ["peer", peer.public_key, "allowed-ips", ",".join(peer.allowed_ips)]
            if peer.endpoint is not None:
                args += ["endpoint", peer.endpoint]
            args += ["persistent-keepalive", str(peer.keepalive) if peer.keepalive else "off"]
        if args:
            await self._run("wg", "set", self.name, *args)

    async def peers(self) -> dict[str, PeerStatus]:
        """Return the interface's peers by public key, with endpoint and latest handshake.

        Raises:
            MeshError: ``wg`` failed, or printed what this module cannot read.
        """
        dump = await self._run("wg", "show", self.name, "dump")
        result: dict[str, PeerStatus] = {}
        for line in dump.splitlines()[1:]:  # the first line is the interface's own, with its key
            fields = line.split("\t")
            if len(fields) != 8:  # the line holds a preshared key: never put it in the error
                raise MeshError(f"unexpected line in wg show {self.name} dump")
            key, _preshared, endpoint, allowed, handshake, rx, tx, _keepalive = fields
            seconds = int(handshake)
            result[key] = PeerStatus(
                public_key=key,
                endpoint=None if endpoint == "(none)" else endpoint,
                allowed_ips=() if allowed == "(none)" else tuple(allowed.split(",")),
                latest_handshake=datetime.fromtimestamp(seconds, UTC) if seconds else None,
                rx_bytes=int(rx),
                tx_bytes=int(tx),
            )
        return result

    async def down(self) -> None:
        """Remove the interface and stop wireguard-go: SIGTERM, then SIGKILL. Idempotent.

        Shielded from cancellation, so that a cancelled caller leaves no daemon behind; every
        step is bounded (at most ``COMMAND_TIMEOUT + 3 * STOP_TIMEOUT + 1`` seconds in all).
        """
        with anyio.CancelScope(shield=True):
            if self._kernel_link:
                self._kernel_link = False
                try:
                    await self._run("ip", "link", "del", self.name)
                except MeshError as exc:
                    logger.warning("could not delete interface %s: %s", self.name, exc)
                else:
                    logger.info("wireguard interface %s down", self.name)
            process, self._process = self._process, None
            # Only a running wireguard-go owns the link; if it has exited, its tun device went
            # with it, and a link of this name now would be someone else's.
            if process is not None and process.returncode is None:
                try:
                    await self._run("ip", "link", "del", self.name)
                except MeshError as exc:
                    logger.warning("could not delete interface %s: %s", self.name, exc)
            if process is not None:
                await self._stop(process)
                if not await self._socket_answers():  # a SIGKILLed daemon leaves its socket
                    await anyio.Path(self.socket_path).unlink(missing_ok=True)
                logger.info("wireguard interface %s down", self.name)
            workdir, self._workdir = self._workdir, None
            if workdir is not None:
                await anyio.to_thread.run_sync(
                    functools.partial(shutil.rmtree, workdir, ignore_errors=True)
                )

    def _command(self, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
        return [*prefix, *args]

    async def _run(self, *args: str, input: bytes | None = None) -> str:
        command = self._command(*args)
        logger.debug("running %s", " ".join(command))  # arguments never hold a private key
        try:
            with anyio.fail_after(COMMAND_TIMEOUT):
                result = await anyio.run_process(
                    command,
                    input=input,
                    stdin=subprocess.DEVNULL if input is None else None,
                    check=False,
                )
        except TimeoutError as exc:
            raise MeshError(f"no answer within {COMMAND_TIMEOUT:g} s", command) from exc
        except OSError as exc:
            raise MeshError(f"cannot run ({exc})", command) from exc
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")
            raise MeshError(f"exit status {result.returncode}", command, stderr)
        return result.stdout.decode()

    async def _link_exists(self) -> bool:
        try:
            await self._run("ip", "link", "show", "dev", self.name)
        except MeshError:
            return False
        return True

    async def _add_kernel_link(self) -> bool:
        """Make the kernel's link (True), or say the userspace backend is to be used (False).

        Raises:
            MeshError: the kernel backend was asked for and the link cannot be made.
        """
        if self.backend == "userspace":
            return False
        try:
            await self._run("ip", "link", "add", self.name, "type", "wireguard")
        except MeshError as exc:
            if self.backend == "kernel":
                raise
            # Any failure sends ``auto`` to wireguard-go ("Unknown device type" without the
            # module); if that fails too, its error is the one the caller sees.
            logger.debug("no kernel wireguard for %s: %s", self.name, exc)
            return False
        self._kernel_link = True
        return True

    async def _start_daemon(self) -> None:
        mkdtemp = functools.partial(tempfile.mkdtemp, prefix="knit-wg-")
        self._workdir = Path(await anyio.to_thread.run_sync(mkdtemp))
        log = self._workdir / "wireguard-go.log"
        command = self._command("wireguard-go", "-f", self.name)
        if shutil.which("setpriv"):  # it ends with this process, even a killed one
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
        # A file, not a pipe: nothing reads wireguard-go's output while it runs, and a full
        # pipe would stall it.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._process = await anyio.open_process(
                command, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, env=env
            )
        except OSError as exc:
            raise MeshError(f"cannot start ({exc})", command) from exc
        finally:
            os.close(fd)
        with anyio.move_on_after(START_TIMEOUT):
            while self._process.returncode is None:
                if await self._socket_answers():
                    return
                await anyio.sleep(0.05)
        output = await anyio.Path(log).read_text(errors="replace")
        if self._process.returncode is not None:
            raise MeshError(f"exited with status {self._process.returncode}", command, output)
        raise MeshError(f"no {self.socket_path} within {START_TIMEOUT:g} s", command, output)

    async def _socket_answers(self) -> bool:
        try:
            with anyio.fail_after(1):
                stream = await anyio.connect_unix(self.socket_path)
        except (OSError, TimeoutError):
            return False
        await stream.aclose()
        return True

    async def _stop(self, process: anyio.abc.Process) -> None:
        for send in (process.terminate, process.kill):
            if process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                send()
            with anyio.move_on_after(STOP_TIMEOUT):
                await process.wait()
        if process.returncode is None:
            logger.warning("wireguard-go for %s (pid %d) would not stop", self.name, process.pid)
        else:
            with anyio.move_on_after(STOP_TIMEOUT):
                await process.aclose()
