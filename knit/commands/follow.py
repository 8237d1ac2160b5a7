"""Follow a deployment until its rollout (or its instances) settle: the polling loop.

Layer: cli. Imports the API client and :mod:`knit.commands.progress` (which decides what to
print); blocking, as the rest of the CLI. Polls ``GET /deployments/{id}`` every
:data:`POLL_INTERVAL` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TextIO

from knit.client import ApiError, ApiUnreachable
from knit.commands import DEFAULT_TIMEOUT
from knit.commands.progress import Outcome, Target, progress
from knit.errors import KnitError

POLL_INTERVAL = 0.5
"""Seconds between two reads of the deployment."""


class DeploymentReader(Protocol):
    """What following needs of the API client (``knit.client.ApiClient``)."""

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        """``GET /deployments/{id}``; raises ``ApiError`` (404: it is gone)."""
        ...


class FollowFailed(KnitError):
    """The rollout paused or rolled back, the deployment went away, or nothing changed for
    too long. The message says which, and why."""

    def __init__(self, message: str, outcome: Outcome | None) -> None:
        super().__init__(message)
        self.outcome = outcome


def follow(
    client: DeploymentReader,
    deployment_id: str,
    target: Target,
    *,
    out: TextIO,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print the deployment's progress to ``out`` until it settles as hoped.

    An API that cannot be reached for a while (a server restarting) or that answers 5xx is
    read again, and said once on standard error; the wait goes on. Ctrl-C
    (``KeyboardInterrupt``) stops following and is raised again after a line on standard
    error that says the rollout goes on without us.

    Args:
        timeout: give up when nothing has changed for this many seconds.

    Raises:
        FollowFailed: the rollout paused or rolled back, a newer version replaced the
            target, the deployment was deleted, or nothing changed for ``timeout`` seconds.
        ApiError: the API refused a read (401, 403, ...).
    """
    previous: Mapping[str, Any] | None = None
    changed_at = clock()
    lost: str | None = None
    summary = ""
    try:
        while True:
            try:
                current: Mapping[str, Any] | None = client.deployment(deployment_id)
            except ApiError as exc:
                if exc.status == 404:
                    current = None
                elif isinstance(exc, ApiUnreachable) or (exc.status or 0) >= 500:
                    if lost is None:
                        print(f"knit: {exc}; trying again", file=sys.stderr)
                    lost = str(exc)
                    if clock() - changed_at >= timeout:
                        raise FollowFailed(f"gave up after {timeout:g} s: {lost}", None) from exc
                    sleep(interval)
                    continue
                else:
                    raise
            if lost is not None:
                print("knit: the API answers again", file=sys.stderr)
                lost = None
            step = progress(previous, current, target)
            for line in step.lines:
                print(line, file=out, flush=True)
            summary = step.summary
            if step.lines:
                changed_at = clock()
            if step.succeeded:
                return
            if step.finished:
                raise FollowFailed(step.message, step.outcome)
            if clock() - changed_at >= timeout:
                raise FollowFailed(
                    f"nothing changed for {timeout:g} s: {summary} (it goes on without us)", None
                )
            previous = current
            sleep(interval)
    except KeyboardInterrupt:
        what = "rollout" if target.rollout else "deployment"
        print(
            f"\nknit: stopped following; the {what} of version {target.version} goes on "
            f"({summary or 'no news yet'})",
            file=sys.stderr,
        )
        raise
