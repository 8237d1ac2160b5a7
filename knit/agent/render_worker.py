"""A worker process that renders templates under hard limits, and its parent side.

Layer: agent. The parent side (:class:`RenderWorker`) imports anyio, ``knit.errors`` and
``knit.domain.templates``; the child (``python -m knit.agent.render_worker``, :func:`main`)
imports the standard library and ``knit.domain.templates`` only.

A template may loop, allocate or compute for as long as it likes (``{{ ((2**4096)**4096)**4096
}}``, nested ``range(100000)`` loops), and rendering it on the agent's event loop froze the
agent, its heartbeats with it: the node went unhealthy, the instance moved to the next node
and froze that one too. Templates that are not provably cheap (``knit.domain.template_cost``)
render here instead, in one long-lived child process per agent, one request at a time over
its standard input and output, with limits (decision 0013):

- **wall time**: :data:`WALL_SECONDS` per template of the request, measured by the parent,
  which kills the child past it;
- **CPU time**: ``RLIMIT_CPU`` set before each template to what the child used so far plus
  :data:`CPU_SECONDS` (+1: the limit counts whole seconds), so a child the parent could not
  kill still ends (SIGXCPU);
- **memory**: ``RLIMIT_AS``, the child's address space after start-up plus
  :data:`MEMORY_BYTES` (an allocation past it raises ``MemoryError``: the request fails and
  the child exits, to start afresh);
- **output**: :data:`knit.domain.templates.MAX_OUTPUT_CHARS` per template.

A request that breaks a limit fails with a reason naming the limit; the next request starts
a new child (~0.1 s). The child drops root for ``nobody`` when it starts as root, and exits
when its standard input closes (the agent stopped).

The reason comes from the child's exit status, so the parent never reaps the child itself:
asyncio's child watcher is its only waiter. ``process.kill()`` would break that (``Popen``
polls with ``waitpid(pid, WNOHANG)`` before it signals, which reaps a child that just ended
on its own: the watcher then finds no child and reports exit code 255 instead of SIGXCPU).
A child that closed its output is left to end on its own first, and a child that must be
killed is signalled through a pidfd (with ``process.kill()`` only where there is no pidfd).

Frames on the pipes are a 4-byte big-endian length and a JSON object: the request
``{"templates": [...], "context": {...}}``, the reply ``{"texts": [...]}`` or
``{"error": {"index", "kind", "reason", "line"}, "restart": bool}``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import resource
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from knit.domain.templates import TemplateRenderProblem, TemplateSyntaxProblem, render
from knit.errors import TemplateError

log = logging.getLogger(__name__)

WALL_SECONDS = 2.0
"""Longest a template may take, wall time (a request of n templates may take n times this;
a child being started is waited for before, apart)."""
START_SECONDS = 30.0
"""Longest a new child may take to say it is ready (a busy machine starts Python slowly)."""
EXIT_SECONDS = 1.0
"""Longest a child that closed its output (it is ending) may take to end before it is killed."""
CPU_SECONDS = 2
"""CPU seconds a template may use (the kernel's backstop: the wall limit comes first)."""
MEMORY_BYTES = 256 << 20
"""Address space a request may add to the child's (256 MiB)."""
MAX_FRAME = 64 << 20
"""Largest frame either side accepts (16 templates of 1 Mi characters, JSON-escaped)."""
NOBODY = 65534
"""The user a child started as root becomes."""
PRELOAD = (
    "encodings.ascii",
    "encodings.idna",
    "encodings.latin_1",
    "encodings.raw_unicode_escape",
    "encodings.unicode_escape",
    "encodings.utf_16",
    "encodings.utf_32",
    "html",
    "jinja2.compiler",
    "jinja2.constants",
    "jinja2.debug",
    "jinja2.lexer",
    "logging",
    "pprint",
    "random",
    "textwrap",
    "unicodedata",
)
"""Modules Python or Jinja2 import on first use, imported before the child drops root (the
interpreter's files may not be readable by ``nobody``)."""

_LENGTH = struct.Struct(">I")
JSON = dict[str, Any]


class TemplateFailed(TemplateError):
    """One template of a request failed (``index`` in the request); nothing was written.

    Attributes:
        index: which template.
        reason: what went wrong, with the line when known.
    """

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"template {index}: {reason}")
        self.index = index
        self.reason = reason


