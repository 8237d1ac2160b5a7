"""Knit as its users run it, for end-to-end tests: ``knit server``, ``knit agent`` and
``knit dev`` as child processes, the REST API over HTTP, Docker's own view of the truth.

Nothing here imports Knit's server or agent code: the tests drive Knit only through its public
contract (the ``knit`` command, the REST API, the NATS subjects of the spec) and check the
result with the ``docker`` CLI, so a bug in Knit cannot hide itself by also breaking the harness.

Every process listens on a free 127.0.0.1 port, keeps its files in its own folder under the
test's temporary directory, logs to a file (whose tail failure messages show), gets SIGTERM if
pytest dies (``setpriv --pdeathsig``) and is stopped by PID: SIGTERM, then SIGKILL.

The API needs a token: :class:`KnitApi` sends the admin token the server writes to
``<data dir>/admin.token`` on its first start (``knit dev``: ``<data dir>/admin.token`` of
the dev folder), read once it exists; :func:`run_cli` passes it to ``knit`` commands in
``KNIT_TOKEN``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from knit.natsd import free_port
from tests.support.docker import DockerCLIError
from tests.support.knit_docker import remove_containers_by_label, remove_docker_network

REPO_ROOT = Path(__file__).resolve().parents[2]
KNIT_COMMAND = [sys.executable, "-m", "knit.cli"]
HEARTBEAT_INTERVAL = 0.5
"""Seconds between two heartbeats of the agents the tests start (the default is 5)."""
NODE_TTL = 3.0
"""Seconds without a heartbeat before the tests' servers mark a node unhealthy."""
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"""A busybox command that runs until stopped and stops at once on SIGTERM (PID 1 ignores
signals it has no handler for, so plain ``sleep`` would make every stop wait for the kill)."""

T = TypeVar("T")
JSON = dict[str, Any]

ADMIN_TOKEN_FILE = "admin.token"
_TOKEN_FILES: dict[str, Path] = {}
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


# -- waiting ---------------------------------------------------------------------------------


class Watched(Protocol):
    """Something a wait can check for death and describe on failure."""

    def problem(self) -> str | None:
        """Why waiting is pointless (a process died), or None."""

    def logs(self) -> str:
        """The tails of the logs worth reading when a wait fails."""


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    watch: Watched | None = None,
    describe: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Transport errors (a server not listening yet) and Docker CLI errors count as "not yet".

    Raises:
        AssertionError: ``timeout`` seconds passed, or ``watch`` reported a dead process; the
            message holds the last value or error seen, ``describe()`` (the state at the end)
            and the logs' tails.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except (httpx.TransportError, DockerCLIError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        problem = watch.problem() if watch is not None else None
        if problem is not None:
            raise AssertionError(f"{what}: {problem}{watch.logs() if watch else ''}")
        if time.monotonic() > deadline:
            logs = watch.logs() if watch is not None else ""
            state = ""
            if describe is not None:
                try:
                    state = f"\nstate: {describe()}"
                except (httpx.HTTPError, DockerCLIError, AssertionError) as exc:
                    state = f"\nstate: unknown ({exc!r})"
            raise AssertionError(f"{what}: not after {timeout:g} s (last: {last!r}){state}{logs}")
        time.sleep(interval)


