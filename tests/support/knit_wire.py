"""Watching Knit's NATS subjects from a test: a recorder on its own thread and event loop,
so synchronous tests can listen to the wire while they drive the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from types import TracebackType
from typing import Any

JSON = dict[str, Any]


class SubjectRecorder:
    """Records every message on a NATS subject, from a thread running its own event loop.

    ``with SubjectRecorder(url, "knit.task.status") as rec: ...; rec.messages()``. Entering
    returns once the subscription is registered with the server (flushed).
    """

    def __init__(self, url: str, subject: str) -> None:
        self.url = url
        self.subject = subject
        self._messages: list[bytes] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"nats-{subject}", daemon=True)

    def __enter__(self) -> SubjectRecorder:
        self._thread.start()
        if not self._ready.wait(15):
            raise AssertionError(f"could not subscribe to {self.subject} at {self.url}")
        if self._error is not None:
            raise AssertionError(f"could not subscribe to {self.subject}: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def messages(self) -> list[bytes]:
        """Every payload received so far."""
        with self._lock:
            return list(self._messages)

    def json_messages(self) -> list[JSON]:
        """The payloads that decode as JSON objects."""
        out = []
        for raw in self.messages():
            with contextlib.suppress(ValueError):
                data = json.loads(raw)
                if isinstance(data, dict):
                    out.append(data)
        return out

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        import nats

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False)
        try:

            async def on_message(msg: Any) -> None:
                with self._lock:
                    self._messages.append(bytes(msg.data))

            await client.subscribe(self.subject, cb=on_message)
            await client.flush(timeout=5)
            self._ready.set()
            await self._stop.wait()
            await client.flush(timeout=5)
        finally:
            await client.close()
