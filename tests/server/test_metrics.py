"""Server metrics for GET /status: lag histogram, node health, instance tallies, GC time."""

from __future__ import annotations

import gc

import pytest

from knit.server.metrics import (
    LAG_BOUNDS_MS,
    GcWatch,
    LagHistogram,
    ServerMetrics,
    bucket_value_ms,
)

pytestmark = pytest.mark.unit


def test_a_lag_lands_in_the_bucket_whose_bounds_hold_it() -> None:
    histogram = LagHistogram()
    for lag_s in (0.0, 0.0123, 0.25, -1.0, 1e9):
        histogram.add(lag_s)
    data = histogram.to_json()
    assert data["count"] == 5
    assert len(data["counts"]) == len(data["bounds_ms"]) + 1
    index = next(i for i, n in enumerate(data["counts"]) if n and i > 0 and i < 100)
    assert LAG_BOUNDS_MS[index - 1] < 12.3 <= LAG_BOUNDS_MS[index]
    assert data["counts"][-1] == 1  # beyond the last bound
    assert data["counts"][0] == 2  # 0 and a negative lag (clock skew)
    value = bucket_value_ms(index)
    assert LAG_BOUNDS_MS[index - 1] < value < LAG_BOUNDS_MS[index]


def test_instance_tallies_follow_changes_and_deployments_in_progress() -> None:
    metrics = ServerMetrics()
    metrics.instance("i1", "pending", "d1")
    metrics.instance("i2", "pending", "d1")
    metrics.instance("i1", "running", "d1")
    metrics.instance("i1", "running", "d1")  # no change
    metrics.instance("i3", "running", "d2")
    data = metrics.to_json()["instances"]
    assert data["by_status"] == {"pending": 1, "running": 2}
    assert data["placed_total"] == 2
    assert data["running_by_deployment"] == {"d1": 1, "d2": 1}
    metrics.instance_gone("i1")
    metrics.instance("i3", "lost", "d2")
    assert metrics.to_json()["instances"]["running_by_deployment"] == {"d1": 0, "d2": 0}
    assert metrics.recently_running(within=0.0) == {}


def test_node_health_lists_the_unhealthy_nodes() -> None:
    metrics = ServerMetrics()
    metrics.node("a", "healthy")
    metrics.node("b", "unhealthy")
    metrics.node("a", "unhealthy")
    nodes = metrics.to_json()["nodes"]
    assert (nodes["healthy"], nodes["unhealthy"]) == (0, 2)
    assert sorted(nodes["unhealthy_ids"]) == ["a", "b"]


def test_the_gc_watch_times_collections_until_uninstalled() -> None:
    watch = GcWatch()
    watch.install()
    try:
        gc.collect()
    finally:
        watch.uninstall()
    full = watch.collections[2]
    assert full >= 1 and watch.to_json()["collections"][2] == full
    gc.collect()
    assert watch.collections[2] == full  # no longer watching
