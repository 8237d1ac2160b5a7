"""Rollouts seen from outside, as a user sees them: a small HTTP server whose page says its
version, the deployment's lifecycle routes, and a poller that samples the instances the API
calls healthy and fetches each one's page while a rollout runs.

Like the rest of the end-to-end support, nothing here imports Knit: the API over HTTP, the
pages over HTTP on 127.0.0.1 (each instance's port published there, found with
``docker inspect``), Docker through its CLI.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.docker import DockerCLIError, docker
from tests.support.knit import KnitCluster
from tests.support.knit_api import JSON, KnitApi
from tests.support.knit_docker import container_ids

HTTP_PORT = 8080
"""The port the page is served on, in the container."""

HTTP_SERVER = [
    "sh",
    "-c",
    'mkdir -p /www && echo "$VERSION" > /www/index.html && httpd -p 8080 -h /www'
    " && trap 'exit 0' TERM && while true; do sleep 1 & wait $!; done",
]
"""busybox httpd serving ``/www`` (``index.html`` says ``$VERSION``) in the background; the
shell, PID 1, exits at once on SIGTERM (``wait`` is interrupted by the trapped signal)."""

HEALTH_CHECK: JSON = {
    "command": ["CMD", "wget", "-q", "-O-", f"http://127.0.0.1:{HTTP_PORT}/"],
    "interval": 0.5,
    "timeout": 1.0,
    "retries": 2,
}
"""The page answers: a short interval, so an instance is healthy about half a second after it
starts."""

FAILING_CHECK: JSON = {"command": ["CMD", "false"], "interval": 0.5, "timeout": 1.0, "retries": 2}
"""A health check that never passes."""

RUNNING, HEALTHY = "running", "healthy"


def web_spec(name: str, version: str, *, replicas: int = 3, **update: object) -> JSON:
    """A deployment of ``HTTP_SERVER`` saying ``version``, its port 8080 published on
    127.0.0.1 (the Engine picks the host port), with ``HEALTH_CHECK`` and the update policy
    ``update`` (``min_healthy_time`` 1 s unless given)."""
    return {
        "name": name,
        "image": "knit-test/busybox:latest",
        "replicas": replicas,
        "env": {"VERSION": version},
        "command": HTTP_SERVER,
        "ports": [{"container_port": HTTP_PORT, "host_ip": "127.0.0.1"}],
        "health_check": dict(HEALTH_CHECK),
        "update": {"min_healthy_time": 1.0, **update},
    }


def serving(instance: Mapping[str, Any]) -> bool:
    """Whether the API says this instance is wanted, runs and is healthy."""
    return bool(
        instance.get("desired")
        and instance.get("status") == RUNNING
        and instance.get("health") == HEALTHY
    )


def wanted(instances: Sequence[JSON]) -> list[JSON]:
    """The instances the deployment still wants (not retired)."""
    return [i for i in instances if i.get("desired")]


# -- the lifecycle routes ------------------------------------------------------------------


def put_deployment(knit: KnitCluster, deployment_id: str, spec: JSON) -> JSON:
    """``PUT /deployments/{id}`` with a full spec, asserting 200."""
    data = knit.api.ok(knit.api.http.put(f"/deployments/{deployment_id}", json=spec), 200)
    assert isinstance(data, dict), data
    return data


def scale(knit: KnitCluster, deployment_id: str, replicas: int) -> None:
    """``POST /deployments/{id}/scale``, asserting 200; then the deployment says ``replicas``."""
    body = {"replicas": replicas}
    knit.api.ok(knit.api.post(f"/deployments/{deployment_id}/scale", body), 200)
    data = knit.api.deployment(deployment_id)
    assert data["replicas"] == replicas, f"scaled to {replicas}: {describe(knit, deployment_id)}"


def versions(knit: KnitCluster, deployment_id: str) -> list[JSON]:
    """``GET /deployments/{id}/versions`` (newest first)."""
    return knit.api.listing(f"/deployments/{deployment_id}/versions")


def rollback(knit: KnitCluster, deployment_id: str, version: int | None = None) -> int:
    """``POST /deployments/{id}/rollback`` (to ``version``; None: no body), asserting 2xx;
    return the deployment's version after it."""
    path = f"/deployments/{deployment_id}/rollback"
    if version is None:
        response = knit.api.http.post(path)
    else:
        response = knit.api.post(path, {"version": version})
    knit.api.ok(response)
    return int(knit.api.deployment(deployment_id)["version"])


def describe(knit: KnitCluster, deployment_id: str) -> str:
    """The deployment's version, rollout and instances, for failure messages."""
    data = knit.api.deployment(deployment_id)
    brief = [
        {k: i.get(k) for k in ("index", "version", "status", "health", "desired", "id")}
        for i in data.get("instances", [])
    ]
    head = {k: data.get(k) for k in ("version", "replicas", "rollout")}
    return json.dumps({**head, "instances": brief})


