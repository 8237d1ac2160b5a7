"""DockerRuntime against the real Docker Engine, the local busybox image and the registry."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from knit.errors import RuntimeFailure, RuntimeUnavailable
from knit.runtime import (
    ContainerRuntime,
    ContainerSpec,
    HealthCheck,
    LogOptions,
    Mount,
    PortBinding,
    RegistryAuth,
    RuntimeEvent,
)
from knit.runtime.docker import DockerRuntime
from tests.support.docker import docker, remove_containers, remove_networks
from tests.support.registry import Registry, untag

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
def labels(docker_host: str, docker_test_labels: dict[str, str]) -> Iterator[dict[str, str]]:
    """Labels unique to this test; its containers and networks are removed afterwards."""
    mine = {**docker_test_labels, "knit.test": uuid.uuid4().hex[:12]}
    yield mine
    remove_containers(mine, docker_host)
    remove_networks(mine, docker_host)


@pytest.fixture
async def runtime(docker_host: str) -> AsyncIterator[DockerRuntime]:
    async with DockerRuntime(docker_host, api_timeout=20, pull_timeout=60) as rt:
        yield rt


def _name(prefix: str = "c") -> str:
    return f"knit-test-{prefix}-{uuid.uuid4().hex[:10]}"


def _spare_subnet() -> str:
    """A /24 unlikely to clash with Docker's defaults or a concurrent test run."""
    return f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24"


async def test_docker_runtime_satisfies_the_protocol() -> None:
    assert isinstance(DockerRuntime(), ContainerRuntime)


async def test_version_and_info_describe_the_engine(
    runtime: DockerRuntime, docker_host: str
) -> None:
    expected = docker("version", "--format", "{{.Server.Version}}", docker_host=docker_host)
    assert await runtime.version() == expected.strip()
    info = await runtime.info()
    assert info.cpus >= 1
    assert info.memory_bytes > 2**20
    assert info.version == expected.strip()


async def test_bogus_socket_is_unavailable_and_names_the_socket(tmp_path: Path) -> None:
    socket = tmp_path / "absent" / "docker.sock"
    async with DockerRuntime(f"unix://{socket}") as rt:
        with anyio.fail_after(10), pytest.raises(RuntimeUnavailable, match=str(socket)):
            await rt.version()
        with anyio.fail_after(10), pytest.raises(RuntimeUnavailable):
            await rt.list({"knit.node": "x"})


async def test_an_engine_that_never_answers_is_unavailable_after_the_deadline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "silent.sock"
    accepted: list[anyio.abc.SocketStream] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            accepted.append(stream)
            await anyio.sleep_forever()

    async with await anyio.create_unix_listener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        async with DockerRuntime(f"unix://{path}", api_timeout=0.5) as rt:
            with anyio.fail_after(5), pytest.raises(RuntimeUnavailable, match=r"within 0\.5 s"):
                await rt.version()
        assert accepted
        tg.cancel_scope.cancel()


# -- images --------------------------------------------------------------------------------


async def test_pull_with_the_right_credentials_fetches_the_image(
    runtime: DockerRuntime, registry: Registry, docker_host: str
) -> None:
    untag(registry.image, docker_host)
    assert not await runtime.has_image(registry.image)
    try:
        with anyio.fail_after(60):
            await runtime.pull(registry.image, registry.auth)
        assert await runtime.has_image(registry.image)
    finally:
        untag(registry.image, docker_host)


async def test_pull_with_a_wrong_password_fails_at_auth_without_leaking_it(
    runtime: DockerRuntime, registry: Registry
) -> None:
    bad = RegistryAuth(registry.url, registry.username, "wrong-password-123")
    with anyio.fail_after(30), pytest.raises(RuntimeFailure) as failure:
        await runtime.pull(registry.image, bad)
    assert failure.value.step == "auth"
    assert registry.username in str(failure.value)
    assert "wrong-password-123" not in str(failure.value)
    assert "wrong-password-123" not in repr(bad)


async def test_pull_without_credentials_from_a_private_registry_fails_at_auth(
    runtime: DockerRuntime, registry: Registry
) -> None:
    with anyio.fail_after(30), pytest.raises(RuntimeFailure) as failure:
        await runtime.pull(registry.image)
    assert failure.value.step == "auth"


