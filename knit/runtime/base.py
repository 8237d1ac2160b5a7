"""The container runtime port: plain data and the ``ContainerRuntime`` protocol.

Layer: runtime (port). Imports only the standard library; no I/O. The agent receives a
``ContainerRuntime`` through its constructor: ``knit.runtime.docker.DockerRuntime`` in
production, a simulated runtime in ``simulations/``. Every implementation raises only
``knit.errors.RuntimeFailure`` (an operation failed; ``step`` says which) and
``knit.errors.RuntimeUnavailable`` (nothing answers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

PortProtocol = Literal["tcp", "udp"]


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one private registry.

    ``server`` is the registry's host[:port] as it appears in image references
    (``registry.example.com:5000``). The password never appears in ``repr``.
    """

    server: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class PortBinding:
    """Publish ``container_port`` on the host.

    ``host_port`` None lets the Engine pick a free port; ``host_ip`` None binds every address.
    """

    container_port: int
    protocol: PortProtocol = "tcp"
    host_port: int | None = None
    host_ip: str | None = None


@dataclass(frozen=True)
class Mount:
    """A host file or folder bind-mounted into the container (read-only unless told)."""

    source: str
    target: str
    read_only: bool = True


HEALTH_NONE = "none"
"""``ContainerState.health`` of a container without a health check, or not running."""
HEALTH_STATUSES = frozenset({"starting", "healthy", "unhealthy"})
"""Docker's health statuses of a running container with a health check."""


