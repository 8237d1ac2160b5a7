"""The render worker: templates that are not cheap render in a child process with limits,
and a template bomb fails alone while the event loop keeps turning."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from knit.agent.render_worker import EXIT_SECONDS, NOBODY, RenderWorker, TemplateFailed
from knit.agent.rendering import TemplateRenderer
from knit.domain.templates import MAX_OUTPUT_CHARS

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

CONTEXT: dict[str, Any] = {
    "env": {"PORT": "8080", "NAMES": "a,b,c"},
    "node": {"id": "n1", "hostname": "host-1", "labels": {"zone": "eu"}},
    "deployment": {"id": "d" * 32, "name": "web", "image": "busybox"},
    "instance": {"id": "a" * 32, "index": 2},
}
LOOP = "{% for n in env.NAMES.split(',') %}{{ n }}:{{ env.PORT }};{% endfor %}"
SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

BOMBS = {
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "stopped after",
    ),
    "nested loops writing": (
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        f"longer than {MAX_OUTPUT_CHARS}",
    ),
    "huge power": ("{{ ((2**4096)**4096)**4096 }}", "stopped"),
    "huge repetition": ("{{ 'x' * 10**9 }}", "repetition result is too large"),
    "huge padding": ("{{ 'x'|center(1000000000) }}", "256 MiB"),
    "huge output": (
        "{% for i in range(100000) %}{% for j in range(100) %}xxxxxxxxxx{% endfor %}{% endfor %}",
        f"longer than {MAX_OUTPUT_CHARS}",
    ),
}


@pytest.fixture
async def worker() -> AsyncIterator[RenderWorker]:
    made = RenderWorker()
    yield made
    await made.aclose()


async def test_a_template_with_a_loop_renders_in_the_worker(worker: RenderWorker) -> None:
    renderer = TemplateRenderer(worker)
    texts = await renderer.render(["port={{ env.PORT }}", LOOP], CONTEXT)
    assert texts == ["port=8080", "a:8080;b:8080;c:8080;"]
    assert (renderer.in_process, renderer.in_worker, worker.started) == (1, 1, 1)
    assert await renderer.render([LOOP], CONTEXT) == ["a:8080;b:8080;c:8080;"]
    assert worker.started == 1  # the same child serves the next request


async def test_cheap_templates_never_start_the_worker(worker: RenderWorker) -> None:
    renderer = TemplateRenderer(worker)
    assert await renderer.render(["{{ env.PORT }}", "plain"], CONTEXT) == ["8080", "plain"]
    assert worker.started == 0 and worker.process is None


async def test_errors_from_the_worker_name_the_template_and_the_line(worker: RenderWorker) -> None:
    renderer = TemplateRenderer(worker)
    with pytest.raises(TemplateFailed) as info:
        await renderer.render(["ok", LOOP, "{% for x in y %}\n{{ x.nope }}{% endfor %}"], CONTEXT)
    assert info.value.index == 2
    assert "undefined" in info.value.reason


@pytest.mark.parametrize("name", list(BOMBS))
async def test_a_template_bomb_fails_with_its_limit_and_the_loop_keeps_turning(
    worker: RenderWorker, name: str
) -> None:
    bomb, words = BOMBS[name]
    renderer = TemplateRenderer(worker)
    await renderer.render([LOOP], CONTEXT)  # the child is up: only the bomb is timed
    gaps: list[float] = []
    last = time.monotonic()

    async def ticker() -> None:
        nonlocal last
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        began = time.monotonic()
        with pytest.raises(TemplateFailed) as info:
            await renderer.render(["fine", bomb], CONTEXT)
        took = time.monotonic() - began
        gaps.append(time.monotonic() - last)
        tg.cancel_scope.cancel()
    assert info.value.index == 1
    assert words in info.value.reason, info.value.reason
    assert took < 5.0
    assert max(gaps) < 0.25, f"the event loop stalled {max(gaps):.3f} s"
    assert await renderer.render([LOOP], CONTEXT) == ["a:8080;b:8080;c:8080;"]


async def test_the_cpu_limit_ends_a_child_the_wall_limit_would_not() -> None:
    worker = RenderWorker(wall_seconds=30.0)
    try:
        with pytest.raises(TemplateFailed, match="of CPU"):
            await worker.render([SPIN], CONTEXT)
        assert worker.process is None
        assert await worker.render([LOOP], CONTEXT) == ["a:8080;b:8080;c:8080;"]
    finally:
        await worker.aclose()


async def test_cancelling_a_render_kills_the_child(worker: RenderWorker) -> None:
    await worker.render([LOOP], CONTEXT)
    assert worker.process is not None
    pid = worker.process.pid
    with anyio.move_on_after(0.3):
        await worker.render([SPIN], CONTEXT)
    assert worker.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root agent drops privileges")
async def test_the_child_of_a_root_agent_runs_as_nobody(worker: RenderWorker) -> None:
    await worker.render([LOOP], CONTEXT)
    assert worker.process is not None
    with open(f"/proc/{worker.process.pid}/status", encoding="ascii") as status:
        uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
    assert {int(u) for u in uids} == {NOBODY}


async def test_every_builtin_filter_works_in_the_child(worker: RenderWorker) -> None:
    # The child drops root: what Python and Jinja2 import on first use is imported before.
    template = (
        "{{ 'a b c d e f'|wordwrap(3) }}|{{ {'a': 1}|pprint }}|{{ lipsum(1)|length > 0 }}|"
        "{{ 'see http://x.com'|urlize }}|{{ 12345|filesizeformat }}|{{ [1]|random }}|"
        "{{ {'a': '<'}|tojson }}|{{ '%s-%d'|format('x', 3) }}|{{ {'k': 'v'}|xmlattr }}|"
        "{{ 'é'|upper }}|{{ 'x'.encode('idna') }}|{{ '<b>x</b>'|striptags }}|"
        "{{ 'x y'|urlencode }}|{{ [3, 1]|sort }}|{{ 'a\nb'|indent(2) }}|{{ 1.25|round(1) }}"
    )
    [text] = await worker.render([template], CONTEXT)
    assert "12.3 kB" in text and 'k="v"' in text and "É" in text and "|x|" in text


async def test_the_wall_limit_is_per_template() -> None:
    worker = RenderWorker(wall_seconds=0.5)
    try:
        began = time.monotonic()
        with pytest.raises(TemplateFailed, match=r"stopped after 1 s \(0.5 s per template\)"):
            await worker.render([SPIN, SPIN], CONTEXT)
        assert 0.9 < time.monotonic() - began < 3.0
    finally:
        await worker.aclose()


# A stand-in child that ends itself with SIGXCPU (what RLIMIT_CPU sends) at the first request,
# before replying (REPLY=0) or after (REPLY=1).
XCPU_CHILD = """
import json, os, resource, signal, struct, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
def send(reply):
    data = json.dumps(reply).encode()
    sys.stdout.buffer.write(struct.pack(">I", len(data)) + data)
    sys.stdout.buffer.flush()