async def test_pull_of_an_unknown_image_fails_at_pull(
    runtime: DockerRuntime, registry: Registry
) -> None:
    with anyio.fail_after(30), pytest.raises(RuntimeFailure) as failure:
        await runtime.pull(f"{registry.url}/knit/absent:1", registry.auth)
    assert failure.value.step == "pull"
    assert "absent" in failure.value.message


async def _hold_silently(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await anyio.sleep_forever()


async def test_pull_from_a_registry_that_never_answers_is_bounded(docker_host: str) -> None:
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, _hold_silently)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with DockerRuntime(docker_host, pull_timeout=1) as rt:
            with anyio.fail_after(10), pytest.raises(RuntimeFailure) as failure:
                await rt.pull(f"127.0.0.1:{port}/knit/busybox:1")
        assert failure.value.step == "pull"
        tg.cancel_scope.cancel()


async def test_create_without_the_image_says_it_is_not_present(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    spec = ContainerSpec(name=_name(), image="knit-test/absent:nope", labels=labels)
    with pytest.raises(RuntimeFailure, match="not present") as failure:
        await runtime.create(spec)
    assert failure.value.step == "create"


# -- networks ------------------------------------------------------------------------------


async def test_ensure_network_is_idempotent_and_honours_the_subnet(
    runtime: DockerRuntime, labels: dict[str, str], docker_host: str
) -> None:
    name, subnet = _name("net"), _spare_subnet()
    first = await runtime.ensure_network(name, subnet, labels)
    assert await runtime.ensure_network(name, subnet, labels) == first
    assert await runtime.ensure_network(name, None, labels) == first
    shown = json.loads(docker("network", "inspect", name, docker_host=docker_host))[0]
    assert [c["Subnet"] for c in shown["IPAM"]["Config"]] == [subnet]
    assert shown["Labels"] == labels

    with pytest.raises(RuntimeFailure, match="subnet") as failure:
        await runtime.ensure_network(name, _spare_subnet().replace(".0/24", ".0/25"), labels)
    assert failure.value.step == "network"

    await runtime.remove_network(name)
    await runtime.remove_network(name)  # gone already: not an error
    assert (await runtime.ensure_network(name, subnet, labels)) != first


async def test_ensure_network_refuses_an_overlapping_subnet(
    runtime: DockerRuntime, labels: dict[str, str]
) -> None:
    subnet = _spare_subnet()
    await runtime.ensure_network(_name("net"), subnet, labels)
    with pytest.raises(RuntimeFailure) as failure:
        await runtime.ensure_network(_name("net"), subnet, labels)
    assert failure.value.step == "network"


# -- containers ----------------------------------------------------------------------------

SERVE = (
    "trap 'exit 0' TERM; "
    'cat /config/app.conf; echo "greeting=$GREETING"; '
    "if echo x 2>/dev/null > /config/app.conf; then echo WRITABLE; else echo READONLY; fi; "
    "httpd -f -p 8080 -h /config & wait"
)


async def test_container_runs_with_labels_env_readonly_mount_port_and_networks(
    runtime: DockerRuntime,
    busybox_image: str,
    labels: dict[str, str],
    docker_host: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "app.conf").write_text("port = 8080\n")
    front, back = _name("front"), _name("back")
    await runtime.ensure_network(front, _spare_subnet(), labels)
    await runtime.ensure_network(back, None, labels)
    spec = ContainerSpec(
        name=_name(),
        image=busybox_image,
        command=["sh", "-c", SERVE],
        env={"GREETING": "hello knit"},
        labels=labels,
        mounts=[Mount(str(tmp_path), "/config")],
        networks=[front, back],
        ports=[PortBinding(8080, "tcp", host_ip="127.0.0.1")],
    )
    container_id = await runtime.create(spec)
    created = await runtime.inspect(container_id)
    assert created is not None
    assert (created.state, created.name, created.labels) == ("created", spec.name, labels)

    await runtime.start(container_id)
    await runtime.start(container_id)  # already running: nothing happens
    running = await runtime.inspect(spec.name)
    assert running is not None and running.state == "running"
    [port] = running.ports
    assert (port.container_port, port.protocol, port.host_ip) == (8080, "tcp", "127.0.0.1")

    async with httpx.AsyncClient() as http:
        with anyio.fail_after(15):
            while True:
                try:
                    reply = await http.get(f"http://127.0.0.1:{port.host_port}/app.conf")
                    break
                except httpx.TransportError:
                    await anyio.sleep(0.05)
    assert reply.text == "port = 8080\n"
    logs = docker("logs", container_id, docker_host=docker_host)
    assert logs.splitlines()[:3] == ["port = 8080", "greeting=hello knit", "READONLY"]
    assert (tmp_path / "app.conf").read_text() == "port = 8080\n"
    shown = json.loads(docker("inspect", container_id, docker_host=docker_host))[0]
    assert set(shown["NetworkSettings"]["Networks"]) == {front, back}
    assert shown["HostConfig"]["RestartPolicy"]["Name"] == "no"

    [listed] = await runtime.list(labels)
    assert (listed.id, listed.state, listed.image) == (container_id, "running", busybox_image)
    assert listed.ports == running.ports

    await runtime.stop(container_id, grace=5)
    await runtime.stop(container_id, grace=5)  # stopped already: nothing happens
    stopped = await runtime.inspect(container_id)
    assert stopped is not None and (stopped.state, stopped.exit_code) == ("exited", 0)
    [listed] = await runtime.list(labels)
    assert (listed.state, listed.exit_code) == ("exited", 0)

    await runtime.remove(container_id)
    await runtime.remove(container_id)  # gone already: not an error
    assert await runtime.inspect(container_id) is None
    assert await runtime.list(labels) == []


async def test_list_returns_only_containers_with_all_the_labels(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str]
) -> None:
    ids = {}
    for node in ("n1", "n2"):
        spec = ContainerSpec(
            name=_name(node), image=busybox_image, labels={**labels, "knit.node": node}
        )
        ids[node] = await runtime.create(spec)
    assert [c.id for c in await runtime.list({**labels, "knit.node": "n1"})] == [ids["n1"]]
    assert {c.id for c in await runtime.list(labels)} == set(ids.values())
    assert await runtime.list({**labels, "knit.node": "n3"}) == []


