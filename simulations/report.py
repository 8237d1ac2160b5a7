"""Reports of simulation runs: time series while running, figures and a plot at the end.

Layer: simulations. Imports the standard library, numpy and matplotlib (the Agg canvas only:
no pyplot, no global backend switch, no display needed). Nothing from Knit.

The harness feeds a ``Recorder`` while it runs (marks of phase boundaries, placements,
heartbeat lags, node health, latencies, server resource samples); ``build_report`` turns it
into the figures of ``REPORT_KEYS`` (the first, ``database``, says which store the server
used), and ``write_report`` writes ``report.json`` and
``report.png`` (placements over time, heartbeat lag, node health). A figure that does not
apply to the run (no fault: ``detect_s``) is None.
"""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPORT_KEYS = (
    "database",
    "agents",
    "joins_per_s",
    "registration_s",
    "heartbeats_per_s",
    "heartbeat_lag_p99_ms",
    "false_unhealthy",
    "containers",
    "placement_s",
    "placements_per_s",
    "deploy_latency_p50_ms",
    "deploy_latency_p99_ms",
    "api_latency_p99_ms",
    "server_rss_mb",
    "server_cpu_s",
    "detect_s",
    "replace_s",
)
"""The keys of a report, in order."""

Report = dict[str, float | int | str | None]

# Marks: phase boundaries, in seconds since the recorder's start (the first one counts).
AGENTS_STARTED = "agents_started"
JOINED = "joined"  # every agent joined (POST /join answered)
REGISTERED = "registered"  # every agent registered
PLACEMENT_STARTED = "placement_started"  # the initial deployments were sent
PLACED = "placed"  # every initial replica runs
STEADY = "steady"  # the steady phase began
FAULT = "fault"  # the first fault fired
DETECTED = "detected"  # the server marked every killed node unhealthy
REPLACED = "replaced"  # every lost replica runs elsewhere
UPDATE = "update"  # the first update was sent (simulations.rollouts)
ROLLED_OUT = "rolled_out"  # every rollout ended
END = "end"  # the steady phase ended