def holds_for(
    predicate: Callable[[], bool],
    *,
    duration: float,
    what: str,
    watch: Watched | None = None,
    interval: float = 0.1,
) -> None:
    """Check that ``predicate`` stays true for ``duration`` seconds (to assert an absence).

    Raises:
        AssertionError: it was false once.
    """
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            raise AssertionError(f"{what}: stopped holding{watch.logs() if watch else ''}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of the file at ``path``, headed by its name ("" if absent)."""
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- {path.name} (last {len(text)} lines)\n" + "\n".join(text)


def files_containing(roots: Sequence[Path], secret: str) -> list[Path]:
    """The files under ``roots`` holding ``secret`` in clear (a database with its WAL, keys,
    rendered templates, a Docker config...)."""
    needle = secret.encode()
    return [
        path
        for root in roots
        if root.exists()
        for path in sorted(root.rglob("*"))
        if path.is_file() and needle in path.read_bytes()
    ]


# -- processes -------------------------------------------------------------------------------


class KnitProcess:
    """One ``knit ...`` child process, started and stopped by PID.

    Args:
        name: a short name for messages and the log file (``server``, ``agent-1``).
        args: the arguments after ``knit``.
        workdir: where the log goes.
        docker_host: the Engine's DOCKER_HOST, passed in the environment.
    """

    def __init__(self, name: str, args: Sequence[str], workdir: Path, docker_host: str) -> None:
        self.name = name
        self.args = list(args)
        self.log = workdir / f"{name}.log"
        self.docker_host = docker_host
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
        if shutil.which("setpriv"):
            command = ["setpriv", "--pdeathsig", "TERM", "--", *command]
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
    the API over HTTPS; ``ca_file`` is then what clients trust.
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
    ) -> None:
        self.http_port = free_port()
        self.data_dir = workdir / name
        self.token_file = self.data_dir / ADMIN_TOKEN_FILE
        self.tls = tls
        self.ca_file = ca_file
        args = ["server", "--http", f"127.0.0.1:{self.http_port}"]
        args += ["--data-dir", str(self.data_dir), "--node-ttl", f"{node_ttl:g}"]
        if tls is not None:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        if nats_url is None:
            self.nats_port: int | None = free_port()
            self.nats_url = f"nats://127.0.0.1:{self.nats_port}"
            args += ["--nats-listen", f"127.0.0.1:{self.nats_port}"]
        else:
            self.nats_port = None
            self.nats_url = nats_url
            args += ["--nats", nats_url]
        super().__init__(name, args, workdir, docker_host)
        _TOKEN_FILES[self.api_url] = self.token_file

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with TLS)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

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
    relay)."""

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
        super().__init__(name, args, workdir, docker_host)


class KnitDev(KnitProcess):
    """``knit dev --http 127.0.0.1:PORT --data-dir DIR``: nats-server, server and one agent."""

    def __init__(self, workdir: Path, docker_host: str, *, data_dir: Path | None = None) -> None:
        self.http_port = free_port()
        self.data_dir = data_dir or workdir / "dev"
        self.token_file = self.data_dir / ADMIN_TOKEN_FILE
        args = ["dev", "--http", f"127.0.0.1:{self.http_port}", "--data-dir", str(self.data_dir)]
        super().__init__("dev", args, workdir, docker_host)
        _TOKEN_FILES[self.api_url] = self.token_file

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
        known = _TOKEN_FILES.get(args[args.index("--api") + 1])
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


class AdminToken(httpx.Auth):
    """Sends ``Authorization: Bearer`` with the token in ``path``, read at the first
    request after the server wrote it (clients are made before their server starts)."""

    def __init__(self, path: Path | None, token: str | None = None) -> None:
        self.path = path
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the header (none while the file does not exist yet)."""
        if self.token is None and self.path is not None:
            self.token = read_admin_token(self.path)
        if self.token is not None:
            request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


# -- the API ---------------------------------------------------------------------------------


