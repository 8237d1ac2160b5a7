"""Knit's processes as its users run them: ``knit server``, ``knit agent`` and ``knit dev``
as children, and ``knit ...`` commands run to completion (``run_cli``).

Every process listens on a free 127.0.0.1 port, keeps its files in its own folder under the
test's temporary directory, logs to a file (whose tail failure messages show), gets SIGTERM if
pytest dies (``setpriv --pdeathsig``) and is stopped by PID: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from knit.natsd import free_port
from tests.support.netns import nsenter, with_pdeathsig
from tests.support.waiting import Watched, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
KNIT_COMMAND = [sys.executable, "-m", "knit.cli"]
HEARTBEAT_INTERVAL = 0.5
"""Seconds between two heartbeats of the agents the tests start (the default is 5)."""
NODE_TTL = 3.0
"""Seconds without a heartbeat before the tests' servers mark a node unhealthy."""

ADMIN_TOKEN_FILE = "admin.token"
TOKEN_FILES: dict[str, Path] = {}
"""The admin token file of every server started here, by API URL (for ``run_cli``)."""


def trust(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What httpx checks an ``https`` server with: ``ca_file``, else the system's CAs."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True


def read_admin_token(path: Path) -> str | None:
    """The token in ``path``, or None while the server has not written it."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of the file at ``path``, headed by its name ("" if absent)."""
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- {path.name} (last {len(text)} lines)\n" + "\n".join(text)


class KnitProcess:
    """One ``knit ...`` child process, started and stopped by PID.

    Args:
        name: a short name for messages and the log file (``server``, ``agent-1``).
        args: the arguments after ``knit``.
        workdir: where the log goes.
        docker_host: the Engine's DOCKER_HOST, passed in the environment.
        netns: a network namespace to run it in (``nsenter --net``: a ``Host`` of
            ``tests.support.hosts``); None runs it in the test's own.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        workdir: Path,
        docker_host: str,
        *,
        netns: str | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log = workdir / f"{name}.log"
        self.docker_host = docker_host
        self.netns = netns
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []
        self.killed = False

    @property
    def pid(self) -> int | None:
        """The running process's PID, or None."""
        return self.process.pid if self.running and self.process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the process (its output is appended to ``log``)."""
        if self.running:
            return
        command = [*KNIT_COMMAND, *self.args]
        if self.netns is not None:
            command = nsenter(self.netns, command)
        command = with_pdeathsig(command)
        env = dict(os.environ, DOCKER_HOST=self.docker_host, PYTHONUNBUFFERED="1")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n=== start: knit {' '.join(self.args)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
            )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit code (None if never
        started). ``killed`` tells whether SIGKILL was needed."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                process.kill()
                process.wait(timeout)
        code = process.returncode
        self.exit_codes.append(code)
        self.process = None
        return code

    def kill(self) -> int | None:
        """SIGKILL the process (no goodbye: a crash) and reap it; return its exit code (None
        if it was not running)."""
        process = self.process
        if process is None:
            return None
        process.kill()
        code = process.wait(10)
        self.exit_codes.append(code)
        self.process = None
        return code

    def problem(self) -> str | None:
        """A message if the process was started and has exited since."""
        if self.process is not None and self.process.poll() is not None:
            return f"knit {self.name} exited with code {self.process.returncode}"
        return None

    def logs(self, lines: int = 40) -> str:
        """The tail of this process's log."""
        return tail(self.log, lines)


class KnitServer(KnitProcess):
    """``knit server`` on a free port; its own nats-server (on a free port) unless ``nats_url``.

    Restarting keeps the ports and the data dir. ``tls`` (a certificate and its key) serves
    the API over HTTPS; ``ca_file`` is then what clients trust. ``address`` is where the API
    and the embedded nats-server listen: a host's LAN address when ``netns`` is that host's.
    """

    def __init__(
        self,
        workdir: Path,
        docker_host: str,
        *,
        nats_url: str | None = None,
        node_ttl: float = NODE_TTL,
        name: str = "server",
        tls: tuple[Path, Path] | None = None,
        ca_file: Path | None = None,
        address: str = "127.0.0.1",
        netns: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.address = address
        self.http_port = free_port()
        self.data_dir = workdir / name
        self.token_file = self.data_dir / ADMIN_TOKEN_FILE
        self.tls = tls
        self.ca_file = ca_file
        args = ["server", "--http", f"{address}:{self.http_port}"]
        args += ["--data-dir", str(self.data_dir), "--node-ttl", f"{node_ttl:g}"]
        if tls is not None:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        if nats_url is None:
            self.nats_port: int | None = free_port()
            self.nats_url = f"nats://{address}:{self.nats_port}"
            args += ["--nats-listen", f"{address}:{self.nats_port}"]
        else:
            self.nats_port = None
            self.nats_url = nats_url
            args += ["--nats", nats_url]
        args += list(extra_args)
        super().__init__(name, args, workdir, docker_host, netns=netns)
        TOKEN_FILES[self.api_url] = self.token_file

    @property
    def api_url(self) -> str:
        """``http://ADDRESS:PORT`` (``https`` with TLS)."""
        return f"{'https' if self.tls else 'http'}://{self.address}:{self.http_port}"

    @property
    def admin_token(self) -> str:
        """The admin token the server wrote at its first start.

        Raises:
            AssertionError: it has not written one.
        """
        token = read_admin_token(self.token_file)
        assert token, f"{self.token_file} holds no token{self.logs()}"
        return token

    def start_and_wait(self, timeout: float = 30.0) -> None:
        """Start, then wait until the API answers ``GET /healthz``."""
        self.start()
        wait_for_api(self.api_url, timeout=timeout, watch=ProcessWatch([self]), verify=self.ca_file)


class KnitAgent(KnitProcess):
    """``knit agent`` with short heartbeats, joining through ``server_url`` with
    ``join_token`` on its first start (later starts need neither: None); ``node_id`` is
    learnt from ``GET /nodes``. ``nats_url`` overrides the NATS URL received at join (a
    relay). ``netns``: the network namespace it runs in (None: the test's own)."""

    def __init__(
        self,
        workdir: Path,
        docker_host: str,
        *,
        name: str,
        server_url: str | None,
        join_token: str | None,
        nats_url: str | None = None,
        labels: Mapping[str, str] | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        ca_file: Path | None = None,
        extra_args: Sequence[str] = (),
        netns: str | None = None,
    ) -> None:
        self.data_dir = workdir / name
        self.labels = dict(labels or {})
        self.node_id: str | None = None
        args = ["agent", "--data-dir", str(self.data_dir)]
        if server_url is not None and join_token is not None:
            args += ["--server", server_url, "--join-token", join_token]
        if nats_url is not None:
            args += ["--nats", nats_url]
        if ca_file is not None:
            args += ["--ca-file", str(ca_file)]
        args += ["--heartbeat-interval", f"{heartbeat_interval:g}"]
        for key, value in self.labels.items():
            args += ["--label", f"{key}={value}"]
        args += list(extra_args)
        super().__init__(name, args, workdir, docker_host, netns=netns)


class KnitDev(KnitProcess):
    """``knit dev --http 127.0.0.1:PORT --data-dir DIR``: nats-server, server and one agent."""

    def __init__(self, workdir: Path, docker_host: str, *, data_dir: Path | None = None) -> None:
        self.http_port = free_port()
        self.data_dir = data_dir or workdir / "dev"
        self.token_file = self.data_dir / ADMIN_TOKEN_FILE
        args = ["dev", "--http", f"127.0.0.1:{self.http_port}", "--data-dir", str(self.data_dir)]
        super().__init__("dev", args, workdir, docker_host)
        TOKEN_FILES[self.api_url] = self.token_file

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.http_port}"


class ProcessWatch:
    """A ``Watched`` over some processes: a death is a problem, logs are their tails."""

    def __init__(self, processes: Sequence[KnitProcess]) -> None:
        self.processes = list(processes)

    def problem(self) -> str | None:
        """The first dead process's message, or None."""
        return next((p for p in (x.problem() for x in self.processes) if p), None)

    def logs(self) -> str:
        """Every process's log tail."""
        return "".join(p.logs() for p in self.processes)


def wait_for_api(
    url: str, *, timeout: float, watch: Watched | None = None, verify: Path | None = None
) -> None:
    """Wait until ``GET url/healthz`` answers 200 (the server writes its admin token
    before it serves the API). ``verify``: the CA to trust for an ``https`` URL."""

    tls = trust(verify)

    def answers() -> bool:
        return httpx.get(f"{url}/healthz", timeout=2, verify=tls).status_code == 200

    wait_until(answers, timeout=timeout, what=f"the API at {url} answering", watch=watch)


def run_cli(
    *args: str,
    timeout: float = 60.0,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``knit ARGS`` to completion; return its exit code, stdout and stderr.

    Args:
        args: the arguments after ``knit``.
        timeout: seconds before it is killed.
        token: the API token, passed in ``KNIT_TOKEN``; by default the admin token of the
            server started here whose URL follows ``--api`` in ``args``; ``""`` passes none
            (and removes ``KNIT_TOKEN`` and ``KNIT_TOKEN_FILE`` from the environment).
        env: more environment variables.
        cwd: the folder it runs in (default: the repository).
    """
    environ = dict(os.environ)
    if token is None and "--api" in args[:-1]:
        known = TOKEN_FILES.get(args[args.index("--api") + 1])
        token = read_admin_token(known) if known is not None else None
    if token is not None:
        environ.pop("KNIT_TOKEN", None)
        environ.pop("KNIT_TOKEN_FILE", None)
    if token:
        environ["KNIT_TOKEN"] = token
    environ.update(env or {})
    return subprocess.run(
        [*KNIT_COMMAND, *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO_ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=environ,
    )
