"""``SimRuntime``: a memory-only ``ContainerRuntime`` for simulations and agent tests.

Layer: simulations. Imports anyio, the standard library, ``knit.errors`` and
``knit.runtime.base``. It follows the semantics ``DockerRuntime`` shows against a real Engine
(tests/runtime/test_docker.py), so the real agent code runs on it unchanged:

- images: ``pull`` marks an image present; ``create`` needs it present. "app" and
  "app:latest" are the same image. A registry named in ``SimProfile.auth`` refuses anonymous
  or wrong credentials with ``RuntimeFailure("auth")``.
- networks: ``ensure_network`` is idempotent; another subnet for an existing name, or a subnet
  overlapping another network's, is ``RuntimeFailure("network")``. Without a subnet one is
  taken from Docker's default pools (172.18-31.0.0/16, then 192.168.x.0/20).
- containers: states "created", "running", "exited". Starting a running container and
  stopping a stopped one do nothing. A container is found by id, name or unique id prefix.
  The simulated workload exits at once on SIGTERM, with ``SimProfile.stop_exit_code``.
- events: "create"; "start"; "kill", "die", "stop" for a stop; "kill", "die", "destroy" for
  a forced remove of a running container; "destroy"; "health_status" (detail "healthy" or
  "unhealthy"). Delivered to every open subscription whose labels match.
- health checks: a container created with one is "starting" from each start, then "healthy"
  once its first check ran (``interval`` after the start), unless its command is exactly
  ``["false"]`` or ``["CMD", "false"]``: then "unhealthy" once ``retries`` checks failed
  after ``start_period``. Each change is a "health_status" event. The change happens when
  it is due, on the next call to the runtime or in the wait of an event subscription (there
  is no task of its own). Without one, "none".

Several runtimes in one process are independent hosts, one per simulated node. Per-instance
state is a few slots and empty collections; the random generator is made on first use.
"""

from __future__ import annotations

import builtins
import hashlib
import heapq
import ipaddress
import itertools
import math
import random
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from knit.errors import RuntimeFailure, RuntimeUnavailable
from knit.runtime.base import (
    HEALTH_NONE,
    ContainerSpec,
    ContainerState,
    LogOptions,
    PublishedPort,
    RegistryAuth,
    RuntimeEvent,
    RuntimeInfo,
)
from simulations.profile import Latency, SimProfile, normalize_image, registry_of

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_DEFAULT_POOLS: tuple[IPNetwork, ...] = (
    *(ipaddress.ip_network(f"172.{n}.0.0/16") for n in range(18, 32)),
    *(ipaddress.ip_network(f"192.168.{n}.0/20") for n in range(0, 256, 16)),
)
_FIRST_EPHEMERAL_PORT = 32768
_FAILING_CHECKS = (("false",), ("CMD", "false"))
_instances = itertools.count(1)
_health_order = itertools.count()


@dataclass(frozen=True, order=True)
class _HealthChange:
    """A health status a container's run reaches at ``due`` (``anyio.current_time()``)."""

    due: float
    order: int
    container_id: str = field(compare=False)
    run: int = field(compare=False)
    status: str = field(compare=False)


class _Container:
    __slots__ = ("exit_code", "health", "id", "labels", "name", "published", "run", "spec", "state")

    def __init__(self, container_id: str, spec: ContainerSpec) -> None:
        self.id = container_id
        self.spec = spec
        self.name = spec.name.lstrip("/")
        self.labels = spec.labels  # shared, not copied: callers never change a spec they gave
        self.state = "created"
        self.exit_code: int | None = None
        self.published: builtins.list[PublishedPort] = []
        self.health = HEALTH_NONE
        self.run = 0  # starts so far: a health change is for one run

    def view(self) -> ContainerState:
        ports, labels = builtins.list(self.published), dict(self.labels)
        health = self.health if self.state == "running" else HEALTH_NONE
        return ContainerState(
            self.id, self.name, labels, self.state, self.exit_code, self.spec.image, ports, health
        )


@dataclass(frozen=True)
class _Network:
    id: str
    subnet: IPNetwork
    labels: dict[str, str]


