"""Fault injection against real Knit processes: kill, pause and restart them, stop NATS,
restart a Docker Engine, then check the end state with Docker itself.

Built on ``tests.support.knit_processes``, ``.knit_api`` and ``.waiting`` (the processes, the
REST API, the waits) and, like them, never imports Knit's server or agent code (only the pure
keys and proofs of ``knit.trust`` and ``knit.secrets``, for a node the test plays itself):
faults are signals to PIDs (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), a nats-server stopped and
started again on the same port, a ``dockerd`` of our own in its own network namespace restarted
under its agent, and ``docker kill``. The truth at the end is ``docker ps`` by label.

Every scenario measures how long Knit took: ``Figures.record`` prints one line per scenario,
``FAULT agent-sigkill detect_s=3.4 replace_s=1.2`` (``pytest -s`` shows it), and merges the
figures into a JSON file (the test's tmp dir; ``$KNIT_FAULT_FIGURES`` names one more).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from knit.secrets import NodeKeyPair
from knit.trust.macs import attach, mac
from knit.trust.nkeys import KeyKind, NKey
from tests.support.docker import docker, ensure_busybox_image
from tests.support.dockerd import Dockerd, init_binary
from tests.support.knit import KnitCluster
from tests.support.knit_api import KnitApi
from tests.support.knit_processes import NODE_TTL, KnitAgent, KnitProcess, KnitServer, wait_for_api
from tests.support.nats import NatsServer
from tests.support.netns import delete_namespace, ip, netns_problem, unmount_under
from tests.support.waiting import holds_for, wait_until

FIGURES_ENV = "KNIT_FAULT_FIGURES"
"""An extra JSON file the figures are merged into (``python -m simulations.faults`` sets it)."""
TASK_ACCEPT_ENV = "KNIT_TASK_ACCEPT_TIMEOUT"
"""Seconds the server waits for a task's acceptance before re-publishing it."""
BUSYBOX = "knit-test/busybox:latest"
POLL = 0.05
"""Seconds between two looks at Docker or the API while timing a recovery."""

T = TypeVar("T")
JSON = dict[str, Any]


# -- figures ---------------------------------------------------------------------------------


