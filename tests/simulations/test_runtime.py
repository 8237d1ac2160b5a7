"""SimRuntime: conformance with the ContainerRuntime port and parity with DockerRuntime.

The parity tests mirror tests/runtime/test_docker.py (which runs against a real Engine) so the
simulated runtime keeps the semantics the agent relies on. Latency tests run on trio with a
MockClock: simulated time passes instantly (SimRuntime only uses anyio, so it runs there too).
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import tracemalloc
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from knit.errors import RuntimeFailure, RuntimeUnavailable
from knit.runtime.base import (
    ContainerRuntime,
    ContainerSpec,
    HealthCheck,
    LogOptions,
    Mount,
    PortBinding,
    RegistryAuth,
)
from simulations.profile import SimProfile, normalize_image, registry_of
from simulations.runtime import SimRuntime

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

IMAGE = "registry.test:5000/knit/app:1"
LABELS = {"knit.node": "n1"}


def spec(name: str = "c1", **fields: Any) -> ContainerSpec:
    fields.setdefault("labels", LABELS)
    return ContainerSpec(name=name, image=IMAGE, **fields)


async def ready(profile: SimProfile | None = None) -> SimRuntime:
    runtime = SimRuntime(profile)
    await runtime.pull(IMAGE)
    return runtime


# -- conformance ---------------------------------------------------------------------------


def _protocol_members() -> list[str]:
    return [
        name
        for name, value in vars(ContainerRuntime).items()
        if callable(value) and not name.startswith("_")
    ]


async def test_sim_runtime_satisfies_the_protocol() -> None:
    assert isinstance(SimRuntime(), ContainerRuntime)


@pytest.mark.parametrize("member", _protocol_members())
async def test_every_method_has_the_protocols_signature(member: str) -> None:
    wanted: Callable[..., Any] = getattr(ContainerRuntime, member)
    actual: Callable[..., Any] = getattr(SimRuntime, member)
    assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(wanted)
    shape = [(p.name, p.kind, p.default) for p in inspect.signature(actual).parameters.values()]
    assert shape == [
        (p.name, p.kind, p.default) for p in inspect.signature(wanted).parameters.values()
    ]
    hints, wanted_hints = typing.get_type_hints(actual), typing.get_type_hints(wanted)
    if member in ("open_events", "open_logs"):  # decorated generators: returns checked below
        hints.pop("return"), wanted_hints.pop("return")
    assert hints == wanted_hints


async def test_open_events_is_an_async_context_manager_yielding_an_async_iterator() -> None:
    manager = SimRuntime().open_events()
    assert hasattr(manager, "__aenter__") and hasattr(manager, "__aexit__")
    async with manager as events:
        assert hasattr(events, "__anext__")


async def test_version_and_info_come_from_the_profile() -> None:
    runtime = SimRuntime(SimProfile(cpus=2, memory_bytes=2**30, version="sim-9"))
    assert await runtime.version() == "sim-9"
    info = await runtime.info()
    assert (info.cpus, info.memory_bytes, info.version) == (2, 2**30, "sim-9")


def test_profile_rejects_bad_latencies_and_rates() -> None:
    with pytest.raises(ValueError, match="pull_latency"):
        SimProfile(pull_latency=(2.0, 1.0))
    with pytest.raises(ValueError, match="start_latency"):
        SimProfile(start_latency=-1.0)
    with pytest.raises(ValueError, match="stop_failure_rate"):
        SimProfile(stop_failure_rate=1.5)


# -- images --------------------------------------------------------------------------------


def test_image_references_are_compared_as_docker_does() -> None:
    assert normalize_image("busybox") == "busybox:latest"
    assert normalize_image("localhost:5000/app") == "localhost:5000/app:latest"
    assert normalize_image("app@sha256:abc") == "app@sha256:abc"
    assert registry_of("localhost:5000/app") == "localhost:5000"
    assert registry_of("library/busybox") == "docker.io"


async def test_pull_makes_the_image_present_and_create_needs_it() -> None:
    runtime = SimRuntime(SimProfile(preloaded_images=frozenset({"base"})))
    assert await runtime.has_image("base:latest")
    assert not await runtime.has_image(IMAGE)
    with pytest.raises(RuntimeFailure, match="not present") as failure:
        await runtime.create(spec())
    assert failure.value.step == "create"
    await runtime.pull(IMAGE)
    assert await runtime.has_image(IMAGE)
    assert not await SimRuntime().has_image(IMAGE)  # hosts are independent


async def test_pull_checks_the_registrys_credentials_without_leaking_the_password() -> None:
    runtime = SimRuntime(SimProfile(auth={"registry.test:5000": ("knit", "s3cret")}))
    await runtime.pull(IMAGE, RegistryAuth("registry.test:5000", "knit", "s3cret"))
    assert await runtime.has_image(IMAGE)
    with pytest.raises(RuntimeFailure) as wrong:
        await runtime.pull(IMAGE, RegistryAuth("registry.test:5000", "knit", "wrong-pw-123"))
    assert wrong.value.step == "auth"
    assert "'knit'" in str(wrong.value) and "wrong-pw-123" not in str(wrong.value)
    with pytest.raises(RuntimeFailure, match="anonymous") as anonymous:
        await runtime.pull(IMAGE)
    assert anonymous.value.step == "auth"
    await runtime.pull("busybox")  # another registry wants nothing


async def test_pull_of_an_unknown_image_fails_at_pull() -> None:
    runtime = SimRuntime(SimProfile(registry_images=frozenset({IMAGE})))
    await runtime.pull(IMAGE)
    with pytest.raises(RuntimeFailure, match="absent") as failure:
        await runtime.pull("registry.test:5000/knit/absent:1")
    assert failure.value.step == "pull"
    with pytest.raises(RuntimeFailure, match="names no registry") as failure:
        await runtime.pull("busybox", RegistryAuth("registry.test:5000", "knit", "pw"))
    assert failure.value.step == "pull"


# -- networks ------------------------------------------------------------------------------


async def test_ensure_network_is_idempotent_and_honours_the_subnet() -> None:
    runtime = SimRuntime()
    first = await runtime.ensure_network("front", "10.200.1.0/24", {"knit.network": "front"})
    assert await runtime.ensure_network("front", "10.200.1.0/24") == first
    assert await runtime.ensure_network("front", None) == first
    with pytest.raises(RuntimeFailure, match="subnet") as failure:
        await runtime.ensure_network("front", "10.200.1.0/25")
    assert failure.value.step == "network"
    await runtime.remove_network("front")
    await runtime.remove_network("front")  # gone already: not an error
    assert await runtime.ensure_network("front", "10.200.1.0/24") != first


async def test_ensure_network_refuses_overlapping_and_bad_subnets() -> None:
    runtime = SimRuntime()
    await runtime.ensure_network("a", "10.200.0.0/16")
    for subnet in ("10.200.5.0/24", "not-a-subnet"):
        with pytest.raises(RuntimeFailure) as failure:
            await runtime.ensure_network("b", subnet)
        assert failure.value.step == "network"


async def test_a_network_without_subnet_gets_a_free_default_pool() -> None:
    runtime = SimRuntime()
    await runtime.ensure_network("a", "172.18.0.0/16")
    await runtime.ensure_network("b")  # takes 172.19.0.0/16
    with pytest.raises(RuntimeFailure, match="overlaps"):
        await runtime.ensure_network("c", "172.19.0.0/24")
    with pytest.raises(RuntimeFailure, match="subnet"):
        await runtime.ensure_network("b", "172.20.0.0/16")


async def test_remove_network_refuses_while_a_running_container_uses_it() -> None:
    runtime = await ready()
    await runtime.ensure_network("front")
    container_id = await runtime.create(spec(networks=["front"]))
    await runtime.remove_network("absent")
    await runtime.start(container_id)
    with pytest.raises(RuntimeFailure, match="active endpoints"):
        await runtime.remove_network("front")
    await runtime.stop(container_id)
    await runtime.remove_network("front")
    with pytest.raises(RuntimeFailure, match="front not found") as failure:
        await runtime.start(container_id)
    assert failure.value.step == "start"


# -- containers ----------------------------------------------------------------------------


async def test_container_lifecycle_matches_docker() -> None:
    runtime = await ready()
    await runtime.ensure_network("front")
    container = spec(
        networks=["front"],
        mounts=[Mount("/tmp/conf", "/config")],
        ports=[PortBinding(8080, "tcp", host_ip="127.0.0.1")],
    )
    container_id = await runtime.create(container)
    created = await runtime.inspect(container_id)
    assert created is not None
    assert (created.state, created.name, created.labels, created.exit_code, created.ports) == (
        "created",
        "c1",
        LABELS,
        None,
        [],
    )
    await runtime.start(container_id)
    await runtime.start(container_id)  # already running: nothing happens
    running = await runtime.inspect("c1")
    assert running is not None and running.state == "running"
    [port] = running.ports
    assert (port.container_port, port.protocol, port.host_ip) == (8080, "tcp", "127.0.0.1")
    assert port.host_port >= 32768
    [listed] = await runtime.list(LABELS)
    assert (listed.id, listed.state, listed.image, listed.ports) == (
        container_id,
        "running",
        IMAGE,
        running.ports,
    )
    await runtime.stop(container_id, grace=5)
    await runtime.stop(container_id, grace=5)  # stopped already: nothing happens
    stopped = await runtime.inspect(container_id[:12])  # a unique prefix finds it too
    assert stopped is not None and (stopped.state, stopped.exit_code, stopped.ports) == (
        "exited",
        0,
        [],
    )
    await runtime.start(container_id)  # an exited container starts again
    again = await runtime.inspect(container_id)
    assert again is not None and (again.state, again.exit_code) == ("running", None)
    await runtime.remove(container_id)
    await runtime.remove(container_id)  # gone already: not an error
    assert await runtime.inspect(container_id) is None
    assert await runtime.list(LABELS) == []
    assert runtime.count() == 0


async def test_list_returns_only_containers_with_all_the_labels_newest_first() -> None:
    runtime = await ready()
    ids = [
        await runtime.create(spec(f"c{i}", labels={"knit.node": "n1", "i": str(i % 2)}))
        for i in range(3)
    ]
    assert [c.id for c in await runtime.list({"knit.node": "n1"})] == ids[::-1]
    assert [c.id for c in await runtime.list({"knit.node": "n1", "i": "1"})] == [ids[1]]
    assert await runtime.list({"knit.node": "n2"}) == []
    assert len(await runtime.list()) == 3


async def test_create_refuses_a_taken_name_an_unknown_network_and_host_mode_with_ports() -> None:
    runtime = await ready()
    await runtime.create(spec())
    bad = [
        (spec(), "already in use"),
        (spec("c2", networks=["absent"]), "absent not found"),
        (spec("c3", network_mode="host", ports=[PortBinding(80)]), "host networking"),
        (spec("c4", mounts=[Mount("relative", "/x")]), "relative"),
        (spec("bad name!"), "invalid container name"),
    ]
    for container, message in bad:
        with pytest.raises(RuntimeFailure, match=message) as failure:
            await runtime.create(container)
        assert failure.value.step == "create"
    assert runtime.count() == 1


async def test_start_stop_of_an_unknown_container_fail_at_their_step() -> None:
    runtime = SimRuntime()
    for step in ("start", "stop"):
        with pytest.raises(RuntimeFailure, match="No such container") as failure:
            await getattr(runtime, step)("nope")
        assert failure.value.step == step


async def test_remove_without_force_refuses_a_running_container() -> None:
    runtime = await ready()
    container_id = await runtime.create(spec())
    await runtime.start(container_id)
    with pytest.raises(RuntimeFailure, match="running") as failure:
        await runtime.remove(container_id, force=False)
    assert failure.value.step == "remove"
    await runtime.stop(container_id)
    await runtime.remove(container_id, force=False)
    assert runtime.count() == 0


async def test_a_host_port_held_by_a_running_container_cannot_be_published_again() -> None:
    runtime = await ready()
    first = await runtime.create(spec("ca", ports=[PortBinding(80, host_port=8080)]))
    second = await runtime.create(spec("cb", ports=[PortBinding(80, host_port=8080)]))
    udp = await runtime.create(spec("cc", ports=[PortBinding(80, "udp", host_port=8080)]))
    await runtime.start(first)
    with pytest.raises(RuntimeFailure, match="already allocated") as failure:
        await runtime.start(second)
    assert failure.value.step == "start"
    await runtime.start(udp)  # another protocol: no clash
    await runtime.stop(first)
    await runtime.start(second)
    state = await runtime.inspect(second)
    assert state is not None and [p.host_port for p in state.ports] == [8080]


# -- events --------------------------------------------------------------------------------


async def test_events_report_create_start_and_die_with_the_exit_code() -> None:
    runtime = await ready()
    seen = []
    async with runtime.open_events(LABELS) as events:
        container_id = await runtime.create(spec())
        await runtime.start(container_id)
        assert runtime.crash(container_id, exit_code=3)
        with anyio.fail_after(5):
            async for event in events:
                assert (event.container_id, event.labels, event.name) == (
                    container_id,
                    LABELS,
                    "c1",
                )
                seen.append((event.action, event.exit_code))
                if event.action == "die":
                    break
    assert seen == [("create", None), ("start", None), ("die", 3)]
    state = await runtime.inspect(container_id)
    assert state is not None and (state.state, state.exit_code) == ("exited", 3)
    assert not runtime.crash(container_id)  # not running: nothing happens
    with pytest.raises(LookupError):
        runtime.crash("absent")


async def test_stop_and_forced_remove_emit_dockers_sequences() -> None:
    runtime = await ready()
    a, b = await runtime.create(spec("ca")), await runtime.create(spec("cb"))
    await runtime.start(a)
    await runtime.start(b)
    async with runtime.open_events(LABELS) as events:
        await runtime.stop(a)
        await runtime.remove(a)
        await runtime.remove(b)
        with anyio.fail_after(5):
            seen = [
                (e.container_id, e.action, e.exit_code)
                for e in [await anext(events) for _ in range(7)]
            ]
    assert seen == [
        (a, "kill", None),
        (a, "die", 0),
        (a, "stop", None),
        (a, "destroy", None),
        (b, "kill", None),
        (b, "die", 137),
        (b, "destroy", None),
    ]


async def test_events_ignore_containers_without_the_labels() -> None:
    runtime = await ready()
    async with runtime.open_events(LABELS) as mine, runtime.open_events() as every:
        await runtime.create(spec("other", labels={"knit.node": "n2"}))
        container_id = await runtime.create(spec())
        with anyio.fail_after(5):
            event = await anext(mine)
            assert [(await anext(every)).name, (await anext(every)).name] == ["other", "c1"]
    assert (event.container_id, event.action) == (container_id, "create")


async def test_cancelling_a_wait_for_events_leaves_the_stream_usable() -> None:
    runtime = await ready()
    async with runtime.open_events(LABELS) as events:
        with anyio.move_on_after(0.05) as waited:
            await anext(events)
        assert waited.cancelled_caught
        container_id = await runtime.create(spec())
        with anyio.fail_after(5):
            event = await anext(events)
    assert (event.container_id, event.action) == (container_id, "create")


# -- faults --------------------------------------------------------------------------------


async def test_an_unavailable_engine_refuses_every_call_and_ends_event_streams() -> None:
    runtime = await ready()
    container_id = await runtime.create(spec())
    async with runtime.open_events() as events:
        runtime.unavailable = True
        with anyio.fail_after(5):
            assert [e async for e in events] == []  # the stream ended
    calls = [
        runtime.version(),
        runtime.info(),
        runtime.pull(IMAGE),
        runtime.has_image(IMAGE),
        runtime.ensure_network("n"),
        runtime.remove_network("n"),
        runtime.create(spec("c2")),
        runtime.start(container_id),
        runtime.stop(container_id),
        runtime.remove(container_id),
        runtime.inspect(container_id),
        runtime.list(),
    ]
    for call in calls:
        with pytest.raises(RuntimeUnavailable, match=runtime.name):
            await call
    with pytest.raises(RuntimeUnavailable):
        async with runtime.open_events():
            pass
    runtime.unavailable = False
    await runtime.start(container_id)  # state survived the outage
    assert runtime.count("running") == 1


@pytest.mark.parametrize("live_restore", [False, True])
async def test_restart_engine_ends_streams_and_stops_containers_unless_live_restore(
    live_restore: bool,
) -> None:
    runtime = await ready(SimProfile(stop_exit_code=143))
    container_id = await runtime.create(spec())
    await runtime.start(container_id)
    async with runtime.open_events() as events:
        runtime.restart_engine(live_restore=live_restore)
        with anyio.fail_after(5):
            assert [e async for e in events] == []
    state = await runtime.inspect(container_id)
    assert state is not None
    expected = ("running", None) if live_restore else ("exited", 143)
    assert (state.state, state.exit_code) == expected


@pytest.mark.parametrize("step", ["pull", "create", "start", "stop"])
async def test_a_failure_rate_of_one_fails_the_step_readably(step: str) -> None:
    profile = SimProfile(preloaded_images=frozenset({IMAGE}))
    runtime = SimRuntime(profile, name="host-a")
    container_id = await runtime.create(spec())
    if step == "stop":
        await runtime.start(container_id)
    rates: dict[str, Any] = {f"{step}_failure_rate": 1.0}
    runtime.profile = dataclasses.replace(profile, **rates)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "pull": lambda: runtime.pull(IMAGE),
        "create": lambda: runtime.create(spec("c2")),
        "start": lambda: runtime.start(container_id),
        "stop": lambda: runtime.stop(container_id),
    }
    message = f"simulated failure on host-a \\({step}_failure_rate=1\\)"
    with pytest.raises(RuntimeFailure, match=message) as failure:
        await calls[step]()
    assert failure.value.step == step
    state = await runtime.inspect(container_id)
    assert state is not None
    assert state.state == ("running" if step == "stop" else "created")
    assert runtime.count() == 1


async def test_failures_are_deterministic_per_seed_and_name_and_follow_the_rate() -> None:
    profile = SimProfile(create_failure_rate=0.3, preloaded_images=frozenset({IMAGE}), seed=7)

    async def outcomes(runtime: SimRuntime) -> list[bool]:
        results = []
        for i in range(300):
            try:
                await runtime.create(spec(f"c{i}"))
                results.append(True)
            except RuntimeFailure:
                results.append(False)
        return results

    first = await outcomes(SimRuntime(profile, name="a"))
    assert first == await outcomes(SimRuntime(profile, name="a"))
    assert first != await outcomes(SimRuntime(profile, name="b"))
    assert 0.2 < first.count(False) / len(first) < 0.4


# -- latency (simulated time, on trio's MockClock) ----------------------------------------


class TestLatency:
    @pytest.fixture
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}

    async def test_each_step_takes_its_fixed_latency(self) -> None:
        profile = SimProfile(
            pull_latency=2.0, create_latency=0.5, start_latency=1.0, stop_latency=3
        )
        runtime = SimRuntime(profile)
        took = []
        for call in (
            lambda: runtime.pull(IMAGE),
            lambda: runtime.create(spec()),
            lambda: runtime.start("c1"),
            lambda: runtime.start("c1"),  # running already: no latency
            lambda: runtime.stop("c1"),
        ):
            began = trio.current_time()
            await call()
            took.append(trio.current_time() - began)
        assert took == [2.0, 0.5, 1.0, 0.0, 3.0]

    async def test_a_latency_range_is_random_within_bounds_and_repeatable(self) -> None:
        profile = SimProfile(pull_latency=(1.0, 3.0), seed=42)

        async def delays(runtime: SimRuntime) -> list[float]:
            result = []
            for _ in range(20):
                began = trio.current_time()
                await runtime.pull(IMAGE)
                result.append(trio.current_time() - began)
            return result

        first = await delays(SimRuntime(profile, name="n1"))
        assert all(1.0 <= d <= 3.0 for d in first) and len(set(first)) > 1
        assert first == pytest.approx(await delays(SimRuntime(profile, name="n1")))
        assert first != pytest.approx(await delays(SimRuntime(profile, name="n2")))

    async def test_cancelling_during_the_latency_leaves_nothing_done(self) -> None:
        runtime = SimRuntime(SimProfile(create_latency=5.0, preloaded_images=frozenset({IMAGE})))
        with anyio.move_on_after(1.0):
            await runtime.create(spec())
        assert runtime.count() == 0

    async def test_an_outage_during_the_latency_fails_the_call(self) -> None:
        runtime = SimRuntime(SimProfile(pull_latency=5.0))

        async def go_down() -> None:
            await anyio.sleep(1)
            runtime.unavailable = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(go_down)
            with pytest.raises(RuntimeUnavailable):
                await runtime.pull(IMAGE)
        assert not await _has_image_after_recovery(runtime)


class TestHealthChecks:
    """Health checks as Docker runs them (tests/runtime/test_docker.py), in simulated time."""

    @pytest.fixture
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}

    async def test_a_passing_check_turns_starting_then_healthy_after_an_interval(self) -> None:
        runtime = await ready()
        check = HealthCheck(("CMD-SHELL", "curl -f localhost"), interval=2.0, retries=3)
        seen: list[tuple[str, str, float]] = []
        async with runtime.open_events(LABELS) as events:
            container_id = await runtime.create(spec(healthcheck=check))
            created = await runtime.inspect(container_id)
            assert created is not None and created.health == "none"
            began = trio.current_time()
            await runtime.start(container_id)
            started = await runtime.inspect(container_id)
            assert started is not None and started.health == "starting"
            async for event in events:
                seen.append((event.action, event.detail, trio.current_time() - began))
                if event.action == "health_status":
                    break
        assert seen == [("create", "", 0.0), ("start", "", 0.0), ("health_status", "healthy", 2.0)]
        [listed] = await runtime.list(LABELS)
        assert listed.health == "healthy"

    @pytest.mark.parametrize("command", [("false",), ("CMD", "false")])
    async def test_a_false_check_turns_unhealthy_once_its_retries_failed(
        self, command: tuple[str, ...]
    ) -> None:
        runtime = await ready()
        check = HealthCheck(command, interval=1.0, retries=3, start_period=1.5)
        async with runtime.open_events(LABELS) as events:
            container_id = await runtime.create(spec(healthcheck=check))
            began = trio.current_time()
            await runtime.start(container_id)
            async for event in events:
                if event.action == "health_status":
                    break
        # Checks at 1, 2, 3, 4 s: the first is within the start period, 2, 3, 4 fail.
        assert (event.detail, trio.current_time() - began) == ("unhealthy", 4.0)
        state = await runtime.inspect(container_id)
        assert state is not None and state.health == "unhealthy"

    async def test_health_changes_without_a_subscriber_and_restarts_with_each_run(self) -> None:
        runtime = await ready()
        container_id = await runtime.create(spec(healthcheck=HealthCheck(("true",), interval=1.0)))
        await runtime.start(container_id)
        await anyio.sleep(0.5)
        await runtime.stop(container_id)  # before the first check: no change is left behind
        stopped = await runtime.inspect(container_id)
        assert stopped is not None and stopped.health == "none"
        await anyio.sleep(5)
        await runtime.start(container_id)
        again = await runtime.inspect(container_id)
        assert again is not None and again.health == "starting"
        await anyio.sleep(1)
        healthy = await runtime.inspect(container_id)
        assert healthy is not None and healthy.health == "healthy"

    async def test_without_a_check_the_health_is_none(self) -> None:
        runtime = await ready()
        container_id = await runtime.create(spec())
        await runtime.start(container_id)
        await anyio.sleep(60)
        [listed] = await runtime.list(LABELS)
        assert listed.health == "none"


async def _has_image_after_recovery(runtime: SimRuntime) -> bool:
    runtime.unavailable = False
    return await runtime.has_image(IMAGE)


# -- memory --------------------------------------------------------------------------------


def test_ten_thousand_idle_runtimes_fit_in_a_few_megabytes() -> None:
    profile = SimProfile(pull_latency=(0.1, 0.5), create_failure_rate=0.01)
    gc.collect()
    tracemalloc.start()
    try:
        runtimes = [SimRuntime(profile, name=f"node-{i:05d}") for i in range(10_000)]
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(runtimes) == 10_000
    assert used / 10_000 < 2_000, f"{used / 10_000:.0f} bytes per idle SimRuntime"


async def test_open_logs_gives_the_written_lines_trimmed_as_asked() -> None:
    runtime = SimRuntime(SimProfile(preloaded_images=frozenset({"app:1"})))
    container_id = await runtime.create(ContainerSpec(name="app-0", image="app:1"))
    for n in range(5):
        runtime.write_log(container_id, f"line {n}", at=1000.0 + n)
    async with runtime.open_logs(container_id, LogOptions(tail=2)) as lines:
        assert [line async for line in lines] == ["line 3", "line 4"]
    async with runtime.open_logs(container_id, LogOptions(tail=None, since=1003.0)) as lines:
        assert [line async for line in lines] == ["line 3", "line 4"]
    async with runtime.open_logs(container_id, LogOptions(tail=1, timestamps=True)) as lines:
        assert [line async for line in lines] == ["1970-01-01T00:16:44.000000Z line 4"]
    with pytest.raises(RuntimeFailure):
        async with runtime.open_logs("nope", LogOptions()):
            pass