def wait_rollout(
    knit: KnitCluster,
    deployment_id: str,
    state: str,
    *,
    version: int,
    timeout: float = 60.0,
    fail_on: Sequence[str] | None = None,
) -> JSON:
    """Wait until the deployment's rollout of ``version`` is in ``state``; return the
    deployment.

    Fails at once when the rollout reaches a state of ``fail_on`` (by default the ends other
    than ``state`` that a rollout cannot leave on its own: ``paused``, ``rolled_back``).
    """
    failing = (
        fail_on if fail_on is not None else [s for s in ("paused", "rolled_back") if s != state]
    )

    def reached() -> JSON | None:
        data = knit.api.deployment(deployment_id)
        rollout = data.get("rollout") or {}
        if (rollout.get("state"), rollout.get("version")) == (state, version):
            return data
        assert rollout.get("state") not in failing, (
            f"deployment {deployment_id}: the rollout is {rollout.get('state')!r} while "
            f"{state!r} (version {version}) was awaited: {describe(knit, deployment_id)}"
            f"{knit.api.logs()}"
        )
        return None

    return knit.api.wait(
        reached,
        timeout=timeout,
        what=f"deployment {deployment_id}: rollout of version {version} {state}",
        describe=lambda: describe(knit, deployment_id),
    )


def wait_serving(
    knit: KnitCluster,
    deployment_id: str,
    *,
    count: int,
    version: int | None,
    timeout: float = 60.0,
) -> list[JSON]:
    """Wait until the deployment has exactly ``count`` instances, all wanted, running and
    healthy (and of ``version``, unless None), and Docker exactly ``count`` containers of it
    (the replaced ones removed); return the instances, by index."""
    labels = {"knit.deployment": deployment_id}

    def settled() -> list[JSON] | None:
        instances = knit.api.instances_of(deployment_id)
        if len(instances) != count or not all(serving(i) for i in instances):
            return None
        if version is not None and any(i.get("version") != version for i in instances):
            return None
        if len(container_ids(knit.docker_host, labels)) != count:
            return None
        return sorted(instances, key=lambda i: int(i["index"]))

    return knit.api.wait(
        settled,
        timeout=timeout,
        what=f"deployment {deployment_id}: {count} healthy instance(s) of version {version}",
        describe=lambda: (
            describe(knit, deployment_id)
            + f"\ncontainers: {container_ids(knit.docker_host, labels)}"
        ),
    )


# -- the pages -----------------------------------------------------------------------------


def published_port(docker_host: str, container_id: str) -> int | None:
    """The 127.0.0.1 port Docker published the container's ``HTTP_PORT`` on (None: none)."""
    out = docker(
        "inspect", "--format", "{{json .NetworkSettings.Ports}}", container_id,
        docker_host=docker_host, timeout=10,
    )  # fmt: skip
    ports = json.loads(out) or {}
    bindings = ports.get(f"{HTTP_PORT}/tcp") or []
    for binding in bindings:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def fetch_page(port: int, path: str = "/", timeout: float = 1.0) -> str:
    """``GET http://127.0.0.1:PORT/PATH``: the body, stripped.

    Raises:
        httpx.HTTPError: no answer, or not a 200.
    """
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)
    response.raise_for_status()
    return response.text.strip()


def pages(docker_host: str, instances: Sequence[JSON], path: str = "/") -> dict[int, str]:
    """Each instance's page at ``path``, by instance index."""
    found = {}
    for instance in instances:
        port = published_port(docker_host, instance["container_id"])
        assert port is not None, f"instance {instance['index']} publishes no port"
        found[instance["index"]] = fetch_page(port, path, timeout=5.0)
    return found


def containers_per_instance(docker_host: str, deployment_id: str) -> Counter[str]:
    """How many containers (any state) Docker has for each instance of the deployment (by
    their ``knit.instance`` label): more than one is a duplicate."""
    out = docker(
        "ps", "-a", "--no-trunc", "--filter", f"label=knit.deployment={deployment_id}",
        "--format", '{{.Label "knit.instance"}}', docker_host=docker_host,
    )  # fmt: skip
    return Counter(out.split())


def started_at(docker_host: str, container_id: str) -> str:
    """Docker's ``State.StartedAt`` of a container (it changes when it starts again)."""
    return docker(
        "inspect", "--format", "{{.State.StartedAt}}", container_id, docker_host=docker_host
    ).strip()  # fmt: skip


# -- the poller ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What one turn of the poller saw: the instances as the API listed them, and the page
    of each instance it fetched (by instance id)."""

    at: float
    instances: tuple[JSON, ...]
    pages: Mapping[str, str]

    @property
    def serving(self) -> list[JSON]:
        """The instances the API called wanted, running and healthy."""
        return [i for i in self.instances if serving(i)]

    @property
    def running(self) -> list[JSON]:
        """The wanted instances the API called running."""
        return [i for i in self.instances if i.get("desired") and i.get("status") == RUNNING]

    def brief(self) -> str:
        """One line: each instance's index, version, status, health, desired."""
        return ", ".join(
            f"#{i.get('index')} v{i.get('version')} {i.get('status')}/{i.get('health')}"
            f"{'' if i.get('desired') else ' (retired)'}"
            for i in self.instances
        )


@dataclass(frozen=True)
class Failure:
    """A healthy instance whose page failed (or said something else than expected)."""

    at: float
    instance: JSON
    error: str


