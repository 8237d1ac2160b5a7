"""The agent's metrics (knit.agent.metrics): the registry, and ``knit agent --metrics``'s
small HTTP server, scraped and parsed with prometheus-client's own parser."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from knit.agent.metrics import (
    MAX_CONNECTIONS,
    MAX_REQUEST_BYTES,
    AgentMetrics,
    parse_listen,
    serve_metrics,
)
from knit.cli import build_parser
from knit.errors import RuntimeUnavailable
from knit.runtime.docker import DockerRuntime

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def samples(text: str) -> Samples:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_listen_addresses_are_host_and_port() -> None:
    assert parse_listen("127.0.0.1:9101") == ("127.0.0.1", 9101)
    assert parse_listen("[::1]:9101") == ("::1", 9101)
    for bad in ("9101", "host:", ":9101", "host:99999", "host:http"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_knit_agent_takes_metrics_host_and_port(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["agent"]).metrics is None
    assert parser.parse_args(["agent", "--metrics", "127.0.0.1:9101"]).metrics == "127.0.0.1:9101"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["agent", "--metrics", "9101"])
    assert exited.value.code == 2
    assert "--metrics" in capsys.readouterr().err


def test_containers_tasks_and_docker_calls_are_exported() -> None:
    metrics = AgentMetrics()
    statuses = ["running", "running", "stopped"]
    metrics.count_containers(lambda: statuses)
    metrics.task_ended("deploy", "succeeded", 0.3)
    metrics.task_ended("deploy", "failed", 12.0)
    metrics.docker_called("inspect", 0.002, True)
    found = samples(metrics.render().decode())
    assert found["knit_agent_containers", (("status", "running"),)] == 2
    assert found["knit_agent_containers", (("status", "stopped"),)] == 1
    deploys = (("kind", "deploy"), ("result", "succeeded"))
    assert found["knit_agent_task_duration_seconds_count", deploys] == 1
    assert found["knit_agent_task_duration_seconds_sum", deploys] == pytest.approx(0.3)
    inspect = (("operation", "inspect"), ("outcome", "ok"))
    assert found["knit_agent_docker_call_duration_seconds_count", inspect] == 1
    statuses.append("running")  # read at each scrape
    found = samples(metrics.render().decode())
    assert found["knit_agent_containers", (("status", "running"),)] == 3


async def test_a_docker_call_is_timed_even_when_it_fails(tmp_path: Path) -> None:
    calls: list[tuple[str, float, bool]] = []
    runtime = DockerRuntime(
        f"unix://{tmp_path}/no-such.sock", on_call=lambda *call: calls.append(call)
    )
    async with runtime:
        with pytest.raises(RuntimeUnavailable):
            await runtime.version()
    assert [(step, ok) for step, _, ok in calls] == [("version", False)]


async def test_the_agent_serves_metrics_over_http_and_nothing_else() -> None:
    metrics = AgentMetrics(process=True)
    metrics.task_ended("stop", "succeeded", 0.1)
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(serve_metrics, metrics, "127.0.0.1:0")
        base = f"http://{host}:{port}"
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{base}/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            found = samples(response.text)
            stops = (("kind", "stop"), ("result", "succeeded"))
            assert found["knit_agent_task_duration_seconds_count", stops] == 1
            assert ("process_cpu_seconds_total", ()) in found
            assert (await client.get(f"{base}/other")).status_code == 404
            assert (await client.post(f"{base}/metrics")).status_code == 405
        with anyio.fail_after(5):
            stream = await anyio.connect_tcp(host, port)
            async with stream:
                await stream.send(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_BYTES)
                reply = await stream.receive()
                assert reply.startswith(b"HTTP/1.1 400")
        tg.cancel_scope.cancel()


async def test_scrapes_beyond_the_limit_are_closed_at_once() -> None:
    async with anyio.create_task_group() as tg:
        host, port = await tg.start(serve_metrics, AgentMetrics(), "127.0.0.1:0")
        idle = [await anyio.connect_tcp(host, port) for _ in range(MAX_CONNECTIONS)]
        with anyio.fail_after(5):
            extra = await anyio.connect_tcp(host, port)
            async with extra:
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await extra.receive()
        for stream in idle:
            await stream.aclose()
        async with httpx.AsyncClient(timeout=5) as client:
            with anyio.fail_after(5):
                while True:  # until the server has seen the idle ones leave
                    try:
                        response = await client.get(f"http://{host}:{port}/metrics")
                    except httpx.TransportError:
                        await anyio.sleep(0.01)
                        continue
                    assert response.status_code == 200
                    break
        tg.cancel_scope.cancel()


@pytest.mark.e2e
async def test_calls_to_a_real_engine_are_timed_by_operation(docker_host: str) -> None:
    metrics = AgentMetrics()
    async with DockerRuntime(docker_host, on_call=metrics.docker_called) as runtime:
        await runtime.version()
        await runtime.list({"knit.test": "no-such-container"})
    found = samples(metrics.render().decode())
    for operation in ("version", "list"):
        labels = (("operation", operation), ("outcome", "ok"))
        assert found["knit_agent_docker_call_duration_seconds_count", labels] == 1
        assert 0 < found["knit_agent_docker_call_duration_seconds_sum", labels] < 30
