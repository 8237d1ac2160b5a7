"""The agent's Prometheus metrics, and the small HTTP server of ``knit agent --metrics``.

Layer: agent. Imports anyio and prometheus-client.

:class:`AgentMetrics` holds one registry per agent (the simulation harness runs many agents
in one process, so never the library's global one): the containers of this node by status
(read from the Reconciler's table at scrape time), the tasks' durations by kind and result,
and the latency of each Docker Engine call by operation (``DockerRuntime``'s ``on_call``).

:func:`serve_metrics` answers ``GET /metrics`` on ``HOST:PORT`` in the agent's own event
loop. It is bounded: at most ``MAX_CONNECTIONS`` at once (others are closed at once), a
request line and headers of at most ``MAX_REQUEST_BYTES``, read within ``REQUEST_TIMEOUT``
seconds, one request per connection. It has no authentication: bind it to an address only
the scraper reaches (docs/operations.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import anyio
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 4
"""Scrapes answered at once; a connection beyond them is closed without an answer."""
MAX_REQUEST_BYTES = 8192
"""The longest request (line and headers) read."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its request, and then to read the answer."""
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
"""Seconds: a task without a pull takes a fraction of a second, one with a pull minutes."""
DOCKER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds: the Engine answers an inspect in a millisecond, a stop can take its grace."""


class _Containers(Collector):
    """``knit_agent_containers{status}``, counted from the statuses given at scrape time."""

    def __init__(self) -> None:
        self.statuses: Callable[[], Iterable[str]] = lambda: ()

    def collect(self) -> Iterator[Metric]:
        counts = Counter(self.statuses())
        family = GaugeMetricFamily(
            "knit_agent_containers",
            "Knit's containers on this node by status (running, pending, stopped).",
            labels=["status"],
        )
        for status in sorted({"running", *counts}):
            family.add_metric([status], counts.get(status, 0))
        yield family


class AgentMetrics:
    """One agent's metrics and their registry.

    Args:
        process: also export the process's CPU, memory and file descriptors (off in the
            simulation harness, where many agents share one process).
    """

    def __init__(self, *, process: bool = False) -> None:
        self.registry = CollectorRegistry()
        self._containers = _Containers()
        self.registry.register(self._containers)
        if process:
            ProcessCollector(registry=self.registry)
        self.task_duration = Histogram(
            "knit_agent_task_duration_seconds",
            "Time a task took on this agent, from its start to its final status.",
            ["kind", "result"],
            registry=self.registry,
            buckets=TASK_BUCKETS,
        )
        self.docker_call = Histogram(
            "knit_agent_docker_call_duration_seconds",
            "Latency of each Docker Engine API call, by operation and outcome (ok, error).",
            ["operation", "outcome"],
            registry=self.registry,
            buckets=DOCKER_BUCKETS,
        )

    def count_containers(self, statuses: Callable[[], Iterable[str]]) -> None:
        """Where the containers' statuses are read at each scrape (the Reconciler's table)."""
        self._containers.statuses = statuses

    def task_ended(self, kind: str, result: str, seconds: float) -> None:
        """A ``kind`` task ended with ``result`` after ``seconds``."""
        self.task_duration.labels(kind, result).observe(seconds)

    def docker_called(self, operation: str, seconds: float, ok: bool) -> None:
        """A Docker Engine call (``operation``) took ``seconds``."""
        self.docker_call.labels(operation, "ok" if ok else "error").observe(seconds)

    def render(self) -> bytes:
        """The text format of every metric."""
        return generate_latest(self.registry)


def parse_listen(value: str) -> tuple[str, int]:
    """``("127.0.0.1", 9101)`` of ``127.0.0.1:9101`` (``[::1]:9101`` for IPv6; port 0: any).

    Raises:
        ValueError: not ``HOST:PORT`` with a port from 0 to 65535.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host.strip("[]"), port


def _reply(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _read_request(stream: SocketStream) -> bytes | None:
    """The request line and headers, or None if too long or cut short."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST_BYTES:
            return None
        try:
            data += await stream.receive(4096)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
    return data


async def serve_metrics(
    metrics: AgentMetrics,
    listen: str,
    *,
    task_status: TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``listen`` (``HOST:PORT``) until cancelled; reports the
    address it listens on (the port chosen, with port 0) through ``task_status``.

    Cancellation closes the listener and every open connection.

    Raises:
        ValueError: ``listen`` is not ``HOST:PORT``.
        OSError: the address cannot be listened on.
    """
    host, port = parse_listen(listen)
    limiter = anyio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                return  # too many at once: closed without an answer
            try:
                with anyio.move_on_after(REQUEST_TIMEOUT):
                    await stream.send(await _answer(stream, metrics))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the scraper left
            finally:
                limiter.release()

    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_address)
        log.info("agent metrics on http://%s:%s/metrics", bound[0], bound[1])
        task_status.started((str(bound[0]), int(bound[1])))
        await listener.serve(handle)


async def _answer(stream: SocketStream, metrics: AgentMetrics) -> bytes:
    request = await _read_request(stream)
    if request is None:
        return _reply("400 Bad Request", b"bad request\n")
    parts = request.split(b"\r\n", 1)[0].split()
    if len(parts) != 3:
        return _reply("400 Bad Request", b"bad request\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return _reply("404 Not Found", b"only /metrics is served here\n")
    if method not in (b"GET", b"HEAD"):
        return _reply("405 Method Not Allowed", b"GET only\n")
    reply = _reply("200 OK", metrics.render(), CONTENT_TYPE_LATEST)
    return reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == b"HEAD" else reply
