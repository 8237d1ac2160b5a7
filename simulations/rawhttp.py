"""A minimal HTTP/1.1 client for the API clients' reads: one kept-alive connection each.

Layer: simulations. Imports anyio and the standard library only.

The API clients time reads of the server from the harness's own process, which also runs
the deployment submitter, the churn and the monitor. With httpx each GET cost the harness
about a millisecond of CPU and several turns of its event loop; with 50 clients that CPU
competed with the server it measures (both on this machine's two cores) and its loop delays
were counted as the server's latency. This client writes one request and reads one reply
(``Content-Length`` or chunked), and nothing else: it is for measuring, not a general HTTP
client.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

MAX_HEADERS = 64 * 1024


class ReplyError(Exception):
    """The server's reply could not be read (connection closed, malformed)."""


class RawHttp:
    """One connection to ``base_url`` (``http://host:port``) for GET requests, reopened
    when the server closed it; ``token`` is sent as ``Authorization: Bearer``."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._stream: ByteStream | None = None
        self._reader: BufferedByteReceiveStream | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``; the status and the body.

        Raises:
            OSError: the server cannot be reached.
            ReplyError: the reply was cut short or malformed (after one retry on a fresh
                connection if a kept-alive one had been closed).
        """
        for attempt in (1, 2):
            fresh = self._stream is None
            try:
                return await self._roundtrip(path)
            except (ReplyError, OSError, anyio.EndOfStream, anyio.BrokenResourceError):
                await self.aclose()
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _roundtrip(self, path: str) -> tuple[int, bytes]:
        if self._stream is None:
            self._stream = await anyio.connect_tcp(self.host, self.port)
            self._reader = BufferedByteReceiveStream(self._stream)
        stream, reader = self._stream, self._reader
        assert reader is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self._auth}\r\n"
        await stream.send(request.encode("ascii"))
        head = await reader.receive_until(b"\r\n\r\n", MAX_HEADERS)
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ReplyError(f"bad status line {lines[0][:80]!r}") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.receive_exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked(reader)
        else:
            raise ReplyError("a reply without a length")
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return status, body

    @staticmethod
    async def _chunked(reader: BufferedByteReceiveStream) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.receive_until(b"\r\n", 1024)).split(b";")[0], 16)
            if size == 0:
                await reader.receive_until(b"\r\n", MAX_HEADERS)  # (no trailers expected)
                return b"".join(parts)
            parts.append(await reader.receive_exactly(size))
            await reader.receive_exactly(2)

    async def aclose(self) -> None:
        """Close the connection (the next request opens a new one)."""
        stream, self._stream, self._reader = self._stream, None, None
        if stream is not None:
            await stream.aclose()