class Series:
    """Samples ``(time, value)`` kept compactly (two arrays of doubles)."""

    def __init__(self) -> None:
        self.times = array("d")
        self.values = array("d")

    def __len__(self) -> int:
        return len(self.times)

    def add(self, at: float, value: float) -> None:
        """Append one sample."""
        self.times.append(at)
        self.values.append(value)

    def extend(self, other: Series) -> None:
        """Append every sample of ``other``."""
        self.times.extend(other.times)
        self.values.extend(other.values)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (times, values) as numpy arrays, sorted by time."""
        times, values = np.asarray(self.times), np.asarray(self.values)
        order = np.argsort(times, kind="stable")
        return times[order], values[order]


class Recorder:
    """What a run measured; times are seconds since ``start`` on ``clock``.

    Recorders of several processes on one machine share ``start`` (``time.monotonic`` is
    system-wide) and are combined with ``merge``. Not thread-safe: one event loop feeds one.

    Args:
        start: the run's time zero on ``clock``; default now.
        clock: a monotonic clock in seconds.
    """

    def __init__(
        self, start: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.start = clock() if start is None else start
        self.marks: dict[str, float] = {}
        self.placements = Series()  # value: instances placed at that moment
        self.heartbeats = Series()  # value: lag in seconds
        self.healthy = Series()
        self.unhealthy = Series()
        self.server_rss = Series()  # bytes
        self.server_cpu = Series()  # seconds of CPU so far
        self.deploy_latencies = array("d")
        self.api_latencies = array("d")
        self.falsely_unhealthy: set[str] = set()

    def now(self) -> float:
        """Seconds since ``start``."""
        return self.clock() - self.start

    def _at(self, at: float | None) -> float:
        return self.now() if at is None else at

    def mark(self, name: str, at: float | None = None) -> None:
        """Note that phase boundary ``name`` was reached (only its first time counts)."""
        self.marks.setdefault(name, float(self._at(at)))

    def placed(self, count: int = 1, at: float | None = None) -> None:
        """Note ``count`` instances placed (running on a node)."""
        self.placements.add(self._at(at), count)

    def heartbeat(self, lag_s: float, at: float | None = None) -> None:
        """Note a heartbeat heard ``lag_s`` seconds after it was due (or sent)."""
        self.heartbeats.add(self._at(at), lag_s)

    def node_health(self, healthy: int, unhealthy: int, at: float | None = None) -> None:
        """Note how many nodes the server counts healthy and unhealthy."""
        when = self._at(at)
        self.healthy.add(when, healthy)
        self.unhealthy.add(when, unhealthy)

    def false_unhealthy(self, node_id: str) -> None:
        """Note a node marked unhealthy although it was neither killed nor partitioned."""
        self.falsely_unhealthy.add(node_id)

    def deploy_latency(self, seconds: float) -> None:
        """Note the time from a deploy request to its replicas running."""
        self.deploy_latencies.append(seconds)

    def api_latency(self, seconds: float) -> None:
        """Note one API request's round trip."""
        self.api_latencies.append(seconds)

    def server(self, rss_bytes: int, cpu_s: float, at: float | None = None) -> None:
        """Note a sample of the server process: resident memory and CPU time used so far."""
        when = self._at(at)
        self.server_rss.add(when, rss_bytes)
        self.server_cpu.add(when, cpu_s)

    def merge(self, other: Recorder) -> None:
        """Add ``other``'s samples (same time zero); its marks fill only the missing ones."""
        for name in ("placements", "heartbeats", "healthy", "unhealthy", "server_rss"):
            getattr(self, name).extend(getattr(other, name))
        self.server_cpu.extend(other.server_cpu)
        self.deploy_latencies.extend(other.deploy_latencies)
        self.api_latencies.extend(other.api_latencies)
        self.falsely_unhealthy |= other.falsely_unhealthy
        for name, at in other.marks.items():
            self.marks.setdefault(name, at)

    def span(self, first: str, last: str) -> float | None:
        """Seconds from mark ``first`` to mark ``last``; None unless both were reached."""
        if first in self.marks and last in self.marks:
            return self.marks[last] - self.marks[first]
        return None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Return the ``q``-th percentile (0-100, linear interpolation); None for no values."""
    data = np.fromiter(values, dtype=float)
    return float(np.percentile(data, q)) if data.size else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _within(series: Series, begin: float | None, end: float | None) -> np.ndarray:
    """The values sampled in [begin, end]; every value when either is unknown or the range
    holds none (the registration burst is not the heartbeating the figure is about)."""
    times, values = series.arrays()
    if begin is None or end is None:
        return values
    inside = values[(times >= begin) & (times <= end)]
    return inside if inside.size else values


def _rate(
    series: Series, begin: float | None, end: float | None, *, count: bool = False
) -> float | None:
    """Values (or samples, if ``count``) per second in [begin, end] (default: all samples)."""
    times, values = series.arrays()
    if begin is None or end is None:
        if len(times) < 2:
            return None
        begin, end = float(times[0]), float(times[-1])
    if end <= begin:
        return None
    inside = (times >= begin) & (times <= end)
    total = np.count_nonzero(inside) if count else values[inside].sum()
    return float(total) / (end - begin)


def _per_s(count: int, seconds: float | None) -> float | None:
    return count / seconds if seconds else None


def build_report(
    recorder: Recorder, *, agents: int, containers: int, database: str = "sqlite"
) -> Report:
    """Compute the figures of ``REPORT_KEYS`` from what ``recorder`` holds.

    ``heartbeats_per_s`` and ``heartbeat_lag_p99_ms`` are those of the steady phase (between
    the ``STEADY`` and ``END`` marks) when it was reached: thousands of agents registering at
    once are the business of ``registration_s``.

    Args:
        recorder: the run's measurements.
        agents: how many agents ran.
        containers: how many containers were running at the end.
        database: the server's store (``sqlite``, ``postgresql``).
    """
    marks = recorder.marks
    placement_s = recorder.span(PLACEMENT_STARTED, PLACED)
    rss = max(recorder.server_rss.values, default=None)
    figures: Report = {
        "database": database,
        "agents": agents,
        "joins_per_s": _per_s(agents, recorder.span(AGENTS_STARTED, JOINED)),
        "registration_s": recorder.span(AGENTS_STARTED, REGISTERED),
        "heartbeats_per_s": _rate(
            recorder.heartbeats, marks.get(STEADY), marks.get(END), count=True
        ),
        "heartbeat_lag_p99_ms": _ms(
            percentile(_within(recorder.heartbeats, marks.get(STEADY), marks.get(END)), 99)
        ),
        "false_unhealthy": len(recorder.falsely_unhealthy),
        "containers": containers,
        "placement_s": placement_s,
        "placements_per_s": (
            _rate(recorder.placements, marks[PLACEMENT_STARTED], marks[PLACED])
            if placement_s
            else None
        ),
        "deploy_latency_p50_ms": _ms(percentile(recorder.deploy_latencies, 50)),
        "deploy_latency_p99_ms": _ms(percentile(recorder.deploy_latencies, 99)),
        "api_latency_p99_ms": _ms(percentile(recorder.api_latencies, 99)),
        "server_rss_mb": None if rss is None else rss / 2**20,
        "server_cpu_s": recorder.server_cpu.values[-1] if recorder.server_cpu else None,
        "detect_s": recorder.span(FAULT, DETECTED),
        "replace_s": recorder.span(FAULT, REPLACED),
    }
    return {key: _rounded(figures[key]) for key in REPORT_KEYS}


def _rounded(value: float | int | str | None) -> float | int | str | None:
    return round(value, 3) if isinstance(value, float) else value


def format_report(report: Mapping[str, float | int | str | None]) -> str:
    """The report as one line of JSON (the last line a run prints)."""
    return json.dumps(dict(report))


def write_report(
    report: Mapping[str, float | int | str | None],
    recorder: Recorder,
    out: Path,
    *,
    title: str = "",
) -> tuple[Path, Path]:
    """Write ``out/report.json`` and ``out/report.png`` (creating ``out``); return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "report.json", out / "report.png"
    json_path.write_text(json.dumps(dict(report), indent=2) + "\n", encoding="utf-8")
    plot(recorder, png_path, title=title)
    return json_path, png_path


