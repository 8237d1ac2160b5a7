"""Test actors and helpers shared by the actor runtime's tests.

``Journal`` records what actors did across incarnations (a restarted actor is a new object,
so its own fields cannot tell the story). ``Worker`` is a configurable actor that writes to
a journal: it echoes, crashes on ``Crash``, blocks on ``Block``, and can finish.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from actors import Actor


@dataclass(frozen=True)
class Crash:
    """Makes a Worker raise; ``secret`` must never reach a log line."""

    secret: str = "hunter2"


@dataclass(frozen=True)
class Block:
    """Makes a Worker wait (``forever`` or until ``release`` is set)."""

    release: anyio.Event | None = None


@dataclass(frozen=True)
class Finish:
    """Makes a Worker end normally."""


@dataclass(frozen=True)
class Get:
    """Asks a Worker for its message count in this incarnation."""


@dataclass
class Journal:
    """What happened to actors, in order: (event, actor name) pairs."""

    events: list[tuple[str, str]] = field(default_factory=list)

    def add(self, event: str, name: str) -> None:
        """Record one event."""
        self.events.append((event, name))

    def of(self, event: str) -> list[str]:
        """Names of the actors that saw ``event``, in order."""
        return [name for kind, name in self.events if kind == event]

    def count(self, event: str, name: str) -> int:
        """How often ``name`` saw ``event``."""
        return sum(1 for kind, who in self.events if kind == event and who == name)


class Worker(Actor[object]):
    """An actor that records its life in a journal and obeys test commands."""

    def __init__(self, journal: Journal, *, slow_stop: float = 0.0) -> None:
        self.journal = journal
        self.slow_stop = slow_stop
        self.count = 0

    async def started(self) -> None:
        """Record the start."""
        self.journal.add("started", self.name)

    async def stopping(self) -> None:
        """Record the graceful stop (optionally slowly)."""
        self.journal.add("stopping", self.name)
        if self.slow_stop:
            await anyio.sleep(self.slow_stop)
        self.journal.add("stopped", self.name)

    async def handle(self, message: object) -> object:
        """Echo, count, or obey a command."""
        if isinstance(message, Crash):
            self.journal.add("crash", self.name)
            raise RuntimeError("worker told to crash")
        if isinstance(message, Block):
            self.journal.add("blocked", self.name)
            try:
                if message.release is None:
                    await anyio.sleep_forever()
                else:
                    await message.release.wait()
            except anyio.get_cancelled_exc_class():
                self.journal.add("cancelled", self.name)
                raise
            return "released"
        if isinstance(message, Finish):
            self.finish()
            return None
        if isinstance(message, Get):
            return self.count
        self.count += 1
        self.journal.add("handled", self.name)
        return message


def worker(journal: Journal, **kwargs: float) -> Callable[[], Worker]:
    """A factory of Workers writing to ``journal``."""
    return lambda: Worker(journal, **kwargs)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every millisecond; fail the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling state no event announces
            await anyio.sleep(0.001)


class TaskCounter:
    """Counts the tasks running in the event loop (to prove nothing is left behind)."""

    def now(self) -> int:
        """The number of running tasks."""
        return len(anyio.get_running_tasks())
