"""``DockerRuntime``: the ``ContainerRuntime`` port implemented on the Docker Engine API.

Layer: runtime (adapter). Imports aiodocker, aiohttp and anyio; nothing from Knit but
``knit.errors``, ``knit.runtime.base``, ``knit.runtime.docker_translation`` (the pure
conversions between Knit's runtime data and the Engine's JSON) and ``knit.runtime.docker_streams``
(the Engine's event and log streams read as iterators). Every aiodocker/aiohttp error
is translated at this boundary into ``RuntimeFailure`` (with the step) or
``RuntimeUnavailable``, and every call is bounded by a deadline, so a wedged Engine cannot
hang the agent.
"""

from __future__ import annotations

import builtins
import ipaddress
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any

import aiodocker
import aiohttp
import anyio

from knit.errors import RuntimeFailure, RuntimeUnavailable
from knit.runtime.base import (
    ContainerSpec,
    ContainerState,
    LogOptions,
    RegistryAuth,
    RuntimeEvent,
    RuntimeInfo,
)
from knit.runtime.docker_streams import EventStream, listed_frames, log_lines
from knit.runtime.docker_translation import (
    container_config,
    existing_network_id,
    state_from_inspect,
    state_from_list,
)

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
LISTED_TAIL = 10_000
"""Past this many lines (or all of them), logs not followed are streamed, not listed."""

# How the Engine says a registry refused us; it answers 500 with the registry's words.
_AUTH_FAILURE = re.compile(
    r"unauthorized|authentication required|no basic auth credentials|denied", re.IGNORECASE
)
_LIST_KEYS = ("Id", "Names", "Image", "Labels", "State", "Status", "Ports")


