"""The server's Prometheus metrics: its in-memory counters, read at scrape time.

Layer: server. Imports prometheus-client, :mod:`knit.server.metrics` and the counters of the
bus, the bridge and the store writer. The actors never touch prometheus-client: they bump
the plain counters of :class:`knit.server.metrics.ServerMetrics` (a dict update, no lock),
and :class:`ServerCollector` turns them into metric families when ``GET /metrics`` is
scraped. A scrape costs O(nodes) (the nodes are counted by status) plus a few dozen
families, whatever the number of instances: those are counted as they change.

Each server builds its own :class:`prometheus_client.CollectorRegistry`
(:func:`server_registry`), never the library's global one: tests run several servers in
one process. docs/operations.md lists every metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from knit.bus import BusStats
from knit.server.bridge import BridgeStats
from knit.server.metrics import LAG_BOUNDS_MS, LagHistogram, ServerMetrics
from knit.store.writer import WriterStats

LAG_EXPORTED_EVERY = 8
"""The heartbeat lag is kept in 170 buckets 10 % wide; every 8th bound (each ~2.1 times
the one before, 0.1 ms to 10 min) is exported: 22 buckets, exact cumulative counts."""
NODE_STATUSES = ("healthy", "unhealthy")
"""Node statuses always exported (0 when no node has them), so a dashboard sees the series."""


class BusView(Protocol):
    """What the collector reads of the bus adapter."""

    @property
    def connected(self) -> bool: ...

    @property
    def stats(self) -> BusStats: ...


class WriterView(Protocol):
    """What the collector reads of the store writer."""

    @property
    def queued(self) -> int: ...

    @property
    def stats(self) -> WriterStats: ...


def lag_buckets(lag: LagHistogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs in seconds, ``+Inf`` last, for the exported bounds."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    counts = lag.counts
    for index, bound_ms in enumerate(LAG_BOUNDS_MS):
        cumulative += counts[index]
        if index % LAG_EXPORTED_EVERY == LAG_EXPORTED_EVERY - 1:
            buckets.append((repr(bound_ms / 1000.0), float(cumulative)))
    buckets.append(("+Inf", float(lag.total)))
    return buckets


class ServerCollector(Collector):
    """Metric families from the server's live counters, built at each scrape.

    Args:
        metrics: the actors' counters (``ServerContext.metrics``).
        bus: the NATS adapter (its ``stats`` and ``connected``).
        bridge: the bus bridge's counters.
        writer: the store writer (its queue and ``stats``).
    """

    def __init__(
        self, metrics: ServerMetrics, bus: BusView, bridge: BridgeStats, writer: WriterView
    ) -> None:
        self.metrics = metrics
        self.bus = bus
        self.bridge = bridge
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        """Every family of the server (see docs/operations.md)."""
        yield from self._cluster()
        yield from self._bus()
        yield from self._writer()

    def _cluster(self) -> Iterator[Metric]:
        m = self.metrics
        nodes = GaugeMetricFamily("knit_nodes", "Nodes by status.", labels=["status"])
        by_status = Counter(m.node_status.values())
        for status in (*NODE_STATUSES, *sorted(set(by_status) - set(NODE_STATUSES))):
            nodes.add_metric([status], by_status.get(status, 0))
        yield nodes

        instances = GaugeMetricFamily(
            "knit_instances",
            "Container instances by status and health.",
            labels=["status", "health"],
        )
        for (status, health), count in sorted(m.instance_health.items()):
            if count:
                instances.add_metric([status, health], count)
        yield instances

        yield GaugeMetricFamily("knit_deployments", "Deployments the server runs.", m.deployments)

        tasks = CounterMetricFamily(
            "knit_tasks_ended",
            "Tasks that ended, by kind (deploy, stop) and result (succeeded, failed, unaccepted).",
            labels=["kind", "result"],
        )
        for (kind, result), count in sorted(m.tasks_ended.items()):
            tasks.add_metric([kind, result], count)
        yield tasks

        yield CounterMetricFamily(
            "knit_instances_placed",
            "Instances that became running (placements that took effect).",
            m.placed_total,
        )

        lag = m.heartbeat_lag
        yield HistogramMetricFamily(
            "knit_heartbeat_lag_seconds",
            "Time from an agent sending a heartbeat to its NodeActor applying it.",
            buckets=lag_buckets(lag),
            sum_value=lag.sum_ms / 1000.0,
        )

    def _bus(self) -> Iterator[Metric]:
        stats = self.bus.stats
        yield GaugeMetricFamily(
            "knit_bus_connected", "1 while the NATS connection is up.", int(self.bus.connected)
        )
        messages = CounterMetricFamily(
            "knit_bus_messages", "NATS messages by direction.", labels=["direction"]
        )
        messages.add_metric(["published"], stats.published)
        messages.add_metric(["received"], stats.received)
        yield messages
        yield CounterMetricFamily(
            "knit_bus_handler_errors", "NATS messages whose handler raised.", stats.handler_errors
        )
        yield CounterMetricFamily("knit_bus_reconnects", "Reconnections to NATS.", stats.reconnects)
        bridge = CounterMetricFamily(
            "knit_bridge_messages",
            "Messages the bus bridge handled, by kind and outcome.",
            labels=["kind", "outcome"],
        )
        b = self.bridge
        bridge.add_metric(["heartbeat", "delivered"], b.heartbeats)
        bridge.add_metric(["status", "delivered"], b.statuses - b.late_statuses)
        bridge.add_metric(["status", "late"], b.late_statuses)
        bridge.add_metric(["any", "undecodable"], b.rejected)
        bridge.add_metric(["any", "refused"], b.refused)
        yield bridge

    def _writer(self) -> Iterator[Metric]:
        w = self.writer
        s = w.stats
        yield GaugeMetricFamily(
            "knit_store_writer_queued", "Store writes queued, not yet committed.", w.queued
        )
        yield CounterMetricFamily(
            "knit_store_writer_batches", "Transactions the store writer committed.", s.batches
        )
        yield CounterMetricFamily(
            "knit_store_writer_ops", "Writes the store writer ran in its batches.", s.ops
        )
        yield CounterMetricFamily(
            "knit_store_writer_failed_ops", "Writes that failed.", s.failed_ops
        )
        yield CounterMetricFamily(
            "knit_store_writer_retried_batches",
            "Batches retried one write at a time.",
            s.retried_batches,
        )
        yield GaugeMetricFamily(
            "knit_store_writer_largest_batch",
            "The most writes in one batch so far.",
            s.largest_batch,
        )
        yield CounterMetricFamily(
            "knit_store_writer_write_seconds", "Time spent committing batches.", s.write_s
        )


def server_registry(
    metrics: ServerMetrics, bus: BusView, bridge: BridgeStats, writer: WriterView
) -> CollectorRegistry:
    """A registry of its own for one server: its counters, and the process's (CPU, memory,
    file descriptors, garbage collector, Python version). The API adds its request metrics
    to it (:func:`knit.api.app.create_app`)."""
    registry = CollectorRegistry()
    registry.register(ServerCollector(metrics, bus, bridge, writer))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