@dataclass(frozen=True)
class HealthCheck:
    """A command the runtime runs in the container to tell whether it is healthy.

    Attributes:
        command: run as is (exec form); ``("CMD-SHELL", "line")`` runs a shell line, and a
            leading ``"CMD"`` is accepted (Docker's ``Healthcheck.Test`` forms).
        interval: seconds between two checks (the first one runs after ``interval``).
        timeout: seconds a check may take before it counts as failed.
        retries: consecutive failures that make the container unhealthy.
        start_period: seconds after the start during which failures do not count.
    """

    command: tuple[str, ...]
    interval: float = 10.0
    timeout: float = 5.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container.

    Attributes:
        name: the container's name (unique on the host).
        image: an image reference that must already be present (see ``ContainerRuntime.pull``).
        command: replaces the image's CMD; None keeps it.
        env: environment variables (some may be secrets: never in the ``repr``).
        labels: labels; Knit finds its containers by them (``knit.node``, ``knit.deployment``).
        mounts: bind mounts.
        networks: bridge networks to join, by name; the first is the primary one.
        network_mode: "host" to share the host's network stack (then ``networks`` and
            ``ports`` must be empty); None for bridge networking.
        ports: ports to publish.
        healthcheck: the health check to run; None keeps the image's own (if it has one).
        cpu: the most CPU cores it may use (None: no limit).
        memory_bytes: the most memory it may use; above it the kernel kills it (None: no
            limit).
    """

    name: str
    image: str
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    network_mode: Literal["host"] | None = None
    ports: list[PortBinding] = field(default_factory=list)
    healthcheck: HealthCheck | None = None
    cpu: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class PublishedPort:
    """A port the Engine actually published: ``container_port/protocol`` → ``host_ip:host_port``."""

    container_port: int
    protocol: PortProtocol
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class ContainerState:
    """What the runtime knows about one container.

    Attributes:
        id: the full container id.
        name: the name, without Docker's leading "/".
        labels: its labels.
        state: "created", "running", "paused", "restarting", "removing", "exited" or "dead".
        exit_code: the last exit code once the container has exited; None before.
        image: the image reference it was created from.
        ports: the ports published now (empty unless running).
        health: while it runs, its health check's status ("starting", "healthy",
            "unhealthy"); "none" without a health check (neither its spec's nor its image's)
            and whenever it does not run (Docker keeps a stopped container's last status,
            but its list shows none: the two views agree this way).
    """

    id: str
    name: str
    labels: dict[str, str]
    state: str
    exit_code: int | None
    image: str
    ports: list[PublishedPort] = field(default_factory=list)
    health: str = HEALTH_NONE


@dataclass(frozen=True)
class RuntimeEvent:
    """A container lifecycle event.

    Attributes:
        container_id: the container it is about.
        action: "create", "start", "die", "stop", "kill", "oom", "destroy",
            "health_status", ... (Docker's action, without the detail after a colon).
        labels: the container's labels.
        exit_code: set on "die".
        name: the container's name.
        detail: what follows the colon in Docker's action: the new status of a
            "health_status" event ("healthy", "unhealthy"); "" for most actions.

    Health checks run as execs; their ``exec_*`` events are not reported.
    """

    container_id: str
    action: str
    labels: dict[str, str]
    exit_code: int | None = None
    name: str = ""
    detail: str = ""


@dataclass(frozen=True)
class RuntimeInfo:
    """The host's capacity as the runtime sees it, and the runtime's version."""

    cpus: int
    memory_bytes: int
    version: str


@dataclass(frozen=True)
class LogOptions:
    """Which of a container's log lines to read (stdout and stderr, merged).

    Attributes:
        follow: after the lines already written, wait for new ones until the container stops.
        tail: how many of the last lines to start with (None: all of them).
        since: only lines written from this time on (seconds since the epoch; None: all).
        timestamps: prefix each line with the runtime's RFC 3339 timestamp and a space.
    """

    follow: bool = False
    tail: int | None = 100
    since: float | None = None
    timestamps: bool = False


@runtime_checkable
class ContainerRuntime(Protocol):
    """What the agent needs from a container runtime.

    Every method may raise ``RuntimeUnavailable`` (nothing answers) or ``RuntimeFailure``
    (the runtime refused or failed; ``step`` names the operation). Every wait is bounded by
    the implementation. Cancelling a call abandons it: the runtime may or may not have done
    the operation, so callers reconcile by ``list``/``inspect`` afterwards.
    """

    async def version(self) -> str:
        """Return the runtime's version string."""
        ...

    async def info(self) -> RuntimeInfo:
        """Return the host's CPU count and memory, and the runtime's version."""
        ...

    async def pull(self, image: str, auth: RegistryAuth | None = None) -> None:
        """Pull ``image``, with ``auth`` for a private registry.

        Raises:
            RuntimeFailure: step "auth" when the registry refuses the credentials (or wants
                some and got none), step "pull" for any other failure.
        """
        ...

    async def has_image(self, image: str) -> bool:
        """Return whether ``image`` is present locally."""
        ...

    async def ensure_network(
        self, name: str, subnet: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Create the bridge network ``name`` (with ``subnet``) unless it exists; return its id.

        Idempotent: an existing network of that name with the same subnet (or with any subnet
        when ``subnet`` is None) is returned as is.

        Raises:
            RuntimeFailure: step "network": the existing network has another subnet, or the
                subnet overlaps another network's.
        """
        ...

    async def remove_network(self, name: str) -> None:
        """Remove the network ``name``; nothing happens if it does not exist."""
        ...

    async def create(self, spec: ContainerSpec) -> str:
        """Create (do not start) a container; return its id.

        Raises:
            RuntimeFailure: step "create": the image is not present, the name is taken, a
                network does not exist, ...
        """
        ...

    async def start(self, container_id: str) -> None:
        """Start a created or stopped container (starting a running one does nothing).

        Raises:
            RuntimeFailure: "start": no such container, or it cannot start.
        """
        ...

    async def stop(self, container_id: str, grace: float = 10) -> None:
        """Stop a container: SIGTERM, then SIGKILL after ``grace`` seconds.

        Stopping a container that is not running does nothing.

        Raises:
            RuntimeFailure: "stop": no such container.
        """
        ...

    async def remove(self, container_id: str, force: bool = True) -> None:
        """Remove a container (killing it first if ``force``); nothing happens if it is gone."""
        ...

    async def inspect(self, container_id: str) -> ContainerState | None:
        """Return the container's state, or None if it does not exist (by id or name)."""
        ...

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerState]:
        """Return every container (in any state) that carries all of ``labels``."""
        ...

    def open_events(
        self, labels: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[RuntimeEvent]]:
        """Subscribe to the events of containers that carry all of ``labels``.

        The subscription is live once the ``async with`` block is entered, so a caller can
        subscribe, then ``list`` and miss nothing in between::

            async with runtime.open_events({"knit.node": node_id}) as events:
                actual = await runtime.list({"knit.node": node_id})
                async for event in events:
                    ...

        Iterating waits (without deadline) for the next event; cancelling the waiting task
        stops the iteration, and leaving the block closes the subscription. The iterator ends
        if the runtime closes the stream (it restarted): resubscribe and re-list.

        Raises:
            RuntimeUnavailable: on entry, when nothing answers.
        """
        ...

    def open_logs(
        self, container_id: str, options: LogOptions
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Read a container's log lines (stdout and stderr merged, without their newline).

        Iterating waits (without deadline, when following) for the next line; the iteration
        ends when the lines asked for are read, or, following, when the container stops.
        Cancelling the waiting task stops it; leaving the block closes the stream.

        Raises:
            RuntimeFailure: on entry, no such container (step ``logs``).
            RuntimeUnavailable: nothing answers (on entry or while iterating).
        """
        ...

    async def close(self) -> None:
        """Release the connection to the runtime. Idempotent."""
        ...
