"""The server's Prometheus collector (knit.server.prometheus), parsed back with
prometheus-client's own parser."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from knit.bus import BusStats
from knit.server.bridge import BridgeStats
from knit.server.metrics import LAG_BOUNDS_MS, ServerMetrics
from knit.server.prometheus import lag_buckets, server_registry
from knit.store.writer import WriterStats

pytestmark = pytest.mark.unit


@dataclass
class FakeBus:
    connected: bool = True
    stats: BusStats = field(default_factory=BusStats)


@dataclass
class FakeWriter:
    queued: int = 0
    stats: WriterStats = field(default_factory=WriterStats)


def scrape(
    metrics: ServerMetrics, bus: FakeBus, bridge: BridgeStats, writer: FakeWriter
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = server_registry(metrics, bus, bridge, writer)
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_the_counters_of_the_actors_are_read_at_each_scrape() -> None:
    metrics, bus, bridge, writer = ServerMetrics(), FakeBus(), BridgeStats(), FakeWriter()
    metrics.node("n1", "healthy")
    metrics.node("n2", "unhealthy")
    metrics.instance("i1", "pending", "d1")
    metrics.instance("i1", "running", "d1", "starting")
    metrics.instance("i2", "running", "d1", "healthy")
    metrics.deployments = 1
    metrics.task_ended("deploy", "succeeded")
    metrics.task_ended("deploy", "succeeded")
    metrics.task_ended("stop", "failed")
    bus.stats.published, bus.stats.received = 7, 9
    bridge.heartbeats, bridge.statuses, bridge.late_statuses = 5, 4, 1
    writer.queued, writer.stats.batches, writer.stats.ops = 3, 2, 11

    first = scrape(metrics, bus, bridge, writer)
    assert first["knit_nodes", (("status", "healthy"),)] == 1
    assert first["knit_nodes", (("status", "unhealthy"),)] == 1
    assert first["knit_instances", (("health", "starting"), ("status", "running"))] == 1
    assert first["knit_instances", (("health", "healthy"), ("status", "running"))] == 1
    assert ("knit_instances", (("health", "none"), ("status", "pending"))) not in first
    assert first["knit_deployments", ()] == 1
    assert first["knit_tasks_ended_total", (("kind", "deploy"), ("result", "succeeded"))] == 2
    assert first["knit_tasks_ended_total", (("kind", "stop"), ("result", "failed"))] == 1
    assert first["knit_instances_placed_total", ()] == 2
    assert first["knit_bus_messages_total", (("direction", "published"),)] == 7
    assert first["knit_bus_messages_total", (("direction", "received"),)] == 9
    assert first["knit_bridge_messages_total", (("kind", "status"), ("outcome", "late"))] == 1
    assert first["knit_store_writer_queued", ()] == 3
    assert first["knit_store_writer_batches_total", ()] == 2
    assert first["knit_store_writer_ops_total", ()] == 11
    assert ("process_cpu_seconds_total", ()) in first

    metrics.instance("i1", "running", "d1", "healthy")
    metrics.instance_gone("i2")
    metrics.node("n2", "healthy")
    second = scrape(metrics, bus, bridge, writer)
    assert second["knit_nodes", (("status", "healthy"),)] == 2
    assert second["knit_nodes", (("status", "unhealthy"),)] == 0
    assert second["knit_instances", (("health", "healthy"), ("status", "running"))] == 1
    assert ("knit_instances", (("health", "starting"), ("status", "running"))) not in second
    assert metrics.to_json()["instances"]["by_status"] == {"running": 1}


def test_heartbeat_lag_histogram_has_exact_cumulative_buckets() -> None:
    metrics = ServerMetrics()
    for lag_s in (0.0005, 0.002, 0.002, 0.3, 1e9):
        metrics.heartbeat(lag_s)
    samples = scrape(metrics, FakeBus(), BridgeStats(), FakeWriter())
    buckets = {
        float(dict(labels)["le"]): value
        for (name, labels), value in samples.items()
        if name == "knit_heartbeat_lag_seconds_bucket"
    }
    assert buckets[float("inf")] == 5
    assert samples["knit_heartbeat_lag_seconds_count", ()] == 5
    assert samples["knit_heartbeat_lag_seconds_sum", ()] == pytest.approx(1e9 + 0.3045, rel=1e-9)
    for le, count in buckets.items():
        expected = sum(lag <= le for lag in (0.0005, 0.002, 0.002, 0.3, 1e9))
        assert count == expected, le
    assert len(lag_buckets(metrics.heartbeat_lag)) == len(LAG_BOUNDS_MS) // 8 + 1


def test_a_health_change_alone_keeps_the_status_tally() -> None:
    metrics = ServerMetrics()
    metrics.instance("i1", "running", "d1", "starting")
    metrics.instance("i1", "running", "d1", "healthy")
    assert metrics.instance_counts["running"] == 1
    assert metrics.placed_total == 1
    assert +metrics.instance_health == {("running", "healthy"): 1}


def test_each_registry_is_its_own() -> None:
    a = server_registry(ServerMetrics(), FakeBus(), BridgeStats(), FakeWriter())
    b = server_registry(ServerMetrics(), FakeBus(), BridgeStats(), FakeWriter())
    assert a is not b
    assert generate_latest(a) and generate_latest(b)