@dataclass(frozen=True, eq=False)
class _Subscription:
    labels: dict[str, str]
    send: MemoryObjectSendStream[RuntimeEvent]


class _Events:
    """One subscription's events as an async iterator.

    Buffered events come without a checkpoint, so a reader keeps up with a burst (a host
    starting tens of containers) in one turn of the event loop instead of one event per
    turn: on a busy loop the latter left readers seconds behind. Waiting for the next event
    is a checkpoint, as ``MemoryObjectReceiveStream`` iteration is.
    """

    __slots__ = ("_receive", "_runtime")

    def __init__(
        self, receive: MemoryObjectReceiveStream[RuntimeEvent], runtime: SimRuntime
    ) -> None:
        self._receive = receive
        self._runtime = runtime

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> RuntimeEvent:
        while True:
            try:
                return self._receive.receive_nowait()
            except anyio.WouldBlock:
                pass
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            # The wait ends at the next health change too: the runtime has no task of its
            # own, so its readers make the change happen (and hear of it) when it is due.
            due = self._runtime._next_health_change()
            try:
                if due is None:
                    return await self._receive.receive()
                with anyio.CancelScope(deadline=due):
                    return await self._receive.receive()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            self._runtime._change_health()


class SimRuntime:
    """One simulated host's container runtime, kept in memory.

    Args:
        profile: latencies, failure rates and registries; shared, never mutated.
        name: names this host in ids, messages and the random seed (default ``sim-N``).
        seed: overrides the seed derived from ``profile.seed`` and ``name``.

    Fault hooks for tests and the harness: ``crash``, ``unavailable``, ``restart_engine``.
    Every method is a checkpoint; cancelling one during its latency abandons it undone.
    """

    def __init__(
        self, profile: SimProfile | None = None, *, name: str | None = None, seed: int | None = None
    ) -> None:
        self.profile = profile or SimProfile()
        self.name = name or f"sim-{next(_instances)}"
        self._seed: int | str | None = seed
        if seed is None and self.profile.seed is not None:
            self._seed = f"{self.profile.seed}:{self.name}"
        self._rng: random.Random | None = None
        self._unavailable = False
        self._serial = 0
        self._images: set[str] = set()
        self._networks: dict[str, _Network] = {}
        self._containers: dict[str, _Container] = {}
        self._names: dict[str, str] = {}
        # (label, value) -> ids of the containers carrying it, oldest first: ``list`` by
        # labels costs what it finds, not every container of the host.
        self._by_label: dict[tuple[str, str], dict[str, None]] = {}
        self._subscriptions: builtins.list[_Subscription] = []
        self._health_changes: builtins.list[_HealthChange] = []  # a heap
        # container id -> the lines it "wrote" (``write_log``); nothing writes by itself.
        self._logs: dict[str, builtins.list[tuple[float, str]]] = {}

    def __repr__(self) -> str:
        return f"SimRuntime({self.name!r})"

    # -- fault hooks and statistics --------------------------------------------------------

    @property
    def unavailable(self) -> bool:
        """While True every call raises ``RuntimeUnavailable``; setting it ends event streams."""
        return self._unavailable

    @unavailable.setter
    def unavailable(self, value: bool) -> None:
        self._unavailable = value
        if value:
            self._end_streams()

    def crash(self, container_id: str, exit_code: int = 1) -> bool:
        """Make a running container exit with ``exit_code`` (a "die" event).

        Returns:
            False, and nothing happens, if the container was not running.

        Raises:
            LookupError: no such container.
        """
        container = self._find(container_id)
        if container is None:
            raise LookupError(f"{self.name}: no container {container_id!r}")
        if container.state != "running":
            return False
        self._exit(container, exit_code)
        return True

    def restart_engine(self, *, live_restore: bool = False) -> None:
        """Restart the simulated engine, instantly.

        Open event streams end first: their subscribers miss what follows, as with a real
        restart, and must resubscribe and re-list. Without ``live_restore`` (Docker's default)
        every running container then exits with ``profile.stop_exit_code`` and stays exited
        (Knit uses restart policy "no"); with it, they keep running. For downtime, set
        ``unavailable`` around the call.
        """
        self._end_streams()
        for container in self._containers.values():
            if container.state == "running" and not live_restore:
                container.state, container.exit_code = "exited", self.profile.stop_exit_code
                container.published = []

    def count(self, state: str | None = None) -> int:
        """Return how many containers exist (in ``state`` if given); not a checkpoint."""
        if state is None:
            return len(self._containers)
        return sum(1 for c in self._containers.values() if c.state == state)

    # -- engine and images -----------------------------------------------------------------

    async def version(self) -> str:
        """Return ``profile.version``."""
        self._check_available()
        await checkpoint()
        return self.profile.version

    async def info(self) -> RuntimeInfo:
        """Return the CPUs, memory and version of the profile."""
        self._check_available()
        await checkpoint()
        p = self.profile
        return RuntimeInfo(cpus=p.cpus, memory_bytes=p.memory_bytes, version=p.version)

    async def close(self) -> None:
        """End open event streams. Idempotent; later calls still work, as on DockerRuntime."""
        self._end_streams()

    async def pull(self, image: str, auth: RegistryAuth | None = None) -> None:
        """Make ``image`` present, after ``pull_latency``.

        Raises:
            RuntimeFailure: "auth" when the image's registry is in ``profile.auth`` and the
                credentials are absent or wrong; "pull" for an image the registries lack,
                credentials for an image naming no registry, or a simulated failure.
            RuntimeUnavailable: the engine is unavailable.
        """
        self._check_available()
        if auth is not None and "/" not in image:
            raise RuntimeFailure("pull", f"image {image!r} names no registry for the credentials")
        await anyio.sleep(self._latency(self.profile.pull_latency))
        self._check_available()  # it may have gone away meanwhile
        wanted = self.profile.auth.get(registry_of(image))
        who = "an anonymous client" if auth is None else f"user {auth.username!r}"
        if wanted is not None and (auth is None or (auth.username, auth.password) != wanted):
            raise RuntimeFailure("auth", f"the registry refused {who} for {image}: unauthorized")
        reference = normalize_image(image)
        known = self.profile.registry_images
        if known is not None and reference not in known:
            raise RuntimeFailure("pull", f"{image}: manifest unknown")
        self._maybe_fail("pull", image)
        self._images.add(reference)

    async def has_image(self, image: str) -> bool:
        """Return whether ``image`` was pulled here or is preloaded by the profile."""
        self._check_available()
        await checkpoint()
        return self._present(image)

    # -- networks --------------------------------------------------------------------------

    async def ensure_network(
        self, name: str, subnet: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Create the network ``name`` unless it exists; return its id (see the module doc).

        Raises:
            RuntimeFailure: "network": a bad, different or overlapping subnet, or the default
                pools are used up.
        """
        self._check_available()
        await checkpoint()
        try:
            wanted = None if subnet is None else ipaddress.ip_network(subnet, strict=False)
        except ValueError as exc:
            raise RuntimeFailure("network", f"bad subnet {subnet!r}: {exc}") from exc
        found = self._networks.get(name)
        if found is not None:
            if wanted is not None and wanted != found.subnet:
                raise RuntimeFailure("network", f"{name} exists with subnet {found.subnet}")
            return found.id
        taken = [n.subnet for n in self._networks.values()]
        if wanted is None:
            wanted = next((p for p in _DEFAULT_POOLS if not _overlaps(p, taken)), None)
            if wanted is None:
                raise RuntimeFailure("network", f"{name}: no free address pool is left")
        elif _overlaps(wanted, taken):
            raise RuntimeFailure("network", f"{name}: {wanted} overlaps another network's pool")
        self._networks[name] = _Network(self._new_id("network"), wanted, dict(labels or {}))
        return self._networks[name].id

    async def remove_network(self, name: str) -> None:
        """Remove the network ``name``; a missing one is not an error.

        Raises:
            RuntimeFailure: "network": a running container is attached.
        """
        self._check_available()
        await checkpoint()
        for c in self._containers.values():
            if c.state == "running" and name in c.spec.networks:
                raise RuntimeFailure("network", f"{name} has active endpoints ({c.name})")
        self._networks.pop(name, None)

    # -- containers ------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        """Create a container, in state "created", after ``create_latency``; return its id.

        Raises:
            RuntimeFailure: "create": image absent, bad or taken name, unknown network, host
                networking with networks or ports, a relative mount source, simulated failure.
        """
        self._check_available()
        await anyio.sleep(self._latency(self.profile.create_latency))
        self._check_available()  # it may have gone away meanwhile
        name = spec.name.lstrip("/")
        problem = None
        if not self._present(spec.image):
            problem = f"image {spec.image} is not present on this host (pull it first)"
        elif not _NAME.match(spec.name):
            problem = f"invalid container name {spec.name!r}"
        elif name in self._names:
            problem = f'{name}: the name is already in use by container "{self._names[name]}"'
        elif spec.network_mode == "host" and (spec.networks or spec.ports):
            problem = f"{name}: host networking takes no networks or ports"
        elif spec.mounts and any(not m.source.startswith("/") for m in spec.mounts):
            problem = f"{name}: a mount source is relative"
        elif spec.networks and (missing := [n for n in spec.networks if n not in self._networks]):
            problem = f"{name}: network {missing[0]} not found"
        if problem is not None:
            raise RuntimeFailure("create", problem)
        self._maybe_fail("create", name)
        container = _Container(self._new_id("container"), spec)
        self._containers[container.id] = container
        self._names[name] = container.id
        for pair in container.labels.items():
            self._by_label.setdefault(pair, {})[container.id] = None
        self._emit(container, "create")
        return container.id

    async def start(self, container_id: str) -> None:
        """Start a created or exited container after ``start_latency``; a running one: no-op.

        Raises:
            RuntimeFailure: "start": no such container, a network is gone, a host port is
                taken, or a simulated failure.
        """
        self._check_available()
        if self._get("start", container_id).state == "running":
            return
        await anyio.sleep(self._latency(self.profile.start_latency))
        self._check_available()  # it may have gone away meanwhile
        container = self._get("start", container_id)  # it may have changed meanwhile
        if container.state == "running":
            return
        if missing := [n for n in container.spec.networks if n not in self._networks]:
            raise RuntimeFailure("start", f"{container.name}: network {missing[0]} not found")
        published = self._publish(container)
        self._maybe_fail("start", container.name)
        container.state, container.exit_code, container.published = "running", None, published
        container.run += 1
        if container.spec.healthcheck is not None:
            container.health = "starting"
            self._plan_health(container)
        self._emit(container, "start")

    async def stop(self, container_id: str, grace: float = 10) -> None:
        """Stop a running container after ``stop_latency`` (``grace`` is never needed).

        Raises:
            RuntimeFailure: "stop": no such container, or a simulated failure.
        """
        self._check_available()
        if self._get("stop", container_id).state != "running":
            return
        await anyio.sleep(self._latency(self.profile.stop_latency))
        self._check_available()  # it may have gone away meanwhile
        container = self._get("stop", container_id)
        if container.state != "running":
            return
        self._maybe_fail("stop", container.name)
        self._emit(container, "kill")
        self._exit(container, self.profile.stop_exit_code)
        self._emit(container, "stop")

    async def remove(self, container_id: str, force: bool = True) -> None:
        """Remove a container (if ``force``, a running one is killed: exit code 137).

        Raises:
            RuntimeFailure: "remove": it is running and ``force`` is False.
        """
        self._check_available()
        await checkpoint()
        container = self._find(container_id)
        if container is None:
            return
        if container.state == "running":
            if not force:
                raise RuntimeFailure("remove", f"{container.name} is running: stop it first")
            self._emit(container, "kill")
            self._exit(container, 137)
        del self._containers[container.id], self._names[container.name]
        for pair in container.labels.items():
            holders = self._by_label.get(pair)
            if holders is not None:
                holders.pop(container.id, None)
                if not holders:
                    del self._by_label[pair]
        self._emit(container, "destroy")

    async def inspect(self, container_id: str) -> ContainerState | None:
        """Return the container's state (by id, name or unique id prefix), or None."""
        self._check_available()
        await checkpoint()
        self._change_health()
        container = self._find(container_id)
        return None if container is None else container.view()

    async def list(self, labels: Mapping[str, str] | None = None) -> builtins.list[ContainerState]:
        """Return every container carrying all of ``labels``, newest first (as Docker does)."""
        self._check_available()
        await checkpoint()
        self._change_health()
        wanted = labels or {}
        if not wanted:
            return [c.view() for c in reversed(self._containers.values())]
        holders = [self._by_label.get(pair) for pair in wanted.items()]
        fewest = min(holders, key=lambda ids: 0 if ids is None else len(ids))
        if not fewest:
            return []
        found = (self._containers[i] for i in reversed(fewest))
        return [c.view() for c in found if _matches(c, wanted)]

    @asynccontextmanager
    async def open_events(
        self, labels: Mapping[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[RuntimeEvent]]:
        """Subscribe to the events of containers carrying all of ``labels``.

        Live on entry; the buffer is unbounded, so the runtime never waits for a reader.
        Iterating takes buffered events without a checkpoint and waits for the next one
        without deadline; cancelling the wait leaves the stream usable. The
        iteration ends when the engine restarts, becomes unavailable or is closed.

        Raises:
            RuntimeUnavailable: on entry, when the engine is unavailable.
        """
        self._check_available()
        send, receive = anyio.create_memory_object_stream[RuntimeEvent](math.inf)
        subscription = _Subscription(dict(labels or {}), send)
        self._subscriptions.append(subscription)
        try:
            with receive:
                yield _Events(receive, self)
        finally:
            send.close()
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    # -- logs ------------------------------------------------------------------------------

    def write_log(self, container_id: str, line: str, at: float | None = None) -> None:
        """Make a container "write" a log line (a test hook: simulated containers are mute)."""
        self._logs.setdefault(container_id, []).append((time.time() if at is None else at, line))

    @asynccontextmanager
    async def open_logs(
        self, container_id: str, options: LogOptions
    ) -> AsyncIterator[AsyncIterator[str]]:
        """The lines given to ``write_log``; following polls for more every 50 ms until the
        container no longer runs.

        Raises:
            RuntimeFailure: no such container.
            RuntimeUnavailable: the engine is unavailable.
        """
        self._check_available()
        container = self._get("logs", container_id)
        yield self._log_lines(container, options)

    async def _log_lines(self, container: _Container, options: LogOptions) -> AsyncIterator[str]:
        written = self._logs.setdefault(container.id, [])
        since = options.since
        first = [(at, line) for at, line in written if since is None or at >= since]
        if options.tail is not None:
            first = first[len(first) - options.tail :] if options.tail else []
        for at, line in first:
            yield f"{_rfc3339(at)} {line}" if options.timestamps else line
        seen = len(written)
        while options.follow and container.state == "running":
            await anyio.sleep(0.05)
            for at, line in written[seen:]:
                yield f"{_rfc3339(at)} {line}" if options.timestamps else line
            seen = len(written)

    # -- plumbing --------------------------------------------------------------------------

    def _check_available(self) -> None:
        if self._unavailable:
            raise RuntimeUnavailable(f"the simulated engine {self.name} does not answer")

    def _latency(self, latency: Latency) -> float:
        """Seconds one call takes (drawn for a range). Callers sleep themselves: a helper
        coroutine per call was a good part of a simulated host's cost."""
        if isinstance(latency, tuple):
            return self._random().uniform(*latency)
        return latency

    def _random(self) -> random.Random:
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    def _maybe_fail(self, step: str, subject: str) -> None:
        rate: float = getattr(self.profile, f"{step}_failure_rate")
        if rate and self._random().random() < rate:
            why = f"simulated failure on {self.name} ({step}_failure_rate={rate:g})"
            raise RuntimeFailure(step, f"{subject}: {why}")

    def _present(self, image: str) -> bool:
        reference = normalize_image(image)
        return reference in self._images or reference in self.profile.preloaded_images

    def _new_id(self, kind: str) -> str:
        self._serial += 1
        return hashlib.sha256(f"{self.name}/{kind}/{self._serial}".encode()).hexdigest()

    def _find(self, ref: str) -> _Container | None:
        container = self._containers.get(ref)
        if container is None and (by_name := self._names.get(ref.lstrip("/"))) is not None:
            container = self._containers[by_name]
        if container is None and ref:
            prefixed = [c for key, c in self._containers.items() if key.startswith(ref)]
            container = prefixed[0] if len(prefixed) == 1 else None
        return container

    def _get(self, step: str, ref: str) -> _Container:
        container = self._find(ref)
        if container is None:
            raise RuntimeFailure(step, f"No such container: {ref}")
        return container

    def _publish(self, container: _Container) -> builtins.list[PublishedPort]:
        """The ports a start publishes; a host port a running container holds is refused."""
        if not container.spec.ports:
            return []
        taken = [p for c in self._containers.values() for p in c.published]
        published: builtins.list[PublishedPort] = []
        for binding in container.spec.ports:
            address, port = binding.host_ip or "0.0.0.0", binding.host_port
            if port is None:
                used = {p.host_port for p in taken if p.protocol == binding.protocol}
                port = next(n for n in itertools.count(_FIRST_EPHEMERAL_PORT) if n not in used)
            elif any(_clash(p, address, port, binding.protocol) for p in taken):
                why = f"Bind for {address}:{port} failed: port is already allocated"
                raise RuntimeFailure("start", f"{container.name}: {why}")
            published.append(PublishedPort(binding.container_port, binding.protocol, address, port))
            taken.append(published[-1])
        return published

    def _exit(self, container: _Container, exit_code: int) -> None:
        container.state, container.exit_code, container.published = "exited", exit_code, []
        container.health = HEALTH_NONE
        self._emit(container, "die", exit_code)

    def _plan_health(self, container: _Container) -> None:
        """Plan the health change of the run just started (as Docker's checks would go)."""
        check = container.spec.healthcheck
        assert check is not None
        if check.command in _FAILING_CHECKS:
            # Checks run every interval; those within the start period do not count.
            first = max(1, math.ceil(check.start_period / check.interval))
            delay, status = (first + check.retries - 1) * check.interval, "unhealthy"
        else:
            delay, status = check.interval, "healthy"
        change = _HealthChange(
            anyio.current_time() + delay, next(_health_order), container.id, container.run, status
        )
        heapq.heappush(self._health_changes, change)

    def _next_health_change(self) -> float | None:
        """When the next planned health change is due (None: none is planned)."""
        return self._health_changes[0].due if self._health_changes else None

    def _change_health(self) -> None:
        """Make the health changes that are due (a run that ended has none)."""
        changes = self._health_changes
        if not changes:
            return
        now = anyio.current_time()
        while changes and changes[0].due <= now:
            change = heapq.heappop(changes)
            container = self._containers.get(change.container_id)
            if container is None or container.state != "running" or container.run != change.run:
                continue
            container.health = change.status
            self._emit(container, "health_status", detail=change.status)

    def _emit(
        self, container: _Container, action: str, exit_code: int | None = None, detail: str = ""
    ) -> None:
        if not self._subscriptions:
            return
        labels = dict(container.labels)
        event = RuntimeEvent(container.id, action, labels, exit_code, container.name, detail)
        for subscription in builtins.list(self._subscriptions):
            if _matches(container, subscription.labels):
                try:
                    subscription.send.send_nowait(event)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._subscriptions.remove(subscription)

    def _end_streams(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription.send.close()


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matches(container: _Container, wanted: Mapping[str, str]) -> bool:
    # A subset test of the items (C code, no generator for the garbage collector to count).
    return wanted.items() <= container.labels.items()


def _clash(held: PublishedPort, address: str, port: int, protocol: str) -> bool:
    same_address = held.host_ip == address or "0.0.0.0" in (held.host_ip, address)
    return held.host_port == port and held.protocol == protocol and same_address


def _overlaps(subnet: IPNetwork, others: builtins.list[IPNetwork]) -> bool:
    return any(subnet.version == other.version and subnet.overlaps(other) for other in others)