class DockerRuntime:
    """A ``ContainerRuntime`` talking to one Docker Engine through aiodocker.

    Use as ``async with DockerRuntime() as runtime`` or call ``close()``. The connection is
    opened lazily on the first call, inside the running event loop (asyncio backend only:
    aiohttp does not run on trio).

    Args:
        docker_host: the Engine's address (``unix:///path``, ``tcp://host:port``); default
            ``$DOCKER_HOST``, then ``unix:///var/run/docker.sock``.
        api_timeout: deadline in seconds of each ordinary API call.
        pull_timeout: deadline in seconds of a whole image pull.
        connect_timeout: deadline in seconds to open a connection to the Engine.
        on_call: told each call's step, its duration in seconds and whether it succeeded
            (the agent's metrics); never of the events stream, which waits by design.
    """

    def __init__(
        self,
        docker_host: str | None = None,
        *,
        api_timeout: float = 30.0,
        pull_timeout: float = 600.0,
        connect_timeout: float = 5.0,
        on_call: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.host = docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self.api_timeout = api_timeout
        self.pull_timeout = pull_timeout
        self.connect_timeout = connect_timeout
        self.on_call = on_call
        self._docker: aiodocker.Docker | None = None
        self._network_locks: dict[str, anyio.Lock] = {}

    def __repr__(self) -> str:
        return f"DockerRuntime({self.host!r})"

    async def __aenter__(self) -> DockerRuntime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool. Idempotent; shielded, so cancellation cannot leak it."""
        docker, self._docker = self._docker, None
        if docker is not None:
            with anyio.CancelScope(shield=True):
                await docker.close()

    # -- plumbing --------------------------------------------------------------------------

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            try:
                self._docker = aiodocker.Docker(
                    url=self.host,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                )
            except ValueError as exc:
                raise RuntimeUnavailable(f"bad Docker host {self.host!r}: {exc}") from exc
        return self._docker

    def _unavailable(self, exc: BaseException) -> RuntimeUnavailable:
        reason = exc.message if isinstance(exc, aiodocker.DockerError) else str(exc)
        return RuntimeUnavailable(f"no Docker Engine answers at {self.host}: {reason}")

    @contextmanager
    def _call(self, step: str, timeout: float | None = None) -> Iterator[None]:
        """Bound the block by a deadline and translate library errors into Knit's.

        An ordinary call past its deadline means the Engine is wedged: ``RuntimeUnavailable``.
        A pull past its deadline may just be a slow registry: ``RuntimeFailure("pull")``.
        """
        limit = self.api_timeout if timeout is None else timeout
        started = time.perf_counter()
        ok = False
        try:
            with anyio.fail_after(limit):
                yield
            ok = True
        except TimeoutError as exc:
            if step == "pull":
                raise RuntimeFailure(step, f"not finished after {limit:g} s") from exc
            raise RuntimeUnavailable(
                f"the Docker Engine at {self.host} did not answer within {limit:g} s ({step})"
            ) from exc
        except aiodocker.DockerError as exc:
            if exc.status == 900:  # aiodocker's code for "could not connect"
                raise self._unavailable(exc) from exc
            raise RuntimeFailure(step, str(exc.message)) from exc
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            raise self._unavailable(exc) from exc
        except aiohttp.ClientError as exc:
            raise RuntimeFailure(step, f"{type(exc).__name__}: {exc}") from exc
        finally:
            if self.on_call is not None and step != "events":
                self.on_call(step, time.perf_counter() - started, ok)

    # -- engine ----------------------------------------------------------------------------

    async def version(self) -> str:
        """Return the Engine's version (``20.10.24+dfsg1``)."""
        with self._call("version"):
            data = await self._client().version()
        return str(data["Version"])

    async def info(self) -> RuntimeInfo:
        """Return the host's CPUs and memory as the Engine reports them."""
        with self._call("info"):
            data = await self._client().system.info()
        return RuntimeInfo(
            cpus=int(data["NCPU"]),
            memory_bytes=int(data["MemTotal"]),
            version=str(data["ServerVersion"]),
        )

    # -- images ----------------------------------------------------------------------------

    async def pull(self, image: str, auth: RegistryAuth | None = None) -> None:
        """Pull ``image``; with ``auth``, the image must name the registry host.

        Bounded by ``pull_timeout``. Cancelling abandons the pull (the Engine may finish it).

        Raises:
            RuntimeFailure: "auth" when the registry refuses (or wants) credentials; "pull"
                otherwise (unknown image, registry unreachable, timeout).
            RuntimeUnavailable: the Engine does not answer.
        """
        credentials: dict[str, str] | None = None
        if auth is not None:
            if "/" not in image:
                raise RuntimeFailure(
                    "pull", f"image {image!r} names no registry host for the credentials"
                )
            credentials = {
                "username": auth.username,
                "password": auth.password,
                "serveraddress": auth.server,
            }
        who = f"user {auth.username!r}" if auth is not None else "an anonymous client"
        log.info("pulling image %s as %s", image, who)
        try:
            with self._call("pull", self.pull_timeout):
                await self._client().images.pull(image, auth=credentials)
        except RuntimeFailure as exc:
            if _AUTH_FAILURE.search(exc.message):
                raise RuntimeFailure(
                    "auth", f"the registry refused {who} for {image}: {exc.message}"
                ) from exc.__cause__
            raise RuntimeFailure("pull", f"{image}: {exc.message}") from exc.__cause__

    async def has_image(self, image: str) -> bool:
        """Return whether ``image`` is present on this host."""
        try:
            with self._call("inspect"):
                await self._client().images.inspect(image)
        except RuntimeFailure as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    # -- networks --------------------------------------------------------------------------

    async def ensure_network(
        self, name: str, subnet: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Create the bridge network ``name`` unless it exists; return its id.

        Raises:
            RuntimeFailure: "network": another subnet, an overlapping subnet, a bad subnet.
        """
        wanted = None
        if subnet is not None:
            try:
                wanted = ipaddress.ip_network(subnet, strict=False)
            except ValueError as exc:
                raise RuntimeFailure("network", f"bad subnet {subnet!r}: {exc}") from exc
        # One create at a time per name here; another agent on the same Engine may still
        # race us, and Docker then reports a pool overlap rather than a name conflict, so any
        # failed create looks the network up once more before giving up.
        lock = self._network_locks.setdefault(name, anyio.Lock())
        async with lock:
            return await self._ensure_network(name, wanted, labels)

    async def _ensure_network(
        self,
        name: str,
        wanted: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
        labels: Mapping[str, str] | None,
    ) -> str:
        for attempt in range(2):
            found = await self._find_network(name)
            if found is not None:
                return existing_network_id(name, found, wanted)
            config: dict[str, Any] = {
                "Name": name,
                "Driver": "bridge",
                "CheckDuplicate": True,
                "Labels": dict(labels or {}),
            }
            if wanted is not None:
                config["IPAM"] = {"Driver": "default", "Config": [{"Subnet": str(wanted)}]}
            try:
                with self._call("network"):
                    network = await self._client().networks.create(config)
            except RuntimeFailure as exc:
                if attempt == 0:  # maybe created concurrently: look again
                    continue
                raise RuntimeFailure(
                    "network", f"cannot create {name}: {exc.message}"
                ) from exc.__cause__
            log.info("created network %s (%s)", name, wanted or "subnet chosen by Docker")
            return str(network.id)
        raise RuntimeFailure("network", f"cannot create {name}: it keeps conflicting")

    async def _find_network(self, name: str) -> dict[str, Any] | None:
        with self._call("network"):
            # The "name" filter matches substrings: compare exactly.
            networks = await self._client().networks.list(filters={"name": name})
        for network in networks:
            if network.get("Name") == name:
                return network
        return None

    async def remove_network(self, name: str) -> None:
        """Remove the network ``name``; a missing network is not an error.

        Raises:
            RuntimeFailure: "network": containers are still attached.
        """
        found = await self._find_network(name)
        if found is None:
            return
        try:
            with self._call("network"):
                network = await self._client().networks.get(str(found["Id"]))
                await network.delete()
        except RuntimeFailure as exc:
            if _status(exc) != 404:
                raise

    # -- containers ------------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> str:
        """Create a container from ``spec`` (the image must be present); return its id.

        Raises:
            RuntimeFailure: "create" (image absent, name taken, unknown network, bad spec).
        """
        config = container_config(spec)
        docker = self._client()
        try:
            with self._call("create"):
                container = await docker.containers.create(config, name=spec.name)
        except RuntimeFailure as exc:
            if exc.message.startswith("No such image"):
                raise RuntimeFailure(
                    "create", f"image {spec.image} is not present on this host (pull it first)"
                ) from exc.__cause__
            raise RuntimeFailure("create", f"{spec.name}: {exc.message}") from exc.__cause__
        container_id = str(container.id)
        # API 1.41 attaches one network at create; the others are connected afterwards.
        try:
            for network in spec.networks[1:]:
                with self._call("create"):
                    net = await docker.networks.get(network)
                    await net.connect({"Container": container_id})
        except RuntimeFailure as exc:
            await self._discard(container_id)
            raise RuntimeFailure(
                "create", f"{spec.name}: cannot join network: {exc.message}"
            ) from exc.__cause__
        except BaseException:  # cancelled, or the Engine went away: leave nothing half-made
            await self._discard(container_id)
            raise
        log.info("created container %s (%s) from %s", spec.name, container_id[:12], spec.image)
        return container_id

    async def _discard(self, container_id: str) -> None:
        """Remove a half-made container; best effort, shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            try:
                await self.remove(container_id)
            except (RuntimeFailure, RuntimeUnavailable) as exc:
                log.warning("could not remove half-made container %s: %s", container_id, exc)

    async def start(self, container_id: str) -> None:
        """Start a container (a running one is left alone)."""
        with self._call("start"):
            await self._client().containers.container(container_id).start()

    async def stop(self, container_id: str, grace: float = 10) -> None:
        """Stop a container: SIGTERM, SIGKILL after ``grace`` s (a stopped one is left alone).

        Bounded by ``api_timeout`` plus the grace period.
        """
        seconds = max(0, math.ceil(grace))
        with self._call("stop", self.api_timeout + seconds):
            await self._client().containers.container(container_id).stop(t=seconds)

    async def remove(self, container_id: str, force: bool = True) -> None:
        """Remove a container and its anonymous volumes; a missing one is not an error."""
        try:
            with self._call("remove"):
                await self._client().containers.container(container_id).delete(force=force, v=True)
        except RuntimeFailure as exc:
            if _status(exc) == 404 or "already in progress" in exc.message:
                return
            raise

    async def inspect(self, container_id: str) -> ContainerState | None:
        """Return the container's state, or None if there is no such container."""
        try:
            with self._call("inspect"):
                data = await self._client().containers.container(container_id).show()
        except RuntimeFailure as exc:
            if _status(exc) == 404:
                return None
            raise
        return state_from_inspect(data)

    async def list(self, labels: Mapping[str, str] | None = None) -> builtins.list[ContainerState]:
        """Return every container, in any state, carrying all of ``labels``."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in (labels or {}).items()]})
        with self._call("list"):
            containers = await self._client().containers.list(all=True, filters=filters)
        return [state_from_list({k: c[k] for k in _LIST_KEYS if k in c}) for c in containers]

    # -- events ----------------------------------------------------------------------------

    @asynccontextmanager
    async def open_events(
        self, labels: Mapping[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[RuntimeEvent]]:
        """Subscribe to container events carrying all of ``labels`` (see ``ContainerRuntime``).

        The request asks for events since the moment of subscribing, so the Engine replays
        any that raced with the subscription. Iteration has no deadline; cancelling the
        waiting task stops it. The iterator ends when the Engine closes the stream and raises
        ``RuntimeUnavailable`` if the connection breaks.
        """
        filters: dict[str, list[str]] = {"type": ["container"]}
        if labels:
            filters["label"] = [f"{k}={v}" for k, v in labels.items()]
        params = {"filters": json.dumps(filters), "since": f"{time.time():.6f}"}
        async with AsyncExitStack() as stack:
            with self._call("events"):
                # aiodocker's public events API runs its own asyncio task; a plain request
                # keeps the stream inside the caller's task and cancel scopes.
                response = await stack.enter_async_context(
                    self._client()._query(
                        "events",
                        params=params,
                        timeout=aiohttp.ClientTimeout(sock_connect=self.connect_timeout),
                    )
                )
            stack.callback(response.close)
            yield EventStream(response, self._unavailable)

    # -- logs ------------------------------------------------------------------------------

    @asynccontextmanager
    async def open_logs(
        self, container_id: str, options: LogOptions
    ) -> AsyncIterator[AsyncIterator[str]]:
        """Read a container's log lines (see ``ContainerRuntime.open_logs``).

        aiodocker splits the Engine's multiplexed stream into frames (a frame is what one
        write of the container gave, not a line); the lines are cut here, stdout and stderr
        each keeping its own partial line would need the frame's stream, which aiodocker
        does not expose: a line written in two pieces by both streams at once can mix.
        """
        params: dict[str, Any] = {"timestamps": options.timestamps}
        params["tail"] = "all" if options.tail is None else str(options.tail)
        if options.since is not None:
            params["since"] = f"{options.since:.6f}"
        with self._call("logs"):
            container = await self._client().containers.get(container_id)
        if options.follow or options.tail is None or options.tail > LISTED_TAIL:
            if not options.follow:
                # Streamed up to now rather than listed: a long log is not held whole in
                # memory (the Engine ends a followed stream at ``until``, ~0.5 s later).
                params["until"] = f"{time.time():.9f}"
            frames: AsyncIterator[str] = container.log(
                stdout=True, stderr=True, follow=True, **params
            )
        else:
            with self._call("logs"):
                listed = await container.log(stdout=True, stderr=True, follow=False, **params)
            frames = listed_frames(listed)
        lines = log_lines(frames, self._unavailable)
        try:
            yield lines
        finally:
            with anyio.CancelScope(shield=True):
                await lines.aclose()
                aclose = getattr(frames, "aclose", None)
                if aclose is not None:
                    await aclose()


# -- helpers -------------------------------------------------------------------------------
# The translation of Knit's data to and from the Engine's JSON is in docker_translation, the
# reading of its event and log streams in docker_streams.


def _status(exc: RuntimeFailure) -> int | None:
    cause = exc.__cause__
    return cause.status if isinstance(cause, aiodocker.DockerError) else None
