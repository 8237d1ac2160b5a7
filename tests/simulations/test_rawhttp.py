"""simulations.rawhttp: the API clients' minimal keep-alive GET client."""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from simulations.rawhttp import RawHttp

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

REPLIES = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
    b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n"
    b"3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nthird",
]


async def test_gets_over_one_connection_until_the_server_closes_it() -> None:
    connections = 0
    served = iter(REPLIES)

    async def serve(client: SocketStream) -> None:
        nonlocal connections
        connections += 1
        reader = BufferedByteReceiveStream(client)
        async with client:
            while True:
                try:
                    await reader.receive_until(b"\r\n\r\n", 4096)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return
                reply = next(served, REPLIES[0])
                await client.send(reply)
                if b"connection: close" in reply:
                    return

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            http = RawHttp(f"http://127.0.0.1:{port}")
            with anyio.fail_after(5):
                assert await http.get("/a") == (200, b"first")
                assert await http.get("/b") == (404, b"second")
                assert await http.get("/c") == (200, b"third")
                assert await http.get("/d") == (200, b"first")  # on a new connection
            await http.aclose()
            tg.cancel_scope.cancel()
    assert connections == 2


async def test_a_token_goes_in_the_authorization_header() -> None:
    heads: list[bytes] = []

    async def serve(client: SocketStream) -> None:
        reader = BufferedByteReceiveStream(client)
        async with client:
            heads.append(await reader.receive_until(b"\r\n\r\n", 4096))
            await client.send(REPLIES[2])

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            http = RawHttp(f"http://127.0.0.1:{port}", "knit_secret")
            with anyio.fail_after(5):
                assert await http.get("/nodes/x") == (200, b"third")
            await http.aclose()
            tg.cancel_scope.cancel()
    (head,) = heads
    assert head.startswith(b"GET /nodes/x HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer knit_secret" in head