class RenderWorker:
    """The parent side: one child at a time, started when first needed.

    Args:
        wall_seconds: the wall-time limit of one template (of a request: this times the
            number of its templates).
        command: how to start the child (tests); default this module under this Python.
    """

    def __init__(
        self, wall_seconds: float = WALL_SECONDS, command: Sequence[str] | None = None
    ) -> None:
        self.wall_seconds = wall_seconds
        self.command = list(command or [sys.executable, "-m", "knit.agent.render_worker"])
        self.process: Process | None = None
        self.pidfd: int | None = None  # the child's, to signal it without reaping it
        self.reader: BufferedByteReceiveStream | None = None
        self.lock = anyio.Lock()
        self.started = 0  # children started (tests and logs)

    async def render(self, templates: Sequence[str], context: Mapping[str, Any]) -> list[str]:
        """Render ``templates`` with ``context`` in the child; return their texts.

        One request at a time (others wait for the lock). Cancellation kills the child (its
        reply would come to the next request otherwise).

        Raises:
            TemplateFailed: a template failed (its error), or the request broke a limit.
        """
        payload = json.dumps({"templates": list(templates), "context": context}).encode()
        wall = self.wall_seconds * max(1, len(templates))
        async with self.lock:
            if self.process is None:
                await self._start()
            try:
                with anyio.move_on_after(wall) as scope:
                    reply = await self._exchange(payload)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._kill()
                raise
            if scope.cancelled_caught:
                await self._kill()
                raise TemplateFailed(
                    0, f"stopped after {wall:g} s ({self.wall_seconds:g} s per template)"
                )
            if reply is None:
                code = await self._kill(ending=True)
                raise TemplateFailed(0, _death(code))
            if reply.get("restart"):
                await self._kill(ending=True)
        return _texts(reply)

    async def _exchange(self, payload: bytes) -> JSON | None:
        """Send one request, read its reply; None if the child died first."""
        process = self.process
        assert process is not None and process.stdin is not None
        try:
            await process.stdin.send(_LENGTH.pack(len(payload)) + payload)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return None
        return await self._receive()

    async def _receive(self) -> JSON | None:
        """The child's next frame; None if it died or sent something else."""
        reader = self.reader
        assert reader is not None
        try:
            (size,) = _LENGTH.unpack(await reader.receive_exactly(_LENGTH.size))
            if size > MAX_FRAME:
                return None
            reply = json.loads(await reader.receive_exactly(size))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            return None
        except (anyio.ClosedResourceError, ValueError):
            return None
        return reply if isinstance(reply, dict) else None

    async def _start(self) -> None:
        """Start a child and wait until it is ready (its limits set, Jinja2 imported).

        Raises:
            TemplateFailed: it did not start.
        """
        try:
            self.process = await anyio.open_process(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
            )
        except OSError as exc:
            raise TemplateFailed(0, f"cannot start the render worker: {exc}") from exc
        self.pidfd = _open_pidfd(self.process.pid)
        assert self.process.stdout is not None
        self.reader = BufferedByteReceiveStream(self.process.stdout)
        self.started += 1
        ready = None
        try:
            with anyio.move_on_after(START_SECONDS) as scope:
                ready = await self._receive()
        except BaseException:  # cancelled: leave no child behind
            await self._kill()
            raise
        if ready is None or not ready.get("ready"):
            code = await self._kill(ending=not scope.cancelled_caught)
            raise TemplateFailed(0, f"the render worker did not start ({_death(code)})")
        log.debug("render worker started (pid %d)", self.process.pid)

    async def _kill(self, ending: bool = False) -> int | None:
        """Kill the child (if any) and wait for its end; its exit code (negative: the signal).

        Args:
            ending: the child closed its output or said it would exit: give it
                :data:`EXIT_SECONDS` to end on its own (its exit status says why it ended)
                before it is killed.
        """
        process, pidfd = self.process, self.pidfd
        self.process, self.pidfd, self.reader = None, None, None
        if process is None:
            return None
        with anyio.CancelScope(shield=True):
            try:
                if ending and process.returncode is None:
                    with anyio.move_on_after(EXIT_SECONDS):
                        await process.wait()
                if process.returncode is None:
                    _send_kill(process, pidfd)
                code = await process.wait()
                await process.aclose()
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        return code

    async def aclose(self) -> None:
        """Stop the child, if one runs. Shielded from cancellation."""
        await self._kill()


