"""``ContainerLogs``: what simulated containers "wrote" to their logs, read as Docker serves it.

Layer: simulations. Imports anyio, the standard library and ``knit.runtime.base``.

Simulated containers are mute: a test makes one write a line with ``SimRuntime.write_log``.
Reading follows ``LogOptions`` as ``DockerRuntime.open_logs`` does: ``since``, ``tail``,
``timestamps`` (RFC 3339, UTC, microseconds), and ``follow``, which polls for more lines every
50 ms while the container runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import anyio

from knit.runtime.base import LogOptions


class ContainerLogs:
    """The log lines of one simulated host's containers, by container id."""

    __slots__ = ("_written",)

    def __init__(self) -> None:
        # container id -> (time, line) as written; nothing writes by itself.
        self._written: dict[str, list[tuple[float, str]]] = {}

    def write(self, container_id: str, line: str, at: float) -> None:
        """Add ``line``, written at ``at`` (seconds since the epoch), to a container's log."""
        self._written.setdefault(container_id, []).append((at, line))

    async def lines(
        self, container_id: str, options: LogOptions, running: Callable[[], bool]
    ) -> AsyncIterator[str]:
        """The lines of a container's log that ``options`` select.

        Args:
            container_id: the container's full id.
            options: what to read, as for ``ContainerRuntime.open_logs``.
            running: whether the container still runs (a follow ends when it no longer does).
        """
        written = self._written.setdefault(container_id, [])
        since = options.since
        first = [(at, line) for at, line in written if since is None or at >= since]
        if options.tail is not None:
            first = first[len(first) - options.tail :] if options.tail else []
        for at, line in first:
            yield f"{_rfc3339(at)} {line}" if options.timestamps else line
        seen = len(written)
        while options.follow and running():
            await anyio.sleep(0.05)
            for at, line in written[seen:]:
                yield f"{_rfc3339(at)} {line}" if options.timestamps else line
            seen = len(written)


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["ContainerLogs"]
