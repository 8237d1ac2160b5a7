"""The dashboard's live stream over a fake control plane: limits, changes, hang-ups, shutdown."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from quart.typing import TestHTTPConnectionProtocol as HTTPConnection

from knit.api.app import KnitApp, create_app
from knit.api.gate import Gate
from knit.dashboard import Dashboard
from knit.errors import StoreError
from knit.natsd import free_port
from tests.dashboard.fakes import SESSIONS, SIGNED_IN, FakeControl, big_cluster

pytestmark = [pytest.mark.anyio]


def dashboard_app(control: FakeControl, **options: Any) -> tuple[KnitApp, Dashboard]:
    """The dashboard alone behind the gate (requests with ``SIGNED_IN`` get in)."""
    app = KnitApp("dashboard-test")
    app.gate = Gate(control, SESSIONS)
    dashboard = Dashboard(control, sessions=SESSIONS, **options)
    app.register_blueprint(dashboard.blueprint)
    return app, dashboard


async def next_message(conn: HTTPConnection, timeout: float = 5.0) -> str:
    """The next SSE chunk that is not the ``retry:`` preamble."""
    with anyio.fail_after(timeout):
        while True:
            chunk = (await conn.receive()).decode()
            if not chunk.startswith("retry:"):
                return chunk


async def nothing_for(conn: HTTPConnection, seconds: float) -> bool:
    with anyio.move_on_after(seconds):
        await next_message(conn, timeout=seconds + 1)
        return False
    return True


@asynccontextmanager
async def open_stream(app: KnitApp) -> AsyncIterator[HTTPConnection]:
    async with app.test_client().request("/ui/stream", headers=SIGNED_IN) as conn:
        await conn.send_complete()
        yield conn
        await conn.disconnect()


@pytest.mark.unit
async def test_create_app_registers_the_dashboard() -> None:
    app = create_app(FakeControl(), sessions=SESSIONS)
    assert isinstance(app.extensions["knit.dashboard"], Dashboard)
    assert (await app.test_client().get("/ui/", headers=SIGNED_IN)).status_code == 200


@pytest.mark.unit
async def test_streams_past_the_limit_are_refused_with_503() -> None:
    app, dashboard = dashboard_app(big_cluster(10, 2, 2), max_streams=2)
    async with open_stream(app) as one, open_stream(app) as two:
        assert (await next_message(one)).startswith("data: ")
        assert (await next_message(two)).startswith("data: ")
        assert dashboard.streams.active == 2
        refused = await app.test_client().get("/ui/stream", headers=SIGNED_IN)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]
    assert dashboard.streams.active == 0  # the connections' tasks have ended
    assert (await next_message_of_new_stream(app)).startswith("data: ")


async def next_message_of_new_stream(app: KnitApp) -> str:
    async with open_stream(app) as conn:
        return await next_message(conn)


@pytest.mark.unit
async def test_a_client_that_hangs_up_frees_its_slot_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app, dashboard = dashboard_app(big_cluster(3, 1, 1))
    async with open_stream(app) as conn:
        await next_message(conn)
        assert dashboard.streams.active == 1
    assert dashboard.streams.active == 0
    assert "dashboard stream closed (0 open)" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.unit
def test_a_stream_whose_body_never_started_frees_its_slot() -> None:
    _, dashboard = dashboard_app(FakeControl())
    response = dashboard.stream()
    assert dashboard.streams.active == 1
    del response
    gc.collect()
    assert dashboard.streams.active == 0


@pytest.mark.unit
async def test_the_stream_sends_again_only_when_the_view_changes() -> None:
    control = big_cluster(3, 1, 2)
    app, _ = dashboard_app(control, poll_interval=0.02)
    async with open_stream(app) as conn:
        first = await next_message(conn)
        control.nodes[0]["last_heartbeat"] = "2030-01-01T00:00:00Z"  # not a change that shows
        assert await nothing_for(conn, 0.2)
        control.instances[0]["status"] = "error"
        second = await next_message(conn)
        assert second != first and '"error":1' in second


@pytest.mark.unit
async def test_an_idle_stream_sends_a_comment() -> None:
    app, _ = dashboard_app(big_cluster(2, 1, 1), poll_interval=0.02, heartbeat_interval=0.1)
    async with open_stream(app) as conn:
        assert (await next_message(conn)).startswith("data: ")
        assert (await next_message(conn)).startswith(": keep-alive")


@pytest.mark.unit
async def test_an_unreadable_control_plane_keeps_the_stream_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    control = big_cluster(2, 1, 1)
    control.fail = StoreError("database is gone")
    app, _ = dashboard_app(control, poll_interval=0.02, heartbeat_interval=0.1)
    async with open_stream(app) as conn:
        assert (await next_message(conn)).startswith(": keep-alive")
        control.fail = None
        assert (await next_message(conn)).startswith("data: ")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "database is gone" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


@pytest.mark.unit
async def test_many_streams_share_one_read_per_interval() -> None:
    control = big_cluster(5, 2, 2)
    _, dashboard = dashboard_app(control, poll_interval=60)
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(dashboard.watch.current)
    assert control.reads == 4  # nodes, deployments, instances, newest event: once


@pytest.mark.unit
async def test_a_failed_read_is_shared_too() -> None:
    control = big_cluster(5, 2, 2)
    control.fail = StoreError("database is gone")
    _, dashboard = dashboard_app(control, poll_interval=60)
    for _ in range(5):
        with pytest.raises(StoreError):
            await dashboard.watch.current()
    assert control.reads == 1  # the first list call failed; nobody asked again


@pytest.mark.unit
async def test_close_ends_open_streams_and_refuses_new_ones() -> None:
    app, dashboard = dashboard_app(big_cluster(2, 1, 1), poll_interval=0.05)
    async with app.test_client().request("/ui/stream", headers=SIGNED_IN) as conn:
        await conn.send_complete()
        await next_message(conn)
        dashboard.close()
        with anyio.fail_after(5):
            while await conn.receive():
                pass  # the body ends with an empty chunk
    assert dashboard.streams.active == 0
    assert (await app.test_client().get("/ui/stream", headers=SIGNED_IN)).status_code == 503


@pytest.mark.integration
async def test_a_server_with_an_open_stream_stops_at_once_after_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    app = create_app(big_cluster(5, 2, 2), sessions=SESSIONS)
    dashboard = app.extensions["knit.dashboard"]
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 10.0
    shutdown = anyio.Event()
    stopped = anyio.Event()

    async def run() -> None:
        with anyio.CancelScope(shield=True):  # as knit.server.main does: stop by trigger only
            try:
                await serve(app, config, shutdown_trigger=shutdown.wait)
            finally:
                stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            with anyio.fail_after(5):
                while True:
                    try:
                        await client.get("/healthz")
                        break
                    except httpx.ConnectError:
                        await anyio.sleep(0.02)
            async with client.stream("GET", "/ui/stream", headers=SIGNED_IN) as response:
                lines = response.aiter_lines()
                with anyio.fail_after(5):
                    async for line in lines:
                        if line.startswith("data:"):
                            break
                dashboard.close()
                shutdown.set()
                with anyio.fail_after(3):  # well within the 10 s graceful timeout
                    async for _ in lines:
                        pass  # the server ends the body cleanly
                    await stopped.wait()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
