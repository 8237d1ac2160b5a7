"""Load on the API: the initial deployments, deploy latency, churn, and API clients.

Layer: simulations. Imports anyio, httpx and the harness's own modules. Everything goes
through the server's public HTTP API, as a user's tools would.

*Deploy latency* is the time from the start of ``POST /deployments`` to the server showing
every replica ``running``. Polling thousands of deployments would load the server it
measures, so the tracker reads what the monitor already fetches twice a second:
``GET /status`` lists the running count of every deployment where it changed lately.

*API clients* each loop over per-entity reads (a deployment with its instances, a node, a
deployment's latest events) with a think time of ``THINK_S`` between requests; the list
endpoints, which return every row, are not latency endpoints and are left out. Churn
requests (create, delete) count as API requests too.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from simulations.rawhttp import RawHttp, ReplyError
from simulations.report import Recorder, percentile
from simulations.scenario import Churn, DeploymentGroup

log = logging.getLogger(__name__)

SUBMIT_CONCURRENCY = 64
"""Deployments submitted at once during the placement phase."""
MAX_IN_FLIGHT = 5_000
"""Containers of submitted deployments not yet running that the placement phase allows
(0: no limit). A closed loop: it measures the throughput the system sustains, not how it
copes with 100,000 tasks thrown at it at once."""
MAX_WRITE_BACKLOG = 20_000
"""While the server's store writer has more writes queued than this (``GET /status``), the
placement phase submits nothing more: containers run before their rows are written."""
THINK_S = (0.1, 0.5)
"""An API client waits uniformly between these many seconds between two requests."""
REQUEST_TIMEOUT = 60.0


@dataclass
class Submitted:
    """A deployment the harness created; ``spec`` is the body of its POST (then of its
    latest PUT: ``simulations.rollouts``)."""

    id: str
    replicas: int
    began: float  # time.monotonic() when the POST began
    confirmed: bool = False
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The deployment's name."""
        return str(self.spec.get("name", ""))


@dataclass
class DeployTracker:
    """Creates deployments and measures their deploy latency."""

    http: httpx.AsyncClient
    recorder: Recorder
    deployments: dict[str, Submitted] = field(default_factory=dict)
    failures: int = 0
    max_in_flight: int = MAX_IN_FLIGHT
    in_flight: int = 0  # containers submitted by ``submit_groups``, not yet confirmed
    _room: anyio.Event = field(default_factory=anyio.Event)
    _limited: set[str] = field(default_factory=set)
    write_backlog: Callable[[], int] = lambda: 0
    _polled: anyio.Event = field(default_factory=anyio.Event)  # set on each ``observe``

    @property
    def confirmed(self) -> int:
        """Deployments whose replicas the server shows running."""
        return sum(d.confirmed for d in self.deployments.values())

    async def create(self, body: dict[str, Any]) -> Submitted | None:
        """POST one deployment; None (counted in ``failures``) if the server refused it."""
        began = time.monotonic()
        try:
            response = await self.http.post("/deployments", json=body, timeout=REQUEST_TIMEOUT)
        except httpx.HTTPError as exc:
            self.failures += 1
            log.warning("POST /deployments %s failed: %s", body["name"], type(exc).__name__)
            return None
        if response.status_code != 201:
            self.failures += 1
            log.warning("POST /deployments %s: %s", body["name"], response.text[:200])
            return None
        deployment_id = response.json()["id"]
        sub = Submitted(deployment_id, int(body.get("replicas", 1)), began, spec=body)
        self.deployments[deployment_id] = sub
        return sub

    async def submit_groups(self, groups: tuple[DeploymentGroup, ...]) -> None:
        """Create every deployment of ``groups``, ``SUBMIT_CONCURRENCY`` at a time, and
        with at most ``max_in_flight`` of their containers not yet running."""
        bodies = iter(
            (_body(group, i), group.replicas) for group in groups for i in range(group.count)
        )

        async def submitter() -> None:
            for body, replicas in bodies:
                limit = self.max_in_flight
                while limit and self.in_flight > 0 and self.in_flight + replicas > limit:
                    await self._room.wait()
                while limit and self.write_backlog() > MAX_WRITE_BACKLOG:
                    await self._polled.wait()
                self.in_flight += replicas
                sub = await self.create(body)
                if sub is None or sub.confirmed:
                    self._landed(replicas)
                else:
                    self._limited.add(sub.id)

        async with anyio.create_task_group() as tg:
            for _ in range(SUBMIT_CONCURRENCY):
                tg.start_soon(submitter)

    def forget(self, deployment_id: str) -> None:
        """Stop tracking a deleted deployment."""
        sub = self.deployments.pop(deployment_id, None)
        if sub is not None and deployment_id in self._limited:
            self._limited.discard(deployment_id)
            self._landed(sub.replicas)

    def _landed(self, replicas: int) -> None:
        self.in_flight -= replicas
        self._room.set()
        self._room = anyio.Event()

    def observe(self, running: dict[str, int], at: float) -> None:
        """Confirm the deployments that ``running`` (running instances per deployment, as
        ``GET /status`` lists them) shows complete, as of ``at`` (``time.monotonic()``)."""
        for deployment_id, count in running.items():
            sub = self.deployments.get(deployment_id)
            if sub is None or sub.confirmed or count < sub.replicas:
                continue  # (a deployment that ran before its POST answered: next poll)
            sub.confirmed = True
            self.recorder.deploy_latency(max(0.0, at - sub.began))
            if deployment_id in self._limited:
                self._limited.discard(deployment_id)
                self._landed(sub.replicas)
        self._polled.set()
        self._polled = anyio.Event()


