"""The dashboard's live updates: one shared poll of the control plane, fanned out over SSE.

Layer: dashboard. Imports anyio, ``knit.api.ports`` and ``knit.errors``; never actors or the
store. However many browsers watch, the control plane is read at most once per poll
interval (:class:`ClusterWatch` caches the summary), and only while somebody watches.
:class:`StreamLimiter` bounds how many streams are open at once. See docs/dashboard.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from knit.api.ports import ControlPlane
from knit.dashboard.present import count, digest
from knit.errors import KnitError

log = logging.getLogger(__name__)

MAX_STREAMS = 100
POLL_INTERVAL = 1.0
HEARTBEAT_INTERVAL = 15.0
RETRY_MS = 3000


@dataclass(frozen=True)
class Summary:
    """What the stream sends: the counts and a hash of the whole view."""

    hash: str
    payload: str


class ClusterWatch:
    """Reads the cluster view through the port, at most once per ``max_age`` seconds."""

    def __init__(self, control: ControlPlane, *, max_age: float = POLL_INTERVAL) -> None:
        self.control = control
        self.max_age = max_age
        self._lock = anyio.Lock()
        self._summary: Summary | None = None
        self._error: KnitError | None = None
        self._read_at: float | None = None

    async def current(self) -> Summary:
        """The latest summary, read again if older than ``max_age``.

        Concurrent callers share one read (they wait on a lock, then take the fresh copy); a
        failed read is shared the same way, so a broken store is not asked once per stream.
        Cancelling the caller cancels the read; the next caller starts a new one.

        Raises:
            KnitError: the control plane could not be read (in the last ``max_age`` seconds).
        """
        async with self._lock:
            if self._read_at is None or time.monotonic() - self._read_at >= self.max_age:
                try:
                    self._summary, self._error = await self._read(), None
                except KnitError as exc:
                    self._error = exc
                self._read_at = time.monotonic()
            if self._error is not None:
                raise self._error.with_traceback(None)  # raised again: keep it from growing
            assert self._summary is not None
            return self._summary

    async def _read(self) -> Summary:
        nodes = await self.control.list_nodes()
        deployments = await self.control.list_deployments()
        instances = await self.control.list_instances()
        newest = await self.control.list_events(deployment_id=None, node_id=None, limit=1)
        newest_id = str(newest[0].get("id")) if newest else None
        view_hash = digest(nodes, deployments, instances, newest_id)
        body = {"hash": view_hash, **count(nodes, deployments, instances).to_json()}
        return Summary(hash=view_hash, payload=json.dumps(body, separators=(",", ":")))


class StreamSlot:
    """One reserved stream; :meth:`release` gives it back (idempotent)."""

    def __init__(self, limiter: StreamLimiter) -> None:
        self.limiter = limiter
        self._held = True

    def release(self) -> None:
        """Give the slot back to its limiter (only the first call counts)."""
        if self._held:
            self._held = False
            self.limiter.active -= 1

    def __del__(self) -> None:
        # A response whose body never started (the client left while headers were being
        # sent) never runs its generator's ``finally``; dropping the slot still frees it.
        self.release()


class StreamLimiter:
    """At most ``limit`` streams at once: :meth:`acquire` answers ``None`` past it."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> StreamSlot | None:
        """Reserve a stream, or ``None`` when ``limit`` are already open."""
        if self.active >= self.limit:
            return None
        self.active += 1
        return StreamSlot(self)


def sse_data(payload: str) -> str:
    """One SSE message carrying ``payload`` (a single line of JSON)."""
    return f"data: {payload}\n\n"


async def summary_events(
    watch: ClusterWatch,
    slot: StreamSlot,
    closing: anyio.Event,
    *,
    poll_interval: float = POLL_INTERVAL,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
) -> AsyncIterator[str]:
    """The SSE body: a ``data:`` message now and whenever the view changes, a comment when idle.

    Runs until the client hangs up or ``closing`` is set. A hang-up makes Quart cancel the
    request task (or close this generator): cancellation propagates untouched, and
    ``finally`` frees ``slot`` and logs one debug line, with no traceback. ``closing`` ends
    the body normally within one poll interval (the server is stopping; browsers reconnect
    by themselves). A control plane that cannot be read is logged as a warning and tried
    again next interval; the stream stays open.
    """
    log.debug("dashboard stream opened (%d open)", slot.limiter.active)
    try:
        yield f"retry: {RETRY_MS}\n\n"
        last_hash: str | None = None
        last_sent = time.monotonic()
        failing = False
        while True:
            try:
                summary = await watch.current()
            except KnitError as exc:
                if not failing:
                    log.warning("dashboard stream cannot read the cluster: %s", exc)
                failing = True
            else:
                failing = False
                if summary.hash != last_hash:
                    last_hash = summary.hash
                    last_sent = time.monotonic()
                    yield sse_data(summary.payload)
            if time.monotonic() - last_sent >= heartbeat_interval:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            with anyio.move_on_after(poll_interval):
                await closing.wait()
            if closing.is_set():
                return
    finally:
        slot.release()
        log.debug("dashboard stream closed (%d open)", slot.limiter.active)
