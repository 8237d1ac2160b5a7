"""Rolling updates during the steady phase: send a changed spec, follow its rollout, measure.

Layer: simulations. Imports anyio, httpx, the standard library and the harness's own modules;
Knit is reached through its HTTP API only, as a user's tools would reach it.

For each ``[[updates]]`` entry of a scenario (``simulations.scenario.DeploymentUpdate``),
every deployment of the group it names gets its full spec again, with the change, through
``PUT /deployments/{id}``, once the deployment's rollout before (if any) ended; the answer
names the new ``version``. The rollout is then followed
by polling ``GET /deployments/{id}`` every ``POLL_S`` seconds (its ``rollout``: ``version``,
``state``, ``desired``, ``updated``, ``healthy``, ``message``; its instances' ``version`` and
``status``) until the rollout of that version ends: ``complete``, ``paused`` or
``rolled_back``. Each poll is a :class:`Sample`; :func:`rollout_figures` turns a
:class:`RolloutTrace` into the figures (``FIGURE_KEYS``), and ``simulations.rollout_plot``
draws them.

Times are the harness's clock, from the moment the PUT was sent: a rollout's duration
includes the PUT's round trip and is known to within ``POLL_S``. Its *batches* are
``ceil(replicas / max_parallel)``; the time per batch is the duration over that count, and
what Knit adds to each batch is that time minus ``min_healthy_time`` (no health check: an
instance is healthy once it has run that long). The reconciler keeps up to ``max_parallel``
instances in flight rather than waiting for a whole batch, so the moments at which every
further ``max_parallel`` instances are healthy (``batch_s_p50``, ``batch_s_max``) are the
batches as a user sees them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from simulations.load import ApiLatencies, DeployTracker, Submitted
from simulations.report import UPDATE, Recorder, percentile
from simulations.scenario import DeploymentUpdate

log = logging.getLogger(__name__)

POLL_S = 0.1
"""Seconds between two reads of a deployment whose rollout is followed."""
POLLS_AT_ONCE = 16
"""Reads of followed deployments in flight at once (a group of many deployments)."""
SETTLE_S = 5.0
"""After its end, how long a rollout may take to show exactly ``replicas`` instances of its
version running and none of another (the instances' rows are written after the decision)."""
ENDED = frozenset({"complete", "paused", "rolled_back"})
"""Rollout states in which it replaces nothing more."""
ACTIVE = frozenset({"running", "rolling_back"})
"""Rollout states in which it still replaces instances: an update waits for another state."""
RUNNING = "running"  # an instance's status (knit.domain.specs.InstanceStatus.RUNNING)

FIGURE_KEYS = (
    "deployment",
    "version",
    "order",
    "replicas",
    "max_parallel",
    "min_healthy_time",
    "state",
    "message",
    "put_ms",
    "duration_s",
    "batches",
    "batch_s",
    "overhead_s",
    "batch_s_p50",
    "batch_s_max",
    "min_running",
    "max_running",
    "running_new",
    "running_other",
    "settle_s",
    "exact",
    "error",
)
"""The keys of one rollout's figures, in order."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Sample:
    """One read of a deployment while its rollout is followed.

    Attributes:
        at: seconds since the PUT was sent.
        state: the state of the rollout of the version followed (None: the deployment still
            shows an earlier rollout, or none).
        updated: instances of the version holding a slot (0 while ``state`` is None).
        healthy: how many of those are healthy.
        running: the deployment's instances running, whatever their version.
        running_new: those of the version followed.
        message: the rollout's message.
    """

    at: float
    state: str | None
    updated: int
    healthy: int
    running: int
    running_new: int
    message: str = ""

    @property
    def running_other(self) -> int:
        """Instances of another version running."""
        return self.running - self.running_new


def observe(document: Mapping[str, Any], version: int, at: float) -> Sample:
    """The sample a ``GET /deployments/{id}`` answer gives of the rollout of ``version``.

    A rollback of ``version`` (its rollout names it as ``failed_version``) is its rollout too.
    """
    instances = document.get("instances") or []
    running = [i for i in instances if i.get("status") == RUNNING]
    running_new = sum(1 for i in running if i.get("version") == version)
    rollout = document.get("rollout") or {}
    ours = rollout.get("version") == version or rollout.get("failed_version") == version
    if not ours:
        return Sample(at, None, 0, 0, len(running), running_new)
    return Sample(
        at,
        str(rollout.get("state")),
        int(rollout.get("updated", 0)),
        int(rollout.get("healthy", 0)),
        len(running),
        running_new,
        str(rollout.get("message", "")),
    )


@dataclass
class RolloutTrace:
    """One deployment's rollout of one update, as the harness saw it.

    Attributes:
        name: the deployment's name.
        deployment_id: its id.
        replicas: the replicas it asks for.
        update: the update sent.
        version: the version the PUT made (None until it answered).
        put_s: the PUT's round trip.
        samples: every read, in order.
        ended_at: when (since the PUT) the rollout was first seen ended.
        error: what went wrong, if something did (a refused PUT, no new version, the
            deadline).
    """

    name: str
    deployment_id: str
    replicas: int
    update: DeploymentUpdate
    version: int | None = None
    put_s: float | None = None
    samples: list[Sample] = field(default_factory=list)
    ended_at: float | None = None
    error: str | None = None


def updated_spec(spec: Mapping[str, Any], update: DeploymentUpdate) -> dict[str, Any]:
    """The full spec ``PUT`` sends: ``spec`` with the update's env, image and policy."""
    body = dict(spec)
    body["env"] = {**dict(spec.get("env") or {}), **update.env}
    if update.image is not None:
        body["image"] = update.image
    body["update"] = update.policy.model_dump(mode="json")
    return body


def rollout_figures(trace: RolloutTrace) -> dict[str, Any]:
    """The figures of ``FIGURE_KEYS`` for one rollout (see the module docstring).

    ``duration_s`` and what derives from it are None unless the rollout completed;
    ``exact``: the last read showed ``replicas`` instances of the version running and none
    of another.
    """
    policy = trace.update.policy
    replicas, parallel = trace.replicas, policy.max_parallel
    batches = math.ceil(replicas / parallel)
    ours = [s for s in trace.samples if s.state is not None]
    last = trace.samples[-1] if trace.samples else None
    state = ours[-1].state if ours else None
    complete = state == "complete" and trace.ended_at is not None
    duration = trace.ended_at if complete else None
    batch_s = None if duration is None else duration / batches
    steps = _batch_times(ours, replicas, parallel) if complete else []
    before_end = [s for s in trace.samples if trace.ended_at is None or s.at <= trace.ended_at]
    settle = None
    if trace.ended_at is not None and last is not None and _exact(last, replicas):
        settle = next(s.at for s in trace.samples if s.at >= trace.ended_at and _exact(s, replicas))
        settle -= trace.ended_at
    figures: dict[str, Any] = {
        "deployment": trace.name,
        "version": trace.version,
        "order": str(policy.order),
        "replicas": replicas,
        "max_parallel": parallel,
        "min_healthy_time": policy.min_healthy_time,
        "state": state,
        "message": ours[-1].message if ours else "",
        "put_ms": None if trace.put_s is None else trace.put_s * 1000,
        "duration_s": duration,
        "batches": batches,
        "batch_s": batch_s,
        "overhead_s": None if batch_s is None else batch_s - policy.min_healthy_time,
        "batch_s_p50": percentile(steps, 50),
        "batch_s_max": max(steps, default=None),
        "min_running": min((s.running for s in before_end), default=None),
        "max_running": max((s.running for s in before_end), default=None),
        "running_new": None if last is None else last.running_new,
        "running_other": None if last is None else last.running_other,
        "settle_s": settle,
        "exact": last is not None and _exact(last, replicas),
        "error": trace.error,
    }
    return {key: _rounded(figures[key]) for key in FIGURE_KEYS}


def _exact(sample: Sample, replicas: int) -> bool:
    return sample.running_new == replicas and sample.running_other == 0


def _batch_times(samples: Sequence[Sample], replicas: int, parallel: int) -> list[float]:
    """Seconds between the moments every further ``parallel`` instances were healthy (the
    first from the PUT); a step seen in no sample counts at the next one that shows it."""
    thresholds = [*range(parallel, replicas, parallel), replicas]
    times: list[float] = []
    previous = 0.0
    for threshold in thresholds:
        at = next((s.at for s in samples if s.healthy >= threshold), None)
        if at is None:
            break
        times.append(at - previous)
        previous = at
    return times


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def failures_of(figures: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per rollout that did not complete with exactly its replicas."""
    found = []
    for f in figures:
        what = f"rollout of {f['deployment']} version {f['version']}"
        if f["error"]:
            found.append(f"{what}: {f['error']}")
        elif f["state"] != "complete":
            found.append(f"{what} ended {f['state']}: {f['message']}")
        elif not f["exact"]:
            found.append(
                f"{what}: {f['running_new']} instances of the version and "
                f"{f['running_other']} of others run, not {f['replicas']} and 0"
            )
    return found


@dataclass
class Updater:
    """Sends a scenario's updates and follows their rollouts.

    Attributes:
        http: a client of the server's API (admin token).
        tracker: the deployments the harness created (``spec`` is updated after each PUT).
        recorder: the run's recorder (a PUT is an API request).
        latencies: API latencies by kind (``update_deployment``).
        progress: called with one line per step seen.
        rollout_s: deadline of a rollout, from its PUT.
        traces: every rollout started, appended as it starts.
    """

    http: httpx.AsyncClient
    tracker: DeployTracker
    recorder: Recorder
    latencies: ApiLatencies
    progress: Progress
    rollout_s: float
    traces: list[RolloutTrace] = field(default_factory=list)
    _polls: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(POLLS_AT_ONCE)
    )

    async def run(self, updates: Sequence[DeploymentUpdate], began: float) -> None:
        """Send every update at its ``at_s`` after ``began`` (``time.monotonic()``); the
        updates of a group one after the other. Returns when every rollout ended (or missed
        its deadline)."""
        by_group: dict[str, list[DeploymentUpdate]] = {}
        for update in sorted(updates, key=lambda u: u.at_s):
            by_group.setdefault(update.name_prefix, []).append(update)
        async with anyio.create_task_group() as tg:
            for group in by_group.values():
                tg.start_soon(self._group, group, began)

    async def _group(self, updates: list[DeploymentUpdate], began: float) -> None:
        for update in updates:
            await anyio.sleep(max(0.0, began + update.at_s - time.monotonic()))
            targets = [s for s in self.tracker.deployments.values() if in_group(s, update)]
            self.progress(
                f"update: {len(targets)} deployments of {update.name_prefix}, "
                f"{update.policy.order} by {update.policy.max_parallel}"
            )
            async with anyio.create_task_group() as tg:
                for sub in targets:
                    trace = RolloutTrace(sub.name, sub.id, sub.replicas, update)
                    self.traces.append(trace)
                    tg.start_soon(self._roll, sub, trace)

    async def _roll(self, sub: Submitted, trace: RolloutTrace) -> None:
        """PUT the changed spec, then follow the rollout until it ended and settled."""
        path = f"/deployments/{sub.id}"
        with anyio.move_on_after(self.rollout_s) as scope:
            try:
                document = await self._read(path)
                while (document.get("rollout") or {}).get("state") in ACTIVE:
                    await anyio.sleep(POLL_S)  # the rollout before this one has not ended
                    document = await self._read(path)
                before = document.get("version")
                body = updated_spec(sub.spec, trace.update)
                self.recorder.mark(UPDATE)
                began = time.monotonic()
                response = await self.http.put(path, json=body)
                trace.put_s = time.monotonic() - began
                self.latencies.add(self.recorder, "update_deployment", trace.put_s)
                if response.status_code != 200:
                    trace.error = f"PUT answered {response.status_code}: {response.text[:300]}"
                    return
                sub.spec = body
                trace.version = response.json().get("version")
                if not isinstance(trace.version, int) or trace.version == before:
                    trace.error = f"the PUT made no new version (version {trace.version!r})"
                    return
                await self._follow(path, trace, began)
            except httpx.HTTPError as exc:
                trace.error = f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            last = trace.samples[-1] if trace.samples else None
            where = f"{last.state}, {last.healthy}/{trace.replicas} healthy" if last else "no read"
            trace.error = f"not ended within {self.rollout_s:g} s ({where})"

    async def _follow(self, path: str, trace: RolloutTrace, began: float) -> None:
        assert trace.version is not None
        step = trace.update.policy.max_parallel
        shown = 0
        while True:
            sample = observe(await self._read(path), trace.version, time.monotonic() - began)
            trace.samples.append(sample)
            if sample.healthy >= shown + step or (sample.state in ENDED and trace.ended_at is None):
                shown = sample.healthy
                self.progress(
                    f"rollout {trace.name} v{trace.version} [{sample.at:6.1f}s] {sample.state}: "
                    f"{sample.updated} updated, {sample.healthy}/{trace.replicas} healthy, "
                    f"{sample.running} running"
                )
            if sample.state in ENDED and trace.ended_at is None:
                trace.ended_at = sample.at
            if trace.ended_at is not None and (
                _exact(sample, trace.replicas) or sample.at - trace.ended_at >= SETTLE_S
            ):
                return
            await anyio.sleep(POLL_S)

    async def _read(self, path: str) -> dict[str, Any]:
        async with self._polls:
            response = await self.http.get(path)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


async def instances_at_end(
    http: httpx.AsyncClient, traces: Iterable[RolloutTrace]
) -> dict[str, int]:
    """At the end of a run: how many deployments were updated, and how many of them run
    exactly their replicas of their latest version and no instance of another.

    Raises:
        httpx.HTTPError: a read failed.
    """
    latest: dict[str, RolloutTrace] = {}
    for trace in traces:
        if trace.version is not None:
            latest[trace.deployment_id] = trace
    exact = 0
    for trace in latest.values():
        assert trace.version is not None
        response = await http.get(f"/deployments/{trace.deployment_id}")
        response.raise_for_status()
        exact += _exact(observe(response.json(), trace.version, 0.0), trace.replicas)
    return {"deployments_updated": len(latest), "deployments_exact_at_end": exact}


def in_group(sub: Submitted, update: DeploymentUpdate) -> bool:
    """Whether ``sub`` is one of the deployments ``{name_prefix}-{i}`` of the update's group."""
    head, _, number = sub.name.rpartition("-")
    return head == update.name_prefix and number.isdigit()


__all__ = [
    "FIGURE_KEYS",
    "RolloutTrace",
    "Sample",
    "Updater",
    "failures_of",
    "in_group",
    "instances_at_end",
    "observe",
    "rollout_figures",
    "updated_spec",
]
