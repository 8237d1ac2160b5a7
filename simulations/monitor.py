"""The monitor: what the server says, sampled four times a second, fed to the ``Recorder``.

Layer: simulations. Imports anyio, httpx, ``knit.server.metrics`` (the lag buckets' values)
and the harness's own modules.

Every sample reads ``GET /status`` (the server's own view: node health, the heartbeat lag
histogram, instance counts) and the server process's memory and CPU (psutil). Heartbeat lag
is measured by the server (its clock when the NodeActor applies a heartbeat minus the
agent's ``sent_at``); the monitor turns each new histogram count into samples at the
bucket's middle (buckets are 10 % wide). A node the server shows unhealthy whose agent the
harness neither killed nor cut off is a *false unhealthy*.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from knit.server.metrics import bucket_value_ms
from simulations.report import Recorder
from simulations.services import ServerProcess, get_json

log = logging.getLogger(__name__)

POLL_S = 0.25


@dataclass
class ServerView:
    """The latest sample of the server's state."""

    healthy: int = 0
    unhealthy: int = 0
    unhealthy_ids: set[str] = field(default_factory=set)
    running: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    placed_total: int = 0
    heartbeats: int = 0
    busiest: list[dict[str, Any]] = field(default_factory=list)
    gc_pause_s: float = 0.0
    running_by_deployment: dict[str, int] = field(default_factory=dict)
    writer_queued: int = 0
    store_writer: dict[str, Any] = field(default_factory=dict)
    gc: dict[str, Any] = field(default_factory=dict)


class Monitor:
    """Samples the server into ``recorder``; ``expected_down`` are the agents the harness
    killed or cut off (their nodes may rightly turn unhealthy)."""

    def __init__(self, http: httpx.AsyncClient, server: ServerProcess, recorder: Recorder) -> None:
        self.http = http
        self.server = server
        self.recorder = recorder
        self.view = ServerView()
        self.expected_down: set[str] = set()
        self.listeners: list[Callable[[ServerView], None]] = []
        self.errors = 0
        self.samples = 0
        self._lag_counts: list[int] | None = None
        self._placed = 0
        self._changed = anyio.Event()

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            await self.sample()
            await anyio.sleep(POLL_S)

    async def sample(self) -> None:
        """Take one sample (a failed request is counted, not raised)."""
        process = self.server.sample()
        if process is not None:
            self.recorder.server(process.rss_bytes, process.cpu_s)
        try:
            status = await get_json(self.http, "/status")
        except httpx.HTTPError as exc:
            self.errors += 1
            log.warning("GET /status failed: %s", type(exc).__name__)
            return
        self.samples += 1
        self._absorb(status)
        for listener in self.listeners:
            listener(self.view)
        self._changed.set()
        self._changed = anyio.Event()

    def _absorb(self, status: dict[str, Any]) -> None:
        at = self.recorder.now()
        nodes, instances, beats = status["nodes"], status["instances"], status["heartbeats"]
        view = self.view
        view.healthy, view.unhealthy = nodes["healthy"], nodes["unhealthy"]
        view.unhealthy_ids = set(nodes["unhealthy_ids"])
        view.by_status = dict(instances["by_status"])
        view.running = view.by_status.get("running", 0)
        view.placed_total = instances["placed_total"]
        view.running_by_deployment = instances.get("running_by_deployment", {})
        view.heartbeats = beats["count"]
        view.busiest = status["actors"]["busiest"][:3]
        view.gc = status.get("gc", {})
        view.store_writer = dict(status.get("store_writer", {}))
        view.writer_queued = view.store_writer.get("queued", 0)
        view.gc_pause_s = sum(view.gc.get("pause_s", [0.0]))
        self.recorder.node_health(view.healthy, view.unhealthy, at=at)
        falsely = view.unhealthy_ids - self.expected_down - self.recorder.falsely_unhealthy
        if falsely:
            log.warning("%d more nodes unhealthy although their agents are alive", len(falsely))
        for node_id in falsely:
            self.recorder.false_unhealthy(node_id)
        if view.placed_total > self._placed:
            self.recorder.placed(view.placed_total - self._placed, at=at)
            self._placed = view.placed_total
        counts: list[int] = beats["counts"]
        before = self._lag_counts or [0] * len(counts)
        for index, (now_n, then_n) in enumerate(zip(counts, before, strict=True)):
            if now_n > then_n:
                lag_s = bucket_value_ms(index) / 1000
                for _ in range(now_n - then_n):
                    self.recorder.heartbeat(lag_s, at=at)
        self._lag_counts = counts

    async def until(self, predicate: Callable[[ServerView], bool], timeout: float) -> bool:
        """Wait for a sample where ``predicate(view)`` holds; False after ``timeout`` s."""
        with anyio.move_on_after(timeout):
            while not predicate(self.view):
                await self._changed.wait()
            return True
        return False