@dataclass
class PagePoller:
    """Samples a deployment every ``interval`` seconds in a thread of its own: lists its
    instances (``GET /deployments/{id}``) and fetches the page at ``path`` of each one the
    API says is wanted, running and healthy.

    A fetch that fails counts as a :class:`Failure` only if the instance is still listed as
    wanted, running and healthy afterwards (an instance may be retired between the listing
    and the fetch). A page that differs from ``expect(instance)`` (None: any page) is always
    a failure. The loop is bounded by ``max_seconds``; :meth:`running` starts and stops it.
    """

    api_url: str
    docker_host: str
    deployment_id: str
    path: str = "/"
    expect: Callable[[JSON], str | None] = lambda _instance: None
    interval: float = 0.1
    max_seconds: float = 90.0
    samples: list[Sample] = field(default_factory=list, init=False)
    failures: list[Failure] = field(default_factory=list, init=False)
    api_errors: list[str] = field(default_factory=list, init=False)
    _ports: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _error: BaseException | None = field(default=None, init=False)

    @contextmanager
    def running(self) -> Iterator[PagePoller]:
        """Poll in a thread until the block ends (or ``max_seconds`` passed); re-raise what
        broke the thread."""
        thread = threading.Thread(target=self._run, name="page-poller", daemon=True)
        thread.start()
        try:
            self._wait_first_sample()
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)
        assert not thread.is_alive(), "the page poller did not stop"
        if self._error is not None:
            raise AssertionError(f"the page poller broke: {self._error!r}") from self._error

    def _wait_first_sample(self) -> None:
        deadline = time.monotonic() + 10
        while not self.samples and self._error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.samples, f"the page poller took no sample ({self._error!r})"

    def _run(self) -> None:
        api = KnitApi(self.api_url)
        try:
            deadline = time.monotonic() + self.max_seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                began = time.monotonic()
                self._sample(api)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))
        except BaseException as exc:
            self._error = exc
        finally:
            api.close()

    def _listing(self, api: KnitApi) -> list[JSON] | None:
        try:
            response = api.get(f"/deployments/{self.deployment_id}")
        except httpx.HTTPError as exc:
            self.api_errors.append(repr(exc))
            return None
        if response.status_code != 200:
            self.api_errors.append(f"HTTP {response.status_code} {response.text[:200]}")
            return None
        instances = response.json().get("instances")
        assert isinstance(instances, list), response.text
        return instances

    def _sample(self, api: KnitApi) -> None:
        at = time.time()
        instances = self._listing(api)
        if instances is None:
            return
        got: dict[str, str] = {}
        for instance in instances:
            if not serving(instance):
                continue
            try:
                body = fetch_page(self._port(instance), self.path)
            except (httpx.HTTPError, DockerCLIError, AssertionError) as exc:
                if self._still_serving(api, instance):
                    self.failures.append(Failure(at, instance, repr(exc)))
                continue
            got[instance["instance_id"]] = body
            expected = self.expect(instance)
            if expected is not None and body != expected:
                self.failures.append(Failure(at, instance, f"page {body!r}, not {expected!r}"))
        self.samples.append(Sample(at, tuple(instances), got))

    def _port(self, instance: JSON) -> int:
        container_id = instance.get("container_id")
        assert container_id, f"a healthy instance without a container id: {instance}"
        if container_id not in self._ports:
            port = published_port(self.docker_host, container_id)
            assert port is not None, f"container {container_id[:12]} publishes no port"
            self._ports[container_id] = port
        return self._ports[container_id]

    def _still_serving(self, api: KnitApi, instance: JSON) -> bool:
        after = self._listing(api)
        if after is None:
            return False
        return any(i["instance_id"] == instance["instance_id"] and serving(i) for i in after)

    # -- what was seen

    def check_no_failure(self) -> None:
        """Assert that no healthy instance failed to serve its page."""
        assert not self.failures, "pages failed on healthy instances:\n" + "\n".join(
            f"  {f.at:.2f} #{f.instance.get('index')} v{f.instance.get('version')} "
            f"{str(f.instance.get('container_id'))[:12]}: {f.error}"
            for f in self.failures
        )

    def fewest(self, count: Callable[[Sample], int]) -> tuple[int, Sample]:
        """The smallest ``count(sample)`` and the first sample that had it."""
        assert self.samples, "no sample taken"
        worst = min(self.samples, key=count)
        return count(worst), worst

    def versions_served(self) -> set[int]:
        """The versions of the instances whose page was fetched at least once."""
        return {
            int(i["version"])
            for s in self.samples
            for i in s.instances
            if i["instance_id"] in s.pages
        }


__all__ = [
    "FAILING_CHECK",
    "HEALTH_CHECK",
    "HTTP_PORT",
    "HTTP_SERVER",
    "Failure",
    "PagePoller",
    "Sample",
    "containers_per_instance",
    "fetch_page",
    "pages",
    "published_port",
    "put_deployment",
    "rollback",
    "scale",
    "serving",
    "started_at",
    "versions",
    "wait_rollout",
    "wait_serving",
    "wanted",
    "web_spec",
]
