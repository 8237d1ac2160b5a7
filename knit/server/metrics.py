"""Server metrics for ``GET /status``: heartbeat lag, node health, instance statuses.

Layer: server. Plain in-memory counters that the actors update as they work (no I/O, no
locks: every actor runs on the one event loop). The simulation harness reads them to measure
the server's heartbeat lag, node health and placements without a subscriber of its own.

- **Heartbeat lag** is the server's clock when a NodeActor applies a heartbeat minus the
  agent's ``sent_at``: the bus, the bridge and every mailbox on the way. It is kept as a
  histogram with log-spaced buckets (10 % wide, 0.1 ms to 10 min), cumulative since start.
- **Node health** is each node's status as its NodeActor holds it.
- **Instance statuses** count the instances the DeploymentActors hold, by status;
  ``placed_total`` counts every change into ``running`` since start, and
  ``running_by_deployment`` gives the running instances of each deployment whose count
  changed in the last 10 s (a client watching deployments converge reads only those).
- **Garbage collection**: collections and the time they took, per generation.
- **Deployments, tasks and health** (read by ``GET /metrics`` only): the deployments the
  server runs, the tasks that ended by kind and result, and the instances by status and
  health.

``knit.server.prometheus`` turns all of this into Prometheus metrics at scrape time: the
actors only ever bump these plain counters.
"""

from __future__ import annotations

import bisect
import gc
import math
import time
from collections import Counter, OrderedDict
from typing import Any

LAG_FIRST_BOUND_MS = 0.1
LAG_GROWTH = 1.1
LAG_BUCKETS = 170  # 0.1 ms * 1.1**170 ~ 11 minutes
LAG_BOUNDS_MS: tuple[float, ...] = tuple(
    round(LAG_FIRST_BOUND_MS * LAG_GROWTH**k, 4) for k in range(LAG_BUCKETS)
)
"""Upper bounds of the lag buckets, in ms; a last bucket holds everything above."""
MAX_LISTED_IDS = 10_000
"""The most unhealthy node ids ``GET /status`` lists."""
RUNNING_CHANGES_S = 10.0
"""``GET /status`` lists the running count of the deployments where it changed this recently."""


class LagHistogram:
    """Counts of lags per bucket (``LAG_BOUNDS_MS``), plus their count and maximum."""

    __slots__ = ("counts", "max_ms", "sum_ms", "total")

    def __init__(self) -> None:
        self.counts = [0] * (LAG_BUCKETS + 1)
        self.total = 0
        self.max_ms = 0.0
        self.sum_ms = 0.0

    def add(self, lag_s: float) -> None:
        """Count one lag (a negative one, from clock skew, counts as 0)."""
        ms = max(lag_s * 1000.0, 0.0)
        self.counts[bisect.bisect_left(LAG_BOUNDS_MS, ms)] += 1
        self.total += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def to_json(self) -> dict[str, Any]:
        """``{"count", "max_ms", "bounds_ms", "counts"}``; ``counts`` has one more item than
        ``bounds_ms`` (the bucket above the last bound)."""
        return {
            "count": self.total,
            "max_ms": round(self.max_ms, 3),
            "bounds_ms": list(LAG_BOUNDS_MS),
            "counts": list(self.counts),
        }


def bucket_value_ms(index: int) -> float:
    """A representative lag of bucket ``index``: the geometric middle of its bounds."""
    if index >= LAG_BUCKETS:
        return LAG_BOUNDS_MS[-1]
    upper = LAG_BOUNDS_MS[index]
    lower = LAG_BOUNDS_MS[index - 1] if index else upper / LAG_GROWTH
    return math.sqrt(lower * upper)