def _open_pidfd(pid: int) -> int | None:
    """A pidfd of the child just started (not yet reaped: it is starting Python); None where
    the platform or kernel has none (Linux < 5.3)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _send_kill(process: Process, pidfd: int | None) -> None:
    """SIGKILL the child without reaping it (asyncio's child watcher does that).

    Through the pidfd when there is one: it names this child even once reaped, and signals
    nothing else then. Without one, ``process.kill()``, whose poll may reap a child that ended
    at that very moment (its exit code is then 255, see the module's docstring): the child is
    killed there only when it was running (the wall limit, a cancelled request) or did not end
    within :data:`EXIT_SECONDS` of closing its output, when its exit code is not the reason
    reported. Not ``os.kill``: once the watcher reaped the child, its pid may be another
    process's before ``returncode`` says so.
    """
    with contextlib.suppress(ProcessLookupError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            process.kill()


def _death(code: int | None) -> str:
    """Why the child died without replying, from its exit code."""
    if code == -signal.SIGXCPU:
        return f"stopped: used more than {CPU_SECONDS} s of CPU (the limit of a template)"
    if code == -signal.SIGKILL:
        return "stopped: the render worker was killed (out of memory?)"
    return f"the render worker ended unexpectedly (exit code {code})"


def _texts(reply: Mapping[str, Any]) -> list[str]:
    error = reply.get("error")
    if isinstance(error, dict):
        raise TemplateFailed(int(error.get("index", 0)), str(error.get("reason", "failed")))
    texts = reply.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TemplateFailed(0, "the render worker sent a malformed reply")
    return texts


# --- the child ---------------------------------------------------------------------------


def _read_frame(stream: IO[bytes]) -> JSON | None:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(header)
    if size > MAX_FRAME:
        return None
    body = stream.read(size)
    if len(body) < size:
        return None
    data = json.loads(body)
    return data if isinstance(data, dict) else None


def _write_frame(stream: IO[bytes], reply: Mapping[str, Any]) -> None:
    data = json.dumps(reply).encode()
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def serve(request: Mapping[str, Any], before_each: Callable[[], None] = lambda: None) -> JSON:
    """Render one request (in the child); the reply to send. ``before_each`` runs before each
    template (the child sets its CPU limit there)."""
    templates = request.get("templates")
    context = request.get("context")
    if not isinstance(templates, list) or not isinstance(context, dict):
        return {"error": {"index": 0, "kind": "request", "reason": "malformed request"}}
    texts = []
    for index, content in enumerate(templates):
        before_each()
        try:
            texts.append(render(str(content), context))
        except (TemplateSyntaxProblem, TemplateRenderProblem) as exc:
            reason = str(exc)
            if exc.reason == "ran out of memory":
                reason = f"stopped: needed more than {MEMORY_BYTES >> 20} MiB of memory"
            return {
                "error": {"index": index, "kind": type(exc).__name__, "reason": reason},
                "restart": exc.reason == "ran out of memory",
            }
    return {"texts": texts}


def _address_space() -> int:
    """The child's address space now (bytes), from /proc; 0 if unknown."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _drop_root() -> None:
    if os.geteuid() != 0:
        return
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def main() -> int:
    """The child: set its limits, then render requests until its input closes."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _drop_root()
    base = _address_space()
    if base:
        resource.setrlimit(resource.RLIMIT_AS, (base + MEMORY_BYTES, base + MEMORY_BYTES))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)

    def limit_cpu() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime) + CPU_SECONDS + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))

    _write_frame(stdout, {"ready": True})
    while True:
        try:
            request = _read_frame(stdin)
        except (ValueError, MemoryError):
            return 1
        if request is None:
            return 0
        try:
            reply = serve(request, limit_cpu)
        except MemoryError:
            reply = {
                "error": {"index": 0, "kind": "memory", "reason": "out of memory"},
                "restart": True,
            }
        _write_frame(stdout, reply)
        if reply.get("restart"):
            return 0


if __name__ == "__main__":
    sys.exit(main())