send({"ready": True})
(size,) = struct.unpack(">I", sys.stdin.buffer.read(4))
sys.stdin.buffer.read(size)
if int(sys.argv[1]):
    send({"texts": ["x"]})
os.kill(os.getpid(), signal.SIGXCPU)
"""


@pytest.fixture
def late_child_watcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """asyncio's child watcher (a thread in a blocking ``waitpid``) waits until the event is
    set, as on a busy machine: the parent sees a child's end before the watcher does."""
    gate = threading.Event()
    waitpid = os.waitpid

    def late_waitpid(pid: int, options: int) -> tuple[int, int]:
        if options == 0:
            gate.wait(10)
        return waitpid(pid, options)

    monkeypatch.setattr(os, "waitpid", late_waitpid)
    yield gate
    gate.set()


def _wait_until_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "Z":
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not end")


async def test_the_cpu_limit_is_named_when_the_child_watcher_is_late(
    late_child_watcher: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    # Killing the dead child through Popen polled and reaped it before the watcher: the
    # watcher then reported exit code 255 ("Unknown child process pid").
    worker = RenderWorker(command=[sys.executable, "-c", XCPU_CHILD, "0"])

    async def open_gate() -> None:
        await anyio.sleep(EXIT_SECONDS / 3)
        late_child_watcher.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_gate)
            with pytest.raises(TemplateFailed, match="of CPU"):
                await worker.render(["x"], {})
    finally:
        await worker.aclose()
    assert "Unknown child process" not in caplog.text


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="signals through a pidfd")
async def test_killing_a_child_that_just_ended_does_not_reap_it(
    late_child_watcher: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    worker = RenderWorker(command=[sys.executable, "-c", XCPU_CHILD, "1"])
    try:
        assert await worker.render(["x"], {}) == ["x"]
        process = worker.process
        assert process is not None
        _wait_until_zombie(process.pid)  # ended; the watcher has not seen it
        assert process.returncode is None
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.aclose)  # kills it
            await anyio.sleep(0.2)
            late_child_watcher.set()
    finally:
        await worker.aclose()
    assert process.returncode == -signal.SIGXCPU
    assert "Unknown child process" not in caplog.text