class GcWatch:
    """Time spent in the garbage collector, by generation (``gc.callbacks``).

    A full collection walks every live object: with millions of them it stops the event
    loop for a noticeable time, which is why ``GET /status`` shows it.
    """

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.pause_s = [0.0, 0.0, 0.0]
        self.longest_s = 0.0
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        generation = info["generation"]
        self.collections[generation] += 1
        self.pause_s[generation] += took
        self.longest_s = max(self.longest_s, took)

    def install(self) -> None:
        """Start timing collections (until ``uninstall``)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop timing collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def to_json(self) -> dict[str, Any]:
        """Collections and pause seconds per generation, and the longest pause."""
        return {
            "collections": list(self.collections),
            "pause_s": [round(p, 3) for p in self.pause_s],
            "longest_pause_ms": round(self.longest_s * 1000, 1),
        }


class ServerMetrics:
    """What ``GET /status`` reports beyond the bus and the actors."""

    def __init__(self) -> None:
        self.heartbeat_lag = LagHistogram()
        self.node_status: dict[str, str] = {}
        # id -> (status, deployment, health)
        self.instance_status: dict[str, tuple[str, str, str]] = {}
        self.instance_counts: Counter[str] = Counter()
        self.instance_health: Counter[tuple[str, str]] = Counter()  # (status, health)
        self.deployments = 0
        self.tasks_ended: Counter[tuple[str, str]] = Counter()  # (kind, result)
        self.placed_total = 0
        self.running_by_deployment: Counter[str] = Counter()
        self.running_changed: OrderedDict[str, float] = OrderedDict()  # oldest change first
        self.gc = GcWatch()

    def heartbeat(self, lag_s: float) -> None:
        """A heartbeat was applied ``lag_s`` seconds after the agent sent it."""
        self.heartbeat_lag.add(lag_s)

    def node(self, node_id: str, status: str) -> None:
        """``node_id`` is now ``status``."""
        self.node_status[node_id] = status

    def forget_node(self, node_id: str) -> None:
        """``node_id`` was removed from the cluster."""
        self.node_status.pop(node_id, None)

    def instance(
        self, instance_id: str, status: str, deployment_id: str, health: str = "none"
    ) -> None:
        """``instance_id`` (of ``deployment_id``) is now ``status``, its health ``health``."""
        before = self.instance_status.get(instance_id)
        if before is not None and before[0] == status and before[2] == health:
            return
        self.instance_status[instance_id] = (status, deployment_id, health)
        self.instance_health[status, health] += 1
        if before is not None:
            self.instance_health[before[0], before[2]] -= 1
            if before[0] == status:
                return  # only its health changed
            self.instance_counts[before[0]] -= 1
            if before[0] == "running":
                self._running(deployment_id, -1)
        self.instance_counts[status] += 1
        if status == "running":
            self.placed_total += 1
            self._running(deployment_id, 1)

    def instance_gone(self, instance_id: str) -> None:
        """``instance_id`` was forgotten."""
        before = self.instance_status.pop(instance_id, None)
        if before is not None:
            self.instance_counts[before[0]] -= 1
            self.instance_health[before[0], before[2]] -= 1
            if before[0] == "running":
                self._running(before[1], -1)

    def task_ended(self, kind: str, result: str) -> None:
        """A ``kind`` task ended with ``result`` (succeeded, failed or unaccepted)."""
        self.tasks_ended[kind, result] += 1

    def _running(self, deployment_id: str, change: int) -> None:
        count = self.running_by_deployment[deployment_id] + change
        if count:
            self.running_by_deployment[deployment_id] = count
        else:
            del self.running_by_deployment[deployment_id]
        self.running_changed[deployment_id] = time.monotonic()
        self.running_changed.move_to_end(deployment_id)

    def recently_running(self, within: float = RUNNING_CHANGES_S) -> dict[str, int]:
        """Running instances of each deployment whose count changed in the last ``within``
        seconds (cheap: only those are looked at)."""
        now = time.monotonic()
        since = now - within
        while self.running_changed:  # forget changes older than twice the default window
            deployment_id, at = next(iter(self.running_changed.items()))
            if at >= now - 2 * RUNNING_CHANGES_S:
                break
            del self.running_changed[deployment_id]
        recent: dict[str, int] = {}
        for deployment_id in reversed(self.running_changed):
            if self.running_changed[deployment_id] < since:
                break
            recent[deployment_id] = self.running_by_deployment.get(deployment_id, 0)
        return recent

    def to_json(self) -> dict[str, Any]:
        """The ``nodes``, ``instances`` and ``heartbeats`` sections of ``GET /status``."""
        nodes = Counter(self.node_status.values())
        unhealthy = [n for n, s in self.node_status.items() if s == "unhealthy"]
        return {
            "nodes": {
                "healthy": nodes.get("healthy", 0),
                "unhealthy": nodes.get("unhealthy", 0),
                "unhealthy_ids": unhealthy[:MAX_LISTED_IDS],
            },
            "instances": {
                "by_status": {s: n for s, n in sorted(self.instance_counts.items()) if n},
                "placed_total": self.placed_total,
                "running_by_deployment": self.recently_running(),
            },
            "heartbeats": self.heartbeat_lag.to_json(),
            "gc": self.gc.to_json(),
        }
