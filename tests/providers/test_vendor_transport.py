"""The vendor client's transport (``AiohttpTransport``, issue 15) against bare TCP servers.

Adapters speak httpx; aiohttp's client carries the bytes. What must survive the swap: a request
goes out whole with its headers as written; the answer reads as httpx would read it
(compressed bodies included); and each failure keeps the meaning ``VendorHTTP`` relies on to never
send ``ask`` twice: only "no connection could be had" is a not-sent error, while an answer that
never came or a connection cut after the request went out is a read error.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from bot.providers._http import _NOT_SENT, AiohttpTransport, vendor_client


def answer(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json",
            b"Content-Length: " + str(len(body)).encode(), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Server:
    """Reads whole requests; then answers ``reply``, hangs up (``hang_up``) or says nothing."""

    def __init__(self, reply: bytes | None = answer(b'{"code":0}'), hang_up: bool = False) -> None:
        self.requests: list[bytes] = []
        self.reply, self.hang_up = reply, hang_up

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while chunk := await reader.read(1 << 20):
                buffer += chunk
                while b"\r\n\r\n" in buffer:
                    head, rest = buffer.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(rest) < length:
                        break
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    buffer = rest[length:]
                    if self.hang_up:
                        return
                    if self.reply is None:
                        await asyncio.sleep(30)
                        return
                    writer.write(self.reply)
                    await writer.drain()
        finally:
            writer.close()


Serve = Callable[[Server], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(server: Server) -> str:
        srv = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()
    for srv in servers:
        await srv.wait_closed()


async def test_a_request_goes_out_with_its_headers_as_written(serve: Serve) -> None:
    server = Server()
    url = await serve(server)
    async with vendor_client(timeout_s=5) as http:
        resp = await http.post(url + "/ask", json={"channel": "room", "text": "héllo"},
                               headers={"X-API-KEY": "k-1"})
        assert resp.status_code == 200 and resp.json() == {"code": 0}
        (request,) = server.requests
        head, body = request.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /ask HTTP/1.1\r\n")
        assert b"\r\nX-API-KEY: k-1" in head  # the name's case kept, as vendors' docs spell it
        assert json.loads(body) == {"channel": "room", "text": "héllo"}
        # The same connection again, and a request with no body and a query string.
        resp = await http.get(url + "/status", params={"id": "a b"})
        assert resp.status_code == 200
        assert server.requests[1].startswith(b"GET /status?id=a+b HTTP/1.1")
        assert len(server.requests) == 2


async def test_a_compressed_answer_reads_as_httpx_reads_it(serve: Serve) -> None:
    packed = gzip.compress(b'{"code":0,"data":{"ok":true}}')
    url = await serve(Server(reply=answer(packed, b"Content-Encoding: gzip")))
    async with vendor_client(timeout_s=5) as http:
        resp = await http.get(url + "/detail")
    assert resp.json() == {"code": 0, "data": {"ok": True}}


async def test_a_large_upload_arrives_whole(serve: Serve) -> None:
    server = Server()
    url = await serve(server)
    piece = bytes(range(256)) * 256

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield piece

    async with vendor_client(timeout_s=5) as http:
        resp = await http.post(url + "/upload", content=upload(),
                               headers={"Content-Length": str(len(piece) * 20)})
    assert resp.status_code == 200
    (request,) = server.requests
    assert request.split(b"\r\n\r\n", 1)[1] == piece * 20


async def test_nobody_listening_is_a_request_that_never_left() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with vendor_client(timeout_s=5) as http:
        with pytest.raises(httpx.ConnectError) as err:
            await http.post(f"http://127.0.0.1:{port}/ask", json={"text": "hi"})
    assert isinstance(err.value, _NOT_SENT)


@pytest.mark.parametrize(("server", "timeout_s", "expected"), [
    # cut off after the request arrived
    (Server(hang_up=True), 5.0, httpx.RemoteProtocolError | httpx.ReadError),
    # an answer that never comes
    (Server(reply=None), 0.3, httpx.ReadTimeout),
], ids=["connection-cut-after-sending", "answer-never-comes"])
async def test_a_request_that_went_out_may_have_arrived(
        serve: Serve, server: Server, timeout_s: float, expected: type[Exception]) -> None:
    url = await serve(server)
    async with vendor_client(timeout_s=timeout_s) as http:
        with pytest.raises(httpx.HTTPError) as err:
            await http.post(url + "/ask", json={"text": "did it arrive?"})
    assert len(server.requests) == 1  # it did: so it must not count as "never sent"
    assert not isinstance(err.value, _NOT_SENT)
    assert isinstance(err.value, expected)


async def test_waiting_for_a_free_connection_is_bounded_apart_and_sends_nothing(
        serve: Serve) -> None:
    server = Server(reply=None)  # keeps the only connection busy
    url = await serve(server)
    http = httpx.AsyncClient(transport=AiohttpTransport(max_connections=1),
                             timeout=httpx.Timeout(5.0, pool=0.3))
    async with http:
        first = asyncio.create_task(http.post(url + "/ask", json={"text": "first"}))
        await asyncio.sleep(0.1)
        with pytest.raises(httpx.ConnectTimeout) as err:  # no connection was free in 0.3 s
            await http.post(url + "/ask", json={"text": "second"})
        assert isinstance(err.value, _NOT_SENT)
        assert [b"first" in r for r in server.requests] == [True]  # the second never left
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
