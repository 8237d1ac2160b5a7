"""Waiting in end-to-end tests: poll until something holds (``wait_until``), or check that
it keeps holding (``holds_for``), giving up early when a watched process died."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import httpx

from tests.support.docker import DockerCLIError

T = TypeVar("T")


class Watched(Protocol):
    """Something a wait can check for death and describe on failure."""

    def problem(self) -> str | None:
        """Why waiting is pointless (a process died), or None."""

    def logs(self) -> str:
        """The tails of the logs worth reading when a wait fails."""


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    watch: Watched | None = None,
    describe: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Transport errors (a server not listening yet) and Docker CLI errors count as "not yet".

    Raises:
        AssertionError: ``timeout`` seconds passed, or ``watch`` reported a dead process; the
            message holds the last value or error seen, ``describe()`` (the state at the end)
            and the logs' tails.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except (httpx.TransportError, DockerCLIError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        problem = watch.problem() if watch is not None else None
        if problem is not None:
            raise AssertionError(f"{what}: {problem}{watch.logs() if watch else ''}")
        if time.monotonic() > deadline:
            logs = watch.logs() if watch is not None else ""
            state = ""
            if describe is not None:
                try:
                    state = f"\nstate: {describe()}"
                except (httpx.HTTPError, DockerCLIError, AssertionError) as exc:
                    state = f"\nstate: unknown ({exc!r})"
            raise AssertionError(f"{what}: not after {timeout:g} s (last: {last!r}){state}{logs}")
        time.sleep(interval)


def holds_for(
    predicate: Callable[[], bool],
    *,
    duration: float,
    what: str,
    watch: Watched | None = None,
    interval: float = 0.1,
) -> None:
    """Check that ``predicate`` stays true for ``duration`` seconds (to assert an absence).

    Raises:
        AssertionError: it was false once.
    """
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            raise AssertionError(f"{what}: stopped holding{watch.logs() if watch else ''}")
        time.sleep(interval)