async def test_create_with_a_taken_name_fails(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str]
) -> None:
    spec = ContainerSpec(name=_name(), image=busybox_image, labels=labels)
    await runtime.create(spec)
    with pytest.raises(RuntimeFailure, match="already in use") as failure:
        await runtime.create(spec)
    assert failure.value.step == "create"


async def test_events_report_start_and_die_with_the_exit_code(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str]
) -> None:
    spec = ContainerSpec(
        name=_name(), image=busybox_image, command=["sh", "-c", "exit 3"], labels=labels
    )
    seen: list[str] = []
    async with runtime.open_events(labels) as events:
        container_id = await runtime.create(spec)
        await runtime.start(container_id)
        with anyio.fail_after(20):
            async for event in events:
                assert event.container_id == container_id
                assert event.labels == labels
                assert event.name == spec.name
                seen.append(event.action)
                if event.action == "die":
                    assert event.exit_code == 3
                    break
    assert seen == ["create", "start", "die"]


async def test_events_ignore_containers_without_the_labels(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str], docker_host: str
) -> None:
    other = {**labels, "knit.test": labels["knit.test"] + "-other"}
    try:
        async with runtime.open_events(labels) as events:
            await runtime.create(ContainerSpec(name=_name(), image=busybox_image, labels=other))
            mine = await runtime.create(
                ContainerSpec(name=_name(), image=busybox_image, labels=labels)
            )
            with anyio.fail_after(10):
                event = await events.__anext__()
        assert (event.container_id, event.action) == (mine, "create")
    finally:
        remove_containers(other, docker_host)


async def test_cancelling_a_wait_for_events_leaves_the_stream_usable(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str]
) -> None:
    async with runtime.open_events(labels) as events:
        with anyio.move_on_after(0.2) as waited:
            await events.__anext__()
        assert waited.cancelled_caught
        mine = await runtime.create(ContainerSpec(name=_name(), image=busybox_image, labels=labels))
        with anyio.fail_after(10):
            event = await events.__anext__()
    assert (event.container_id, event.action) == (mine, "create")


# -- health checks -------------------------------------------------------------------------


async def _health_events(events: AsyncIterator[RuntimeEvent], container_id: str) -> str:
    """The detail of the next ``health_status`` event of ``container_id``."""
    async for event in events:
        if event.container_id == container_id and event.action == "health_status":
            return event.detail
    raise AssertionError("the event stream ended")


