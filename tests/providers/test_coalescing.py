"""The vendor client sends each request in one write (``CoalescingTransport``, issue 15).

Against a bare TCP server on loopback, with httpcore's real sockets under the transport (wrapped
only to count the writes reaching them): a request goes out in one write, head and body
together; a request without a body, a second request on the same connection and a large upload
all work; a server that hangs up gives httpx's usual error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpcore
import httpx
import pytest

from bot.providers._http import COALESCE_MAX, CoalescingTransport

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


class Server:
    """Answers each complete request with ``OK`` (or hangs up); notes the chunks received."""

    def __init__(self, hang_up: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.requests: list[bytes] = []
        self.hang_up = hang_up

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while chunk := await reader.read(1 << 20):
                self.chunks.append(chunk)
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
                        writer.close()
                        return
                    writer.write(OK)
                    await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Server], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    async def start(server: Server) -> str:
        srv = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start  # type: ignore[misc]
    for srv in servers:
        srv.close()
        await srv.wait_closed()


class CountedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, writes: list[bytes]) -> None:
        self.inner, self.writes = inner, writes

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.writes.append(buffer)
        await self.inner.write(buffer, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self.inner.read(max_bytes, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def get_extra_info(self, info: str) -> object:
        return self.inner.get_extra_info(info)


class CountedSockets(httpcore.AsyncNetworkBackend):
    """httpcore's own anyio sockets, noting each write that reaches one."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.writes: list[bytes] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None,  # noqa: ASYNC109
                          socket_options=None):
        return CountedStream(await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options), self.writes)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def client(sockets: CountedSockets | None = None) -> httpx.AsyncClient:
    transport = CoalescingTransport(limits=httpx.Limits(), network=sockets)
    return httpx.AsyncClient(transport=transport, timeout=10)


async def test_a_request_reaches_the_vendor_in_one_piece(serve) -> None:
    server, sockets = Server(), CountedSockets()
    url = await serve(server)
    async with client(sockets) as http:
        resp = await http.post(url + "/ask", json={"channel": "room", "text": "hello"})
        assert resp.json() == {"ok": True}
        (sent,) = sockets.writes  # head and body in one write
        head, body = sent.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /ask HTTP/1.1")
        assert json.loads(body) == {"channel": "room", "text": "hello"}
        assert server.requests == [sent]
        # The same connection again, and a request with no body at all.
        resp = await http.get(url + "/status")
        assert resp.status_code == 200
        assert len(sockets.writes) == 2 and sockets.writes[1].startswith(b"GET /status")
        assert len(server.requests) == 2


async def test_a_large_upload_arrives_whole(serve) -> None:
    server = Server()
    url = await serve(server)
    piece = bytes(range(256)) * (COALESCE_MAX // 2 // 256)  # half of what is held at most
    pieces = 10

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(pieces):
            yield piece

    sockets = CountedSockets()
    async with client(sockets) as http:
        resp = await http.post(url + "/upload", content=upload(),
                               headers={"Content-Length": str(len(piece) * pieces)})
    assert resp.status_code == 200
    (request,) = server.requests
    assert request.split(b"\r\n\r\n", 1)[1] == piece * pieces
    # Sent as it comes, in pieces of about COALESCE_MAX: never all held back, nor one by one.
    assert 3 <= len(sockets.writes) <= pieces // 2 + 1


async def test_a_vendor_that_hangs_up_gives_httpx_usual_error(serve) -> None:
    url = await serve(Server(hang_up=True))
    async with client() as http:
        with pytest.raises(httpx.HTTPError):
            await http.post(url + "/ask", json={"text": "anyone?"})
