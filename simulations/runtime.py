"""``SimRuntime``: a memory-only ``ContainerRuntime`` for simulations and agent tests.

Layer: simulations. Imports anyio, the standard library, ``knit.errors``, ``knit.runtime.base``,
``simulations.profile`` and its parts: ``simulations.host_addresses``,
``simulations.health_schedule``, ``simulations.container_logs`` and
``simulations.event_streams``. It follows the semantics ``DockerRuntime`` shows against a real
Engine (tests/runtime/test_docker.py), so the real agent code runs on it unchanged:

- images: ``pull`` marks an image present; ``create`` needs it present. "app" and
  "app:latest" are the same image. A registry named in ``SimProfile.auth`` refuses anonymous
  or wrong credentials with ``RuntimeFailure("auth")``.
- networks: ``ensure_network`` is idempotent; another subnet for an existing name, or a subnet
  overlapping another network's, is ``RuntimeFailure("network")``. Without a subnet one is
  taken from Docker's default pools (``simulations.host_addresses``, as host ports are).
- containers: states "created", "running", "exited". Starting a running container and
  stopping a stopped one do nothing. A container is found by id, name or unique id prefix.
  The simulated workload exits at once on SIGTERM, with ``SimProfile.stop_exit_code``.
- events: "create"; "start"; "kill", "die", "stop" for a stop; "kill", "die", "destroy" for
  a forced remove of a running container; "destroy"; "health_status" (detail "healthy" or
  "unhealthy"). Delivered to every open subscription whose labels match
  (``simulations.event_streams``).
- health checks: a container created with one is "starting" from each start, then "healthy"
  or "unhealthy" as ``simulations.health_schedule`` plans it; each change is a
  "health_status" event. Without one, "none".
- logs: the lines a test gave ``write_log`` (``simulations.container_logs``).

Several runtimes in one process are independent hosts, one per simulated node. Per-instance
state is a few slots and empty collections; the random generator is made on first use.
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import random
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
from anyio.lowlevel import checkpoint

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
from simulations.container_logs import ContainerLogs
from simulations.event_streams import Subscriptions
from simulations.health_schedule import HealthSchedule
from simulations.host_addresses import Networks, publish
from simulations.profile import Latency, SimProfile, normalize_image, registry_of

_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_instances = itertools.count(1)


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
        self._networks = Networks()
        self._containers: dict[str, _Container] = {}
        self._names: dict[str, str] = {}
        # (label, value) -> ids of the containers carrying it, oldest first: ``list`` by
        # labels costs what it finds, not every container of the host.
        self._by_label: dict[tuple[str, str], dict[str, None]] = {}
        self._subscriptions = Subscriptions()
        self._health = HealthSchedule()
        self._logs = ContainerLogs()

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
        return self._networks.ensure(name, subnet, labels, self._new_id)

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
        self._networks.remove(name)

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
            self._health.plan(container.id, container.run, container.spec.healthcheck)
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
        with self._subscriptions.open(labels, self._health.next_due, self._change_health) as events:
            yield events

    # -- logs ------------------------------------------------------------------------------

    def write_log(self, container_id: str, line: str, at: float | None = None) -> None:
        """Make a container "write" a log line (a test hook: simulated containers are mute)."""
        self._logs.write(container_id, line, time.time() if at is None else at)

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
        yield self._logs.lines(container.id, options, lambda: container.state == "running")

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
        return publish(container.name, container.spec.ports, taken)

    def _exit(self, container: _Container, exit_code: int) -> None:
        container.state, container.exit_code, container.published = "exited", exit_code, []
        container.health = HEALTH_NONE
        self._emit(container, "die", exit_code)

    def _change_health(self) -> None:
        """Make the health changes that are due (a run that ended has none)."""
        for change in self._health.pop_due():
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
        self._subscriptions.deliver(event, container.labels)

    def _end_streams(self) -> None:
        self._subscriptions.end()


def _matches(container: _Container, wanted: Mapping[str, str]) -> bool:
    # A subset test of the items (C code, no generator for the garbage collector to count).
    return wanted.items() <= container.labels.items()