async def test_a_health_check_is_configured_and_its_status_is_read_and_evented(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str], docker_host: str
) -> None:
    check = HealthCheck(("true",), interval=0.3, timeout=2.0, retries=2, start_period=0.1)
    spec = ContainerSpec(
        name=_name(), image=busybox_image, command=["sleep", "60"], labels=labels, healthcheck=check
    )
    async with runtime.open_events(labels) as events:
        container_id = await runtime.create(spec)
        shown = json.loads(docker("inspect", container_id, docker_host=docker_host))[0]
        assert shown["Config"]["Healthcheck"] == {
            "Test": ["CMD", "true"],
            "Interval": 300_000_000,
            "Timeout": 2_000_000_000,
            "StartPeriod": 100_000_000,
            "Retries": 2,
        }
        created = await runtime.inspect(container_id)
        assert created is not None and created.health == "none"
        await runtime.start(container_id)
        started = await runtime.inspect(container_id)
        assert started is not None and started.health == "starting"
        with anyio.fail_after(10):
            assert await _health_events(events, container_id) == "healthy"
    running = await runtime.inspect(container_id)
    [listed] = await runtime.list(labels)
    assert running is not None and (running.health, listed.health) == ("healthy", "healthy")
    await runtime.stop(container_id, grace=0)
    stopped = await runtime.inspect(container_id)
    [listed] = await runtime.list(labels)
    assert stopped is not None and (stopped.health, listed.health) == ("none", "none")


async def test_a_failing_health_check_turns_the_container_unhealthy(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str]
) -> None:
    check = HealthCheck(("CMD", "false"), interval=0.3, timeout=2.0, retries=1)
    spec = ContainerSpec(
        name=_name(), image=busybox_image, command=["sleep", "60"], labels=labels, healthcheck=check
    )
    async with runtime.open_events(labels) as events:
        container_id = await runtime.create(spec)
        await runtime.start(container_id)
        with anyio.fail_after(10):
            assert await _health_events(events, container_id) == "unhealthy"
    [listed] = await runtime.list(labels)
    assert (listed.state, listed.health) == ("running", "unhealthy")


async def test_without_a_health_check_none_is_configured(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str], docker_host: str
) -> None:
    spec = ContainerSpec(name=_name(), image=busybox_image, command=["sleep", "60"], labels=labels)
    container_id = await runtime.create(spec)
    await runtime.start(container_id)
    shown = json.loads(docker("inspect", container_id, docker_host=docker_host))[0]
    assert shown["Config"].get("Healthcheck") is None
    running = await runtime.inspect(container_id)
    [listed] = await runtime.list(labels)
    assert running is not None and (running.health, listed.health) == ("none", "none")


async def test_open_logs_reads_stdout_and_stderr_as_lines_trimmed_as_asked(
    runtime: DockerRuntime, busybox_image: str, labels: dict[str, str]
) -> None:
    script = "for i in 1 2 3 4 5; do echo out $i; echo err $i >&2; done; sleep 0.6; echo late"
    spec = ContainerSpec(
        name=_name("logs"), image=busybox_image, labels=labels, command=["sh", "-c", script]
    )
    container_id = await runtime.create(spec)
    await runtime.start(container_id)
    with anyio.fail_after(10):
        async with runtime.open_logs(container_id, LogOptions(follow=True, tail=None)) as lines:
            followed = [line async for line in lines]  # ends when the container stops
    written = [f"{stream} {i}" for stream in ("out", "err") for i in range(1, 6)]
    assert sorted(followed[:10]) == sorted(written)
    assert followed[10:] == ["late"]
    async with runtime.open_logs(container_id, LogOptions(tail=2)) as lines:
        assert [line async for line in lines][-1] == "late"
    async with runtime.open_logs(container_id, LogOptions(tail=None)) as lines:  # streamed
        assert len([line async for line in lines]) == 11
    async with runtime.open_logs(container_id, LogOptions(tail=1, timestamps=True)) as lines:
        [stamped] = [line async for line in lines]
    assert stamped.endswith(" late") and stamped[:4].isdigit()
    with pytest.raises(RuntimeFailure):
        async with runtime.open_logs("no-such-container", LogOptions()):
            pass