def _body(group: DeploymentGroup, number: int) -> dict[str, Any]:
    """The spec of the group's deployment ``number``."""
    body: dict[str, Any] = {
        "name": f"{group.name_prefix}-{number}",
        "image": group.image,
        "replicas": group.replicas,
        "node_selector": dict(group.node_selector),
    }
    if group.update is not None:
        body["update"] = group.update.model_dump(mode="json")
    return body


@dataclass
class ApiLatencies:
    """API latencies by kind of request (the report has them all together)."""

    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def add(self, recorder: Recorder, kind: str, seconds: float) -> None:
        """Note one request's round trip, in the report and under ``kind``."""
        recorder.api_latency(seconds)
        self.by_kind.setdefault(kind, []).append(seconds)

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        """Per kind: how many, p50 and p99 in ms."""
        return {
            kind: {
                "n": len(values),
                "p50_ms": _ms(percentile(values, 50)),
                "p99_ms": _ms(percentile(values, 99)),
            }
            for kind, values in sorted(self.by_kind.items())
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def timed(
    recorder: Recorder, latencies: ApiLatencies, kind: str, request: Any
) -> httpx.Response | None:
    """Await one request, note its latency; None if it failed to complete."""
    began = time.monotonic()
    try:
        response: httpx.Response = await request
    except httpx.HTTPError as exc:
        log.warning("API request failed: %s", type(exc).__name__)
        return None
    latencies.add(recorder, kind, time.monotonic() - began)
    return response


async def churn(
    settings: Churn,
    tracker: DeployTracker,
    recorder: Recorder,
    latencies: ApiLatencies,
    rng: random.Random,
) -> None:
    """Create and delete deployments at Poisson arrival rates until cancelled."""
    live: list[str] = []
    number = 0

    async def deploy() -> None:
        nonlocal number
        while True:
            await anyio.sleep(rng.expovariate(settings.deploy_per_s))
            number += 1
            body = {
                "name": f"{settings.name_prefix}-{number}",
                "image": "knit-sim/app:1",
                "replicas": settings.replicas,
            }
            began = time.monotonic()
            sub = await tracker.create(body)
            latencies.add(recorder, "create_deployment", time.monotonic() - began)
            if sub is not None:
                live.append(sub.id)

    async def delete() -> None:
        while True:
            await anyio.sleep(rng.expovariate(settings.delete_per_s))
            if not live:
                continue
            deployment_id = live.pop(rng.randrange(len(live)))
            tracker.forget(deployment_id)
            request = tracker.http.delete(f"/deployments/{deployment_id}")
            await timed(recorder, latencies, "delete_deployment", request)

    async with anyio.create_task_group() as tg:
        if settings.deploy_per_s > 0:
            tg.start_soon(deploy)
        if settings.delete_per_s > 0:
            tg.start_soon(delete)


async def api_client(
    base_url: str,
    recorder: Recorder,
    latencies: ApiLatencies,
    deployment_ids: list[str],
    node_ids: list[str],
    rng: random.Random,
    token: str | None = None,
) -> None:
    """Read one entity after another, with a think time between requests, until cancelled.

    Each client keeps one connection to the server (``simulations.rawhttp``: a measuring
    client costs the harness, which shares the machine with the server, little) and sends
    ``token`` (the server's admin token).
    """
    http = RawHttp(base_url, token)
    try:
        while True:
            await anyio.sleep(rng.uniform(*THINK_S))
            pick = rng.random()
            if deployment_ids and pick < 0.4:
                kind, path = "get_deployment", f"/deployments/{rng.choice(deployment_ids)}"
            elif pick < 0.7 or not deployment_ids:
                kind, path = "get_node", f"/nodes/{rng.choice(node_ids)}"
            else:
                kind = "deployment_events"
                path = f"/events?deployment_id={rng.choice(deployment_ids)}&limit=20"
            began = time.monotonic()
            try:
                with anyio.fail_after(REQUEST_TIMEOUT):
                    status, _ = await http.get(path)
            except (OSError, ReplyError, TimeoutError) as exc:
                log.warning("API request failed: %s", type(exc).__name__)
                continue
            latencies.add(recorder, kind, time.monotonic() - began)
            if status >= 500 or status in (401, 403):
                log.warning("GET %s: %s", path, status)
    finally:
        with anyio.CancelScope(shield=True):
            await http.aclose()