class Figures:
    """The measured figures of the scenarios run with it, kept in a JSON file.

    Args:
        path: the JSON file (an object: scenario name → its figures), rewritten on each record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scenarios: dict[str, dict[str, float | int | str]] = {}

    def record(self, scenario: str, **figures: float | int | str) -> None:
        """Print ``FAULT scenario k=v ...`` and merge the figures into the JSON file(s)."""
        rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
        self.scenarios[scenario] = rounded
        text = " ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in rounded.items()
        )
        print(f"FAULT {scenario} {text}", flush=True)
        paths = [self.path]
        extra = os.environ.get(FIGURES_ENV)
        if extra:
            paths.append(Path(extra))
        for path in paths:
            merge_json(path, {scenario: rounded})


def merge_json(path: Path, entries: Mapping[str, object]) -> None:
    """Merge ``entries`` into the JSON object stored at ``path`` (created if absent)."""
    data: dict[str, object] = {}
    if path.exists():
        with contextlib.suppress(ValueError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                data = loaded
    data.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# -- a Docker Engine of our own --------------------------------------------------------------


class PrivateEngine:
    """A ``dockerd`` of the test's own, in its own network namespace, restartable.

    A ``tests.support.dockerd.Dockerd`` without iptables (its bridge lives in its own
    namespace, so it never meets the machine's Engine), in a short folder under /tmp.
    ``stop()`` is SIGTERM, as a service manager would: dockerd stops its containers first
    (they exit, and stay exited after ``start()``).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="knitft-", dir="/tmp"))
        self.netns = f"knitft-{uuid.uuid4().hex[:8]}"
        self.dockerd = Dockerd(self.netns, self.root, flags=["--iptables=false", "--ip-masq=false"])
        self.netns_made = False

    @property
    def docker_host(self) -> str:
        """``unix:///tmp/knitft-.../docker.sock``."""
        return self.dockerd.docker_host

    @staticmethod
    def problem() -> str | None:
        """Why no private Engine can run here (not root, no dockerd, ip, nsenter or tini), or
        None."""
        problem = netns_problem()
        if problem is not None:
            return problem
        if shutil.which("dockerd") is None:
            return "missing dockerd"
        return "missing docker-init or tini" if init_binary() is None else None

    def start(self, timeout: float = 60.0) -> None:
        """Start dockerd (creating the namespace the first time); wait until it answers."""
        if not self.netns_made:
            ip("netns", "add", self.netns)
            self.netns_made = True
            ip("link", "set", "lo", "up", netns=self.netns)
        self.dockerd.start(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM dockerd (it stops its containers) and wait for it; SIGKILL if it hangs."""
        self.dockerd.stop(timeout)

    def tail(self, lines: int = 20) -> str:
        """The end of dockerd's log."""
        return self.dockerd.tail(lines)

    def close(self) -> None:
        """Remove every container, stop dockerd, delete the namespace (killing whatever is
        left in it), unmount what is mounted in the folder and delete it."""
        self.dockerd.close()
        if self.netns_made:
            delete_namespace(self.netns)
        unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_engine() -> Iterator[PrivateEngine]:
    """A started ``PrivateEngine`` holding the busybox test image; closed on exit."""
    engine = PrivateEngine()
    try:
        engine.start()
        ensure_busybox_image(engine.docker_host, BUSYBOX)
        yield engine
    finally:
        engine.close()


# -- what Docker says ------------------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    """One container of a deployment, as ``docker ps`` shows it."""

    id: str
    instance_id: str
    node_id: str
    state: str
    engine: str

    @property
    def running(self) -> bool:
        """Whether Docker says it runs."""
        return self.state == "running"


def docker_containers(docker_host: str, labels: Mapping[str, str]) -> list[Container]:
    """Every container (any state) carrying all ``labels`` on one Engine."""
    filters: list[str] = []
    for key, value in labels.items():
        filters += ["--filter", f"label={key}={value}"]
    fmt = '{{.ID}}\t{{.State}}\t{{.Label "knit.instance"}}\t{{.Label "knit.node"}}'
    out = docker("ps", "-a", "--no-trunc", *filters, "--format", fmt, docker_host=docker_host)
    found = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            found.append(Container(parts[0], parts[2], parts[3], parts[1], docker_host))
    return found


def started_at(docker_host: str, container_id: str) -> str:
    """``State.StartedAt`` of a container (it changes when the container is started again)."""
    return docker(
        "inspect", "--format", "{{.State.StartedAt}}", container_id, docker_host=docker_host
    ).strip()


# -- the cluster -----------------------------------------------------------------------------


def event_time(event: JSON) -> float:
    """An event's ``at`` (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00")).timestamp()


@dataclass
class Seen:
    """Every container a scenario saw for one deployment (to check each change was told)."""

    containers: dict[str, Container] = field(default_factory=dict)


class FaultCluster(KnitCluster):
    """A ``KnitCluster`` on an external nats-server that the test can stop, with agents that
    may each drive another Engine, and the means to hurt its processes.

    Args:
        workdir: the folder of every process's files and logs.
        docker_host: the machine's Engine (the default for agents).
        nats: the nats-server (started by the caller) that the server and agents use.
        env: extra environment for the server process (``KNIT_TASK_ACCEPT_TIMEOUT``).
        node_ttl: the server's ``--node-ttl``.
    """

    def __init__(
        self,
        workdir: Path,
        docker_host: str,
        nats: NatsServer,
        *,
        env: Mapping[str, str] | None = None,
        node_ttl: float = NODE_TTL,
    ) -> None:
        super().__init__(workdir, docker_host, external_nats=nats.url)
        if node_ttl != NODE_TTL:
            self.server = KnitServer(workdir, docker_host, nats_url=nats.url, node_ttl=node_ttl)
            self.watch.processes[0] = self.server
            self.api.close()
            self.api = KnitApi(self.server.api_url, self.watch)
        self.node_ttl = node_ttl
        self.nats = nats
        self.engines: set[str] = {docker_host}
        self.seen: dict[str, Seen] = {}
        self.server_env = dict(env or {})

    # processes

    def start_server(self) -> None:
        """Start (or start again) the server with the extra environment; wait for its API."""
        with patched_environ(self.server_env):
            self.server.start_and_wait()
        if self.server not in self.watch.processes:
            self.watch.processes.append(self.server)

    def start_all(self, agents: int) -> None:
        """Start the server, then ``agents`` agents at once with one join token (each process
        takes a second or two to start: in parallel the cluster is up sooner); wait until
        every node is healthy."""
        with patched_environ(self.server_env):
            self.server.start()
        wait_for_api(self.server.api_url, timeout=30, watch=self.watch)
        token = self.join_token(uses=agents)
        started = []
        for _ in range(agents):
            agent = KnitAgent(
                self.workdir,
                self.docker_host,
                name=f"agent-{len(self.agents) + 1}",
                server_url=self.server.api_url,
                join_token=token,
            )
            self.agents.append(agent)
            self.watch.processes.append(agent)
            agent.start()
            started.append(agent)

        def registered() -> bool:
            healthy = {n["id"] for n in self.api.nodes() if n.get("status") == "healthy"}
            for agent in started:
                path = agent.data_dir / "node-id"
                if agent.node_id is None and path.exists():
                    agent.node_id = path.read_text().strip() or None
            return all(a.node_id in healthy for a in started)

        self.api.wait(registered, timeout=30, what=f"{agents} agents registered and healthy")
        self.node_ids.update(a.node_id for a in started if a.node_id)

    def add_agent_on(self, docker_host: str, labels: Mapping[str, str] | None = None) -> KnitAgent:
        """Start an agent driving the Engine at ``docker_host``; wait until it is healthy."""
        return self.add_agent_with(docker_host=docker_host, labels=labels)

    def add_agent_with(
        self,
        *,
        docker_host: str | None = None,
        nats_url: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> KnitAgent:
        """Start an agent on another Engine and/or through another NATS URL (a proxy); wait
        until its node is healthy; sets ``agent.node_id``."""
        self.engines.add(docker_host or self.docker_host)
        return self.add_agent(labels, docker_host=docker_host, nats_url=nats_url)

    def sigkill(self, process: KnitProcess) -> float:
        """SIGKILL a process (no goodbye); return the time it was sent. No longer watched."""
        self.unwatch(process)
        popen = process.process
        assert popen is not None and popen.poll() is None, f"{process.name} is not running"
        at = time.time()
        popen.kill()
        popen.wait(10)
        process.exit_codes.append(popen.returncode)
        process.process = None
        return at

    def sigstop(self, process: KnitProcess) -> float:
        """Freeze a process (SIGSTOP): alive, silent, deaf. Return the time."""
        assert process.process is not None and process.running, f"{process.name} is not running"
        at = time.time()
        process.process.send_signal(signal.SIGSTOP)
        return at

    def sigcont(self, process: KnitProcess) -> float:
        """Thaw a process frozen by ``sigstop``. Return the time."""
        assert process.process is not None
        at = time.time()
        process.process.send_signal(signal.SIGCONT)
        return at

    def restart(self, process: KnitProcess) -> None:
        """Start a stopped or killed process again (same arguments, data dir and ports)."""
        if process is self.server:
            self.start_server()
            return
        process.start()
        if process not in self.watch.processes:
            self.watch.processes.append(process)

    def unwatch(self, process: KnitProcess) -> None:
        """Stop watching a process (its death is intended)."""
        if process in self.watch.processes:
            self.watch.processes.remove(process)

    def agent_of(self, node_id: str) -> KnitAgent:
        """The agent whose node is ``node_id``."""
        return next(a for a in self.agents if a.node_id == node_id)

    # what Docker says

    def containers(self, deployment_id: str) -> list[Container]:
        """Every container of the deployment on every Engine of the cluster (remembered in
        ``seen``)."""
        found: list[Container] = []
        for engine in sorted(self.engines):
            found += docker_containers(engine, {"knit.deployment": deployment_id})
        seen = self.seen.setdefault(deployment_id, Seen())
        for container in found:
            seen.containers[container.id] = container
        return found

    # what the API says

    def events(self, *, deployment_id: str | None = None, node_id: str | None = None) -> list[JSON]:
        """``GET /events`` (newest first), filtered; at most 1,000."""
        query = "limit=1000"
        if deployment_id:
            query += f"&deployment_id={deployment_id}"
        if node_id:
            query += f"&node_id={node_id}"
        return self.api.listing(f"/events?{query}")

    def wait_event(
        self,
        kind: str,
        *,
        timeout: float,
        after: float = 0.0,
        deployment_id: str | None = None,
        node_id: str | None = None,
        instance_id: str | None = None,
    ) -> JSON:
        """Wait for the first event of ``kind`` (matching the ids) at or after ``after``."""

        def found() -> JSON | None:
            matching = [
                e
                for e in self.events(deployment_id=deployment_id, node_id=node_id)
                if e["kind"] == kind
                and event_time(e) >= after
                and (instance_id is None or e.get("instance_id") == instance_id)
            ]
            return matching[-1] if matching else None  # newest first: the last is the first

        return self.api.wait(found, timeout=timeout, what=f"an event {kind}")

    def node_status(self, node_id: str) -> str:
        """``GET /nodes/{id}``'s status."""
        node = self.api.ok(self.api.get(f"/nodes/{node_id}"), 200)
        return str(node["status"])

    # the end state

    def check_exact(
        self, deployment_id: str, replicas: int, *, stale_nodes: Iterable[str] = ()
    ) -> list[Container]:
        """Assert that exactly ``replicas`` instances run, none twice, and the API agrees.

        Docker must show, on the nodes not in ``stale_nodes``, exactly ``replicas`` containers
        of the deployment, all running, of distinct instances; and no instance may have a
        container on two nodes (stale ones included). The API's desired instances must be
        those containers, all ``running``; an instance it no longer wants may remain only on a
        stale node, as ``lost``. ``stale_nodes`` are nodes whose agent is dead: Docker still
        runs their containers (the Engine is shared) but nobody can stop them until that agent
        is back. Returns the live containers.

        Raises:
            AssertionError: with what differs.
        """
        stale = set(stale_nodes)
        containers = self.containers(deployment_id)
        live = [c for c in containers if c.node_id not in stale]
        by_instance: dict[str, list[Container]] = {}
        for container in containers:
            by_instance.setdefault(container.instance_id, []).append(container)
        duplicated = {i: cs for i, cs in by_instance.items() if len(cs) > 1}
        assert not duplicated, f"instances with two containers: {duplicated}"
        not_running = [c for c in live if not c.running]
        assert not not_running, f"containers not running: {not_running}"
        assert len(live) == replicas, f"{len(live)} live containers, want {replicas}: {live}"
        instances = self.api.instances_of(deployment_id)
        wanted = [i for i in instances if i["desired"]]
        assert all(i["status"] == "running" for i in wanted), f"not all running: {wanted}"
        assert sorted((i["instance_id"], i["container_id"]) for i in wanted) == sorted(
            (c.instance_id, c.id) for c in live
        ), f"the API's instances differ from Docker's: {wanted} vs {live}"
        leftovers = [i for i in instances if not i["desired"]]
        assert all(i["status"] == "lost" and i["node_id"] in stale for i in leftovers), (
            f"instances neither wanted nor lost on a dead node: {leftovers}"
        )
        return live

    def wait_exact(
        self,
        deployment_id: str,
        replicas: int,
        *,
        timeout: float,
        stale_nodes: Iterable[str] = (),
        steady: float = 0.0,
    ) -> tuple[float, list[Container]]:
        """Wait until ``check_exact`` holds; return when (``time.time()``) and the containers.

        With ``steady``, the same containers must then stay exactly so for that many seconds
        (nothing duplicated later, nothing stopped later).
        """
        stale = tuple(stale_nodes)

        def exact() -> list[Container] | None:
            try:
                return self.check_exact(deployment_id, replicas, stale_nodes=stale)
            except AssertionError:
                return None

        live = self.api.wait(
            exact,
            timeout=timeout,
            what=f"exactly {replicas} instance(s) of {deployment_id} running",
            describe=lambda: self.describe(deployment_id, stale),
        )
        at = time.time()
        if steady > 0:
            ids = sorted(c.id for c in live)

            def same() -> bool:
                now = self.check_exact(deployment_id, replicas, stale_nodes=stale)
                return sorted(c.id for c in now) == ids

            holds_for(same, duration=steady, what="the same containers", interval=0.2)
        return at, live

    def describe(self, deployment_id: str, stale: Sequence[str] = ()) -> str:
        """Docker's and the API's view, for failure messages."""
        problem = ""
        try:
            self.check_exact(deployment_id, -1, stale_nodes=stale)
        except AssertionError as exc:
            problem = str(exc)
        return (
            f"{problem}\ndocker: {self.containers(deployment_id)}\n"
            f"api: {self.api.describe_instances(deployment_id)}"
        )

    def check_events_explain(
        self, deployment_id: str, *, removed_by_test: Iterable[str] = ()
    ) -> list[JSON]:
        """Assert the events tell every change the scenario saw in Docker.

        Each container seen running now has an event saying its instance runs (started by
        Knit, seen running, or recovered); each container seen during the scenario and gone
        now has an event saying Knit removed it (instance removed, or an orphan's container
        removed) or, for the containers in ``removed_by_test``, that Knit noticed (exited or
        vanished). Returns the deployment's events (newest first).
        """
        external = set(removed_by_test)
        events = self.events(deployment_id=deployment_id)
        orphans = [e for e in self.events() if e["kind"] == "instance.orphan"]
        by_instance: dict[str, set[str]] = {}
        for event in [*events, *orphans]:
            if event.get("instance_id"):
                by_instance.setdefault(event["instance_id"], set()).add(event["kind"])
        now = {c.id for c in self.containers(deployment_id)}
        for container in self.seen.get(deployment_id, Seen()).containers.values():
            kinds = by_instance.get(container.instance_id, set())
            if container.id in now:
                told = {"instance.running", "instance.recovered"}
            else:
                told = {"instance.removed", "instance.orphan"}
                if container.id in external:
                    told = {"instance.exited", "instance.vanished"}
            assert kinds & told, (
                f"container {container.id[:12]} of instance {container.instance_id} "
                f"({'present' if container.id in now else 'gone'}): no event among {told}; "
                f"its events: {sorted(kinds)}"
            )
        return events


def kinds_of(events: Iterable[JSON]) -> list[str]:
    """The kinds of ``events``, in their order."""
    return [str(e["kind"]) for e in events]


@contextlib.contextmanager
def patched_environ(extra: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block (child processes started in it inherit them)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class FaultEnv:
    """What a scenario needs from its runner (pytest's fixtures, or ``simulations.faults``).

    Attributes:
        workdir: a folder of its own.
        docker_host: the machine's Docker Engine (with the busybox test image).
        nats_binary: the nats-server executable.
        figures: where the measured figures go.
    """

    workdir: Path
    docker_host: str
    nats_binary: str
    figures: Figures

    def folder(self, name: str) -> Path:
        """A fresh subfolder of ``workdir``."""
        path = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path


@contextlib.contextmanager
def fault_cluster(
    env: FaultEnv,
    name: str,
    *,
    agents: int = 2,
    server_env: Mapping[str, str] | None = None,
    node_ttl: float = NODE_TTL,
) -> Iterator[FaultCluster]:
    """A nats-server of its own, a server and ``agents`` agents on the machine's Engine.

    Everything is stopped and every container of its nodes removed on exit, even on failure
    (the processes' log tails are printed then).
    """
    workdir = env.folder(name)
    nats = NatsServer(env.nats_binary, workdir)
    nats.start()
    cluster = FaultCluster(workdir, env.docker_host, nats, env=server_env, node_ttl=node_ttl)
    ok = False
    try:
        cluster.start_all(agents)
        yield cluster
        ok = True
    finally:
        if not ok:
            print(cluster.logs())
        for agent in cluster.agents:  # a frozen agent cannot hear SIGTERM
            if agent.process is not None and agent.running:
                agent.process.send_signal(signal.SIGCONT)
        cluster.close()
        nats.stop()


def sleeper_spec(name: str, replicas: int, **extra: object) -> JSON:
    """A deployment of busybox containers that run until stopped (and stop at once)."""
    from tests.support.knit import SLEEPER, unique_name

    return {
        "name": unique_name(name),
        "image": BUSYBOX,
        "replicas": replicas,
        "command": SLEEPER,
        **extra,
    }


def measure(predicate: Callable[[], T | None], *, timeout: float, what: str) -> tuple[float, T]:
    """Poll ``predicate`` every ``POLL`` s; return when it first held and its value."""
    value = wait_until(predicate, timeout=timeout, what=what, interval=POLL)
    return time.time(), value


# -- a node that heartbeats but never takes a task -------------------------------------------


class MuteNode:
    """A node that only heartbeats (as an agent whose task intake hangs would): healthy, so
    placement picks it, but it never accepts a task. It joins through the API with a join
    token and publishes ``knit.agent.heartbeat``, each proved with its keys (the wire
    contract of docs/security.md), from a thread running its own event loop.

    Args:
        api_url: the API to join through.
        join_token: a join token.
        labels: the node's labels.
        interval: seconds between heartbeats.
    """

    def __init__(
        self, api_url: str, join_token: str, labels: Mapping[str, str], interval: float = 0.5
    ) -> None:
        self.api_url = api_url
        self.join_token = join_token
        self.labels = dict(labels)
        self.interval = interval
        self.node_id = f"mute-{uuid.uuid4().hex[:12]}"
        self.keys = NodeKeyPair.generate()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mute-node", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> MuteNode:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def heartbeat(self, seq: int) -> bytes:
        """One heartbeat, as JSON (an empty report: it runs nothing)."""
        return json.dumps(
            {
                "v": 1,
                "msg_id": uuid.uuid4().hex,
                "kind": "heartbeat",
                "node_id": self.node_id,
                "hostname": "mute",
                "seq": seq,
                "first": seq == 0,
                "capacity": {"cpus": 2, "memory_bytes": 2**31},
                "labels": self.labels,
                "docker_version": "none",
                "agent_version": "mute",
                "public_key": self.keys.public_key_b64,
                "interval": self.interval,
                "instances": [],
                "sent_at": time.time(),
            }
        ).encode()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # shown by the test through the node's health
            self._error = exc

    async def _main(self) -> None:
        import nats

        nats_key = NKey.generate(KeyKind.USER)
        body = {
            "hostname": "mute",
            "public_key": self.keys.public_key_b64,
            "nats_key": nats_key.public_key,
            "node_id": self.node_id,
        }
        headers = {"Authorization": f"Bearer {self.join_token}"}
        async with httpx.AsyncClient(timeout=10) as http:
            joined = await http.post(f"{self.api_url}/join", json=body, headers=headers)
        joined.raise_for_status()
        grant = joined.json()
        link = self.keys.link_keys(grant["server_key"], self.node_id)
        options: dict[str, Any] = {}
        if grant["nats_jwt"]:
            jwt = grant["nats_jwt"].encode()
            options["user_jwt_cb"] = lambda: jwt
            options["signature_cb"] = lambda n: base64.b64encode(nats_key.sign(n.encode()))
        client = await nats.connect(grant["nats_urls"], connect_timeout=5, **options)
        try:
            seq = 0
            while not self._stop.is_set():
                payload = self.heartbeat(seq)
                proof = f"{self.node_id} {mac(link.up, 'knit.agent.heartbeat', payload)}"
                await client.publish("knit.agent.heartbeat", attach(payload, proof))
                await client.flush(timeout=5)
                seq += 1
                await asyncio.sleep(self.interval)
        finally:
            await client.close()


# -- a link that can be cut ------------------------------------------------------------------


class CuttableLink:
    """A TCP relay between agents and nats-server whose link the test cuts and mends.

    Cut, every connection through it is reset and new ones are refused (closed at once), as
    when an agent's host loses its route to NATS: the agent keeps running and retries.
    Mended, connections are relayed again. Runs on threads of its own.

    Args:
        upstream_port: nats-server's port on 127.0.0.1.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.closed = False
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.thread = threading.Thread(target=self._accept, name="link", daemon=True)

    @property
    def url(self) -> str:
        """The NATS URL to give agents: ``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> CuttableLink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True
        self.cut()
        self.listener.close()
        self.thread.join(5)

    def cut(self) -> float:
        """Reset every relayed connection and refuse new ones; return the time."""
        at = time.time()
        with self.lock:
            self.up = False
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        return at

    def mend(self) -> float:
        """Relay connections again; return the time."""
        with self.lock:
            self.up = True
        return time.time()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                up = self.up
            if not up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
