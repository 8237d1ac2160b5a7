"""Benchmark of the server's ``GET /metrics`` rendering at 1,000 nodes and 100,000 instances.

Run ``python -m benchmarks.bench_metrics``. It fills a ``ServerMetrics`` as the actors would
(1,000 nodes, 100,000 instances over a few statuses and healths, 1,000 deployments, a
heartbeat lag per node and 100,000 ended tasks), builds the server's registry on it
(``knit.server.prometheus.server_registry``) and times ``generate_latest`` (what the route
does, without HTTP), then the cost of the actors' counter updates. Prints one JSON object:

    render_p50_ms, render_max_ms   one rendering of every metric (``RENDERS`` of them)
    bytes                          the size of the text
    instance_update_us             one ``ServerMetrics.instance`` call (a status change)

The end-to-end figure, with HTTP and a live server, is the simulation harness's
``metrics_scrape`` check (docs/performance.md).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field

from prometheus_client import generate_latest

from knit.bus import BusStats
from knit.server.bridge import BridgeStats
from knit.server.metrics import ServerMetrics
from knit.server.prometheus import server_registry
from knit.store.writer import WriterStats

NODES = 1_000
INSTANCES = 100_000
RENDERS = 200


@dataclass
class _Bus:
    connected: bool = True
    stats: BusStats = field(default_factory=BusStats)


@dataclass
class _Writer:
    queued: int = 0
    stats: WriterStats = field(default_factory=WriterStats)


def filled() -> ServerMetrics:
    """A ``ServerMetrics`` as a server of ``NODES`` nodes and ``INSTANCES`` instances has it."""
    metrics = ServerMetrics()
    for n in range(NODES):
        metrics.node(f"node-{n}", "unhealthy" if n % 100 == 0 else "healthy")
        metrics.heartbeat(0.0005 * (1 + n % 40))
    healths = ("none", "healthy", "starting", "unhealthy")
    for i in range(INSTANCES):
        status = "pending" if i % 50 == 0 else "running"
        metrics.instance(f"inst-{i}", status, f"dep-{i // 100}", healths[i % 4])
        metrics.task_ended("deploy", "succeeded")
    metrics.deployments = INSTANCES // 100
    return metrics


def main() -> None:
    """Print the figures as one JSON line."""
    metrics = filled()
    registry = server_registry(metrics, _Bus(), BridgeStats(), _Writer())
    took = []
    for _ in range(RENDERS):
        began = time.perf_counter()
        text = generate_latest(registry)
        took.append(time.perf_counter() - began)
    updates = 100_000
    began = time.perf_counter()
    for i in range(updates):
        metrics.instance(f"inst-{i}", "stopped" if i % 2 else "running", f"dep-{i // 100}")
    update_s = (time.perf_counter() - began) / updates
    print(
        json.dumps(
            {
                "render_p50_ms": round(statistics.median(took) * 1000, 2),
                "render_max_ms": round(max(took) * 1000, 2),
                "bytes": len(text),
                "instance_update_us": round(update_s * 1e6, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
