"""Log streams end to end without a nats-server: the agent's LogServer and the server's
LogHub over an in-memory bus, with real proofs, on a simulated container."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import anyio
import pytest

from knit.domain.logs import LogQuery, LogTarget
from knit.server.logs import OUTPUT, WINDOW
from knit.wire import subjects
from knit.wire.logs import LogChunk, LogOpen
from knit.wire.messages import encode
from tests.support.log_streams import INSTANCE, NODE, open_ends

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

TARGET = LogTarget(INSTANCE, NODE, 0)


async def until(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` (what it watches changes in other tasks, with no event to wait on)."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def read_all(stream: AsyncGenerator[bytes, None], seconds: float = 5.0) -> list[str]:
    text = b""
    with anyio.fail_after(seconds):
        async for chunk in stream:
            text += chunk
    return text.decode().splitlines()


async def test_tail_sends_the_last_lines_prefixed_with_the_index(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        for n in range(10):
            ends.runtime.write_log(ends.container_id, f"line {n}")
        lines = await read_all(ends.hub.stream([TARGET], LogQuery(tail=3)))
        assert lines == ["[0] line 7", "[0] line 8", "[0] line 9"]
        assert ends.server.streams == {}


async def test_since_leaves_out_older_lines(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        now = time.time()
        ends.runtime.write_log(ends.container_id, "old", at=now - 600)
        ends.runtime.write_log(ends.container_id, "new", at=now - 5)
        query = LogQuery(tail=None, since=now - 60)
        assert await read_all(ends.hub.stream([TARGET], query)) == ["[0] new"]


async def test_follow_shows_new_lines_at_once_and_ends_when_the_container_stops(
    tmp_path: Path,
) -> None:
    async with open_ends(tmp_path) as ends:
        stream = ends.hub.stream([TARGET], LogQuery(follow=True))
        ends.runtime.write_log(ends.container_id, "first")
        with anyio.fail_after(2):
            assert await anext(stream) == b"[0] first\n"
        started = time.monotonic()
        ends.runtime.write_log(ends.container_id, "second")
        with anyio.fail_after(2):
            assert await anext(stream) == b"[0] second\n"
        assert time.monotonic() - started < 1.0
        await ends.runtime.stop(ends.container_id)
        assert await read_all(stream) == []


async def test_a_client_that_stops_reading_stops_the_node_at_its_credit(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        for n in range(100_000):
            ends.runtime.write_log(ends.container_id, f"line {n:06d}")
        stream = ends.hub.stream([TARGET], LogQuery(tail=None))
        first = await anext(stream)
        assert first.startswith(b"[0] line 000000\n")
        chunks = subjects.logs_from(NODE)
        await anyio.sleep(0.3)
        held = ends.bus.counts[chunks]
        await anyio.sleep(0.3)
        assert ends.bus.counts[chunks] == held  # waiting for credit
        # What was sent and not yet read is bounded by the credit and the output buffer.
        assert held <= WINDOW + OUTPUT + 4
        lines = await read_all(stream)  # reading again: all of it comes
        assert len(lines) == 100_000 - first.count(b"\n")
        assert lines[-1] == "[0] line 099999"


async def test_a_client_that_leaves_closes_the_node_s_stream(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        stream = ends.hub.stream([TARGET], LogQuery(follow=True))
        ends.runtime.write_log(ends.container_id, "hello")
        with anyio.fail_after(2):
            await anext(stream)
        assert len(ends.server.streams) == 1
        await stream.aclose()
        await until(lambda: not ends.server.streams and not ends.hub.parts, 2)


async def test_a_node_that_goes_silent_ends_its_part_with_a_message(tmp_path: Path) -> None:
    async with open_ends(tmp_path, silence=0.5, keepalive=0.1) as ends:
        stream = ends.hub.stream([TARGET], LogQuery(follow=True))
        ends.runtime.write_log(ends.container_id, "hello")
        with anyio.fail_after(2):
            await anext(stream)
        ends.bus.dropped.add(subjects.logs_from(NODE))
        lines = await read_all(stream)
        assert lines == [f"[0] -- node {NODE} stopped answering; this instance's logs end here"]


async def test_a_node_declared_unhealthy_ends_its_part_at_once(tmp_path: Path) -> None:
    # Its lines so far first, then the message: long before the silence would end it.
    async with open_ends(tmp_path, silence=60, keepalive=0.1) as ends:
        stream = ends.hub.stream([TARGET], LogQuery(follow=True))
        ends.runtime.write_log(ends.container_id, "hello")
        with anyio.fail_after(2):
            assert await anext(stream) == b"[0] hello\n"
        ends.bus.dropped.add(subjects.logs_from(NODE))
        ends.hub.node_down("another-node")
        ends.hub.node_down(NODE)
        lines = await read_all(stream, seconds=2)
        assert lines == [f"[0] -- node {NODE} stopped answering; this instance's logs end here"]
        await until(lambda: not ends.hub.parts, 2)


async def test_a_node_ends_a_stream_whose_server_went_silent(tmp_path: Path) -> None:
    async with open_ends(tmp_path, silence=0.5, keepalive=0.1) as ends:
        stream = ends.hub.stream([TARGET], LogQuery(follow=True))
        ends.runtime.write_log(ends.container_id, "hello")
        with anyio.fail_after(2):
            await anext(stream)
        ends.bus.dropped.add(subjects.logs_to(NODE))
        await until(lambda: not ends.server.streams, 3)
        await stream.aclose()


async def test_an_unknown_instance_ends_with_the_reason(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        other = LogTarget("0193a4b2c3d47e5f8a9b0c1d2e3f4a5d", NODE, 3)
        lines = await read_all(ends.hub.stream([other, TARGET], LogQuery()))
        assert lines == [f"[3] -- instance {other.instance_id} has no container on node {NODE}"]


async def test_a_request_the_server_did_not_prove_is_refused(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        forged = LogOpen(
            stream_id="forged", node_id=NODE, instance_id=INSTANCE, credit=8, expires_at=1e12
        )
        await ends.bus.publish(subjects.logs_to(NODE), encode(forged))
        await anyio.sleep(0.1)
        assert ends.server.streams == {}
        assert subjects.logs_from(NODE) not in ends.bus.counts
        assert ends.server.refusals.count == 1


async def test_a_node_that_sends_past_its_credit_has_its_stream_cut(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        stream = ends.hub.stream([TARGET], LogQuery(follow=True, tail=0))
        injected = anyio.Event()
        lines: list[str] = []

        async def read_later() -> None:
            text = b""
            async for chunk in stream:  # the first step opens the stream; then it waits
                text += chunk
                await injected.wait()
            lines.extend(text.decode().splitlines())

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_later)
            await until(lambda: bool(ends.hub.parts), 2)
            [stream_id] = ends.hub.parts
            for seq in range(WINDOW + OUTPUT + 10):
                chunk = LogChunk(stream_id=stream_id, seq=seq, lines=[f"flood {seq}"])
                await ends.server.ctx.publish(subjects.logs_from(NODE), encode(chunk))
            injected.set()
        assert lines[-1] == f"[0] -- node {NODE} sent past its credit"
        assert len(lines) < WINDOW + OUTPUT + 10


async def test_logs_stream_on_an_open_bus_too(tmp_path: Path) -> None:
    async with open_ends(tmp_path, insecure=True) as ends:
        ends.runtime.write_log(ends.container_id, "plain")
        assert await read_all(ends.hub.stream([TARGET], LogQuery())) == ["[0] plain"]


async def test_an_agent_that_stops_ends_its_streams_with_a_message(tmp_path: Path) -> None:
    async with open_ends(tmp_path) as ends:
        stream = ends.hub.stream([TARGET], LogQuery(follow=True))
        ends.runtime.write_log(ends.container_id, "hello")
        with anyio.fail_after(2):
            await anext(stream)
        ends.server.tg.cancel_scope.cancel()  # the agent's task group: it stops
        assert await read_all(stream) == [f"[0] -- the agent of node {NODE} stopped"]