class KnitApi:
    """A thin httpx client of one Knit server's REST API, with the waits tests need.

    ``watch`` makes every wait fail fast when a process dies and show the logs when it fails.
    ``token_file`` is the server's ``admin.token``: its token is sent with every request
    (``token`` sends that one instead). ``verify`` is the CA an ``https`` server is checked
    with.
    """

    def __init__(
        self,
        base_url: str,
        watch: Watched | None = None,
        *,
        token_file: Path | None = None,
        token: str | None = None,
        verify: Path | None = None,
    ) -> None:
        self.base_url = base_url
        self.watch = watch
        auth: httpx.Auth | None = None
        if token is None and token_file is None:
            token_file = _TOKEN_FILES.get(base_url)
        if token is not None or token_file is not None:
            auth = AdminToken(token_file, token)
        self.http = httpx.Client(base_url=base_url, timeout=15, auth=auth, verify=trust(verify))

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def logs(self) -> str:
        """The watched processes' log tails ("" without a watch)."""
        return self.watch.logs() if self.watch is not None else ""

    def get(self, path: str) -> httpx.Response:
        """``GET path``."""
        return self.http.get(path)

    def post(self, path: str, body: Any) -> httpx.Response:
        """``POST path`` with ``body`` as JSON."""
        return self.http.post(path, json=body)

    def delete(self, path: str) -> httpx.Response:
        """``DELETE path``."""
        return self.http.delete(path)

    def ok(self, response: httpx.Response, *statuses: int) -> Any:
        """Assert the status (default: any 2xx) and return the JSON body (None if empty)."""
        good = response.status_code in statuses if statuses else response.is_success
        assert good, (
            f"{response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code} {response.text[:2000]}{self.logs()}"
        )
        return response.json() if response.content else None

    def listing(self, path: str) -> list[JSON]:
        """``GET path`` → the JSON list, asserting 200."""
        data = self.ok(self.get(path), 200)
        assert isinstance(data, list), f"GET {path} is not a JSON list: {data!r}"
        return data

    def nodes(self) -> list[JSON]:
        """``GET /nodes``."""
        return self.listing("/nodes")

    def deployment(self, deployment_id: str) -> JSON:
        """``GET /deployments/{id}``, asserting 200."""
        data = self.ok(self.get(f"/deployments/{deployment_id}"), 200)
        assert isinstance(data, dict)
        return data

    def instances_of(self, deployment_id: str) -> list[JSON]:
        """The ``instances`` of ``GET /deployments/{id}``."""
        instances = self.deployment(deployment_id).get("instances")
        assert isinstance(instances, list), f"deployment {deployment_id} has no instances list"
        return instances

    def wait(
        self,
        predicate: Callable[[], T | None],
        *,
        timeout: float = 30.0,
        what: str,
        describe: Callable[[], str] | None = None,
    ) -> T:
        """``wait_until`` with this API's watch."""
        return wait_until(
            predicate, timeout=timeout, what=what, watch=self.watch, describe=describe
        )

    def describe_instances(self, deployment_id: str) -> str:
        """The deployment's instances as JSON, for failure messages."""
        return json.dumps(self.instances_of(deployment_id))

    def wait_healthy_nodes(self, count: int, timeout: float = 30.0) -> list[JSON]:
        """Wait until at least ``count`` nodes are healthy; return the healthy ones."""

        def healthy() -> list[JSON] | None:
            nodes = [n for n in self.nodes() if n.get("status") == "healthy"]
            return nodes if len(nodes) >= count else None

        return self.wait(healthy, timeout=timeout, what=f"{count} healthy node(s)")

    def wait_instances(
        self,
        deployment_id: str,
        status: str,
        count: int = 1,
        timeout: float = 60.0,
    ) -> list[JSON]:
        """Wait until exactly ``count`` instances exist and all have ``status``; return them.

        Fails at once when an instance reaches ``error`` while another status is awaited.
        """

        def reached() -> list[JSON] | None:
            instances = self.instances_of(deployment_id)
            if status != "error":
                failed = [i for i in instances if i.get("status") == "error"]
                assert not failed, (
                    f"deployment {deployment_id}: instance in error while waiting for "
                    f"{status}: {failed}{self.logs()}"
                )
            if len(instances) == count and all(i.get("status") == status for i in instances):
                return instances
            return None

        return self.wait(
            reached,
            timeout=timeout,
            what=f"deployment {deployment_id}: {count} instance(s) {status}",
            describe=lambda: self.describe_instances(deployment_id),
        )

    def wait_gone(self, deployment_id: str, timeout: float = 30.0) -> None:
        """Wait until ``GET /deployments/{id}`` answers 404."""
        self.wait(
            lambda: self.get(f"/deployments/{deployment_id}").status_code == 404,
            timeout=timeout,
            what=f"deployment {deployment_id} gone (404)",
        )


# -- a cluster of processes ------------------------------------------------------------------