def plot(recorder: Recorder, path: Path, *, title: str = "") -> None:
    """Draw the three panels (placements, heartbeat lag, node health) into a PNG at ``path``."""
    figure = Figure(figsize=(10, 9), layout="constrained")
    FigureCanvasAgg(figure)
    placements, lag, health = figure.subplots(3, 1, sharex=True)
    if title:
        figure.suptitle(title)

    times, counts = recorder.placements.arrays()
    placements.step(times, np.cumsum(counts), where="post", color="tab:blue")
    placements.set_ylabel("instances placed")
    placements.set_title("Placements over time")

    centres, quantiles = _lag_buckets(recorder.heartbeats)
    for column, (name, colour) in enumerate([("p50", "tab:green"), ("p99", "tab:orange")]):
        lag.plot(centres, quantiles[:, column] * 1000, label=name, color=colour)
    lag.plot(centres, quantiles[:, 2] * 1000, label="max", color="tab:red", alpha=0.4)
    lag.set_ylabel("lag (ms)")
    lag.set_title("Heartbeat lag")

    for series, name, colour in [
        (recorder.healthy, "healthy", "tab:green"),
        (recorder.unhealthy, "unhealthy", "tab:red"),
    ]:
        health.step(*series.arrays(), where="post", label=name, color=colour)
    health.set_ylabel("nodes")
    health.set_xlabel("seconds since start")
    health.set_title("Node health")

    for axes in (placements, lag, health):
        _draw_marks(axes, recorder.marks)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="best", fontsize="small")
        axes.grid(alpha=0.3)
    figure.savefig(path, format="png", dpi=100)


def _lag_buckets(series: Series, buckets: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Per time bucket, the p50, p99 and max lag: a readable line even for 10^6 samples."""
    times, lags = series.arrays()
    if not len(times):
        return np.empty(0), np.empty((0, 3))
    width = max(float(times[-1] - times[0]) / buckets, 1.0)
    index = ((times - times[0]) // width).astype(int)
    order = np.lexsort((lags, index))
    index, lags = index[order], lags[order]
    bounds = np.flatnonzero(np.diff(index)) + 1
    groups = np.split(lags, bounds)
    starts = np.concatenate(([0], bounds))
    centres = times[0] + (index[starts] + 0.5) * width
    quantiles = np.array([np.percentile(g, [50, 99, 100]) for g in groups])
    return centres, quantiles


def _draw_marks(axes: Axes, marks: Mapping[str, float]) -> None:
    for name in (REGISTERED, PLACED, FAULT, DETECTED, REPLACED, UPDATE, ROLLED_OUT):
        if name in marks:
            axes.axvline(marks[name], color="grey", linestyle="--", linewidth=0.8)
            axes.annotate(
                name,
                (marks[name], 1.0),
                xycoords=("data", "axes fraction"),
                fontsize="x-small",
                rotation=90,
                va="top",
                ha="right",
                color="grey",
            )
