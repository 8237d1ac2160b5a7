"""The Docker Engine's streams read as async iterators: container events, log lines.

Layer: runtime (adapter). Imports aiodocker and aiohttp; nothing from Knit but ``knit.errors``,
``knit.runtime.base`` and ``knit.runtime.docker_translation``. ``knit.runtime.docker``'s
``DockerRuntime`` opens the streams; these read them and translate the libraries' errors into
``RuntimeFailure`` or the runtime's ``RuntimeUnavailable``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable

import aiodocker
import aiohttp

from knit.errors import RuntimeFailure, RuntimeUnavailable
from knit.runtime.base import RuntimeEvent
from knit.runtime.docker_translation import event_from_json


async def listed_frames(items: list[str]) -> AsyncIterator[str]:
    """The frames of a listed (not followed) log, as a stream's."""
    for item in items:
        yield item


async def log_lines(
    frames: AsyncIterator[str], unavailable: Callable[[BaseException], RuntimeUnavailable]
) -> AsyncGenerator[str, None]:
    """Whole lines out of frames (the last one even without its newline).

    Args:
        frames: what aiodocker read of a container's log.
        unavailable: the runtime's error for a connection that broke.

    Raises:
        RuntimeFailure: "logs", the Engine answered with an error.
        RuntimeUnavailable: the connection broke.
    """
    partial = ""
    try:
        async for frame in frames:
            pieces = (partial + frame).split("\n")
            partial = pieces.pop()
            for line in pieces:
                yield line
    except aiodocker.DockerError as exc:
        raise RuntimeFailure("logs", str(exc.message)) from exc
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise unavailable(exc) from exc
    if partial:
        yield partial


class EventStream:
    """Parse the Engine's newline-delimited JSON event stream into ``RuntimeEvent``s.

    Args:
        response: the Engine's answer to ``GET /events``.
        unavailable: the runtime's error for a connection that broke.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        unavailable: Callable[[BaseException], RuntimeUnavailable],
    ) -> None:
        self._response = response
        self._unavailable = unavailable

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> RuntimeEvent:
        while True:
            try:
                line = await self._response.content.readline()
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise self._unavailable(exc) from exc
            if not line:
                raise StopAsyncIteration
            event = event_from_json(line)
            if event is not None:
                return event


__all__ = ["EventStream", "listed_frames", "log_lines"]