class KnitCluster:
    """One ``knit server`` and its agents, each in its own folder under ``workdir``.

    Tracks what tests create through it (``create_*``) so that ``reset()`` deletes it between
    tests sharing the cluster, and ``close()`` stops every process and removes every container
    carrying the ``knit.node`` of one of its nodes, and the Docker networks the tests declared.
    """

    def __init__(
        self, workdir: Path, docker_host: str, *, external_nats: str | None = None
    ) -> None:
        self.workdir = workdir
        self.docker_host = docker_host
        self.server = KnitServer(workdir, docker_host, nats_url=external_nats)
        self.agents: list[KnitAgent] = []
        self.watch = ProcessWatch([self.server])
        self.api = KnitApi(self.server.api_url, self.watch, token_file=self.server.token_file)
        self.node_ids: set[str] = set()
        self.deployments: list[str] = []
        self.registries: list[str] = []
        self.networks: list[str] = []
        self.docker_networks: set[str] = set()
        self.every_docker_network: set[str] = set()

    @property
    def nats_url(self) -> str:
        """The NATS the server and agents use."""
        return self.server.nats_url

    def start(self, agents: Sequence[Mapping[str, str]] = ({},)) -> KnitCluster:
        """Start the server, then one agent per label mapping in ``agents``."""
        self.server.start_and_wait()
        for labels in agents:
            self.add_agent(labels)
        return self

    def add_agent(
        self,
        labels: Mapping[str, str] | None = None,
        *,
        docker_host: str | None = None,
        nats_url: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> KnitAgent:
        """Start an agent (on the cluster's Engine and NATS unless given others, with
        ``extra_args`` after the usual ones, e.g. ``--allow-host-network``) and wait until
        its node is healthy; sets ``agent.node_id``."""
        known = {n["id"] for n in self.api.nodes()}
        agent = KnitAgent(
            self.workdir,
            docker_host or self.docker_host,
            name=f"agent-{len(self.agents) + 1}",
            server_url=self.server.api_url,
            join_token=self.join_token(),
            nats_url=nats_url,
            labels=labels,
            ca_file=self.server.ca_file,
            extra_args=extra_args,
        )
        self.agents.append(agent)
        self.watch.processes.append(agent)
        agent.start()

        def new_healthy_node() -> str | None:
            fresh = [
                n["id"]
                for n in self.api.nodes()
                if n["id"] not in known and n.get("status") == "healthy"
            ]
            return fresh[0] if len(fresh) == 1 else None

        agent.node_id = self.api.wait(
            new_healthy_node, timeout=30, what=f"{agent.name}'s node registered and healthy"
        )
        self.node_ids.add(agent.node_id)
        return agent

    def join_token(self, uses: int = 1) -> str:
        """A new join token admitting ``uses`` agents (``POST /join-tokens``)."""
        made = self.api.ok(self.api.post("/join-tokens", {"uses": uses}), 201)
        assert isinstance(made, dict)
        return str(made["token"])

    def stop_agent(self, agent: KnitAgent) -> int | None:
        """Stop one agent (it stays in ``agents``, no longer watched)."""
        if agent in self.watch.processes:
            self.watch.processes.remove(agent)
        return agent.stop()

    # creating things through the API, tracked for cleanup

    def create(self, path: str, body: JSON) -> JSON:
        """``POST path`` asserting 201; remember the new id for ``reset()``."""
        created = self.api.ok(self.api.post(path, body), 201)
        assert isinstance(created, dict) and created.get("id"), f"POST {path}: {created!r}"
        if path == "/deployments":
            self.deployments.append(created["id"])
        elif path == "/registries":
            self.registries.append(created["id"])
        elif path == "/networks":
            self.networks.append(created["id"])
            self.docker_networks.add(str(body["name"]))
            self.every_docker_network.add(str(body["name"]))
        return created

    def create_deployment(self, spec: JSON) -> JSON:
        """``POST /deployments`` (201)."""
        return self.create("/deployments", spec)

    def create_registry(self, url: str, username: str, password: str) -> JSON:
        """``POST /registries`` (201)."""
        return self.create("/registries", {"url": url, "username": username, "password": password})

    def create_network(self, name: str, subnet: str | None, driver: str = "bridge") -> JSON:
        """``POST /networks`` (201)."""
        body: JSON = {"name": name, "driver": driver}
        if subnet is not None:
            body["subnet"] = subnet
        return self.create("/networks", body)

    def reset(self) -> None:
        """Delete what the last test created: deployments (and their containers), networks
        (and their Docker networks), registries. Best effort: Knit may be broken."""
        with contextlib.suppress(httpx.HTTPError):
            for deployment_id in self.deployments:
                self.api.delete(f"/deployments/{deployment_id}")
        for deployment_id in self.deployments:
            remove_containers_by_label(self.docker_host, "knit.deployment", deployment_id)
        with contextlib.suppress(httpx.HTTPError):
            for network_id in self.networks:
                self.api.delete(f"/networks/{network_id}")
            for registry_id in self.registries:
                self.api.delete(f"/registries/{registry_id}")
        for name in self.docker_networks:
            remove_docker_network(self.docker_host, name)
        self.deployments.clear()
        self.networks.clear()
        self.registries.clear()
        self.docker_networks.clear()

    def close(self) -> None:
        """Stop every process, then remove the containers of its nodes and its networks."""
        with contextlib.suppress(httpx.HTTPError, AssertionError, ValueError, KeyError):
            self.node_ids.update(n["id"] for n in self.api.nodes())
        self.reset()
        for agent in self.agents:
            agent.stop()
        self.server.stop()
        self.api.close()
        for node_id in self.node_ids:
            remove_containers_by_label(self.docker_host, "knit.node", node_id)
        for name in self.every_docker_network:  # again: a late container may have held one
            remove_docker_network(self.docker_host, name)

    def logs(self) -> str:
        """Every process's log tail."""
        return "".join(p.logs() for p in [self.server, *self.agents])

    def files_containing(self, secret: str) -> list[Path]:
        """The files under the server's and agents' data dirs that hold ``secret`` in clear."""
        roots = [self.server.data_dir, *(agent.data_dir for agent in self.agents)]
        return files_containing(roots, secret)

    def log_text(self) -> str:
        """The whole of every process's log (to look for what must never be logged)."""
        logs = [p.log for p in [self.server, *self.agents] if p.log.exists()]
        return "".join(log.read_text(errors="replace") for log in logs)


def unique_name(prefix: str) -> str:
    """A Knit name (``[a-z0-9-]``, ≤ 63) unique to this call: ``PREFIX-xxxxxxxx``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def cluster_for(
    workdir: Path,
    docker_host: str,
    agents: Sequence[Mapping[str, str]] = ({},),
    external_nats: str | None = None,
) -> Iterator[KnitCluster]:
    """A started ``KnitCluster``, closed on exit (even when starting it failed)."""
    cluster = KnitCluster(workdir, docker_host, external_nats=external_nats)
    try:
        yield cluster.start(agents)
    finally:
        cluster.close()
