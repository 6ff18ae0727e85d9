"""Sessions with a home across two workers (docs/scale-out.md, "Sessions with a home").

Two whole workers in this process (``build_services`` and the real web app each, on their own
ports), on one PostgreSQL database of this run and one Redis under this test's prefix, as a load
balancer would see them: any request may reach either.

- A local-avatar session rendered by worker A is watched through worker B: the page's socket and
  its WebRTC signalling go to B, B forwards the signalling to A, and the viewer's aiortc peer gets
  A's video. Closing the page drops the peer on A. A home that is gone is a clear 503; the
  internal route answers only signed calls.
- An AKool session's relay messages queued on A reach a page connected to B, in order; the page
  moves to A and back to B, a message is sent through B, and every message reaches the room
  once, in order, with nothing left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from bot.app import Services, _build_web, build_services
from bot.cluster.homes import HEADER, PATH, sign
from bot.core.errors import Forwarded
from bot.core.models import Mode
from bot.core.service import StartCommand
from bot.settings import Settings
from tests.backends import open_store
from tests.cluster.conftest import REDIS_URL
from tests.fakes.akool import FakeAKool
from tests.process import free_port

SECRET = "one-secret-for-every-worker-0123"
TENANT = "discord:77"


@dataclass
class Worker:
    name: str
    services: Services
    url: str

    @property
    def id(self) -> str:
        assert self.services.cluster is not None
        return self.services.cluster.worker_id


@asynccontextmanager
async def worker(name: str, **values: Any) -> AsyncIterator[Worker]:
    """One worker: its services, its web app on its own port, and its claiming of starts."""
    settings = Settings(_env_file=None, host="127.0.0.1", port=free_port(), **values)  # type: ignore[call-arg]
    async with build_services(settings) as services:
        app, _ = _build_web(services)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        claimer = asyncio.create_task(services.reaper.claim_own_starts())
        try:
            yield Worker(name, services, settings.base_url)
        finally:
            claimer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claimer
            await runner.cleanup()


@asynccontextmanager
async def two_workers(pg_url: str, prefix: str, tmp_path: Path,
                      **values: Any) -> AsyncIterator[tuple[Worker, Worker]]:
    store = await open_store("postgres", pg_url)
    await store.ensure_tenant(TENANT)
    await store.grant(TENANT, 100, "test", "cluster homes")
    await store.close()
    common = {"database_url": pg_url, "database_path": str(tmp_path / "never-made.db"),
              "redis_url": REDIS_URL, "redis_prefix": prefix, "secret_key": SECRET,
              "lease_ttl_s": 30, "playground_enabled": False, **values}
    async with worker("a", **common) as a, worker("b", **common) as b:
        yield a, b


async def eventually(check: Callable[[], Any], what: str, within: float = 20.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def start(w: Worker, provider: str, **kw: Any) -> tuple[str, str]:
    """Start a session on ``w``; its id and a viewer link token. ``w`` then holds its lease."""
    record = await w.services.service.start(StartCommand(
        tenant=TENANT, user="u1", provider=provider, minutes=5, **kw))
    token = w.services.links.token(record.id, time.time() + 3600, "viewer")
    client = w.services.cluster.client  # type: ignore[union-attr]
    lease = f"{w.services.settings.redis_prefix}lease:session:{record.id}"
    await eventually(lambda: _is(client.get(lease), w.id), f"{w.name} to hold the lease")
    return record.id, token


async def _is(value: Any, expected: str) -> bool:
    got = await value
    return got is not None and got.decode() == expected


# ---------------------------------------------------------------------------- local avatar
async def test_local_avatar_signalling_through_another_worker_reaches_its_renderer(
    pg_url, redis_client, prefix, tmp_path
):
    async with two_workers(pg_url, prefix, tmp_path, local_allow_loopback=True) as (a, b), \
            aiohttp.ClientSession() as http:
        session_id, token = await start(a, "local")
        local_a, local_b = a.services.providers["local"], b.services.providers["local"]
        async with http.ws_connect(f"{b.url}/v/{token}/ws") as ws:
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello" and hello["active"]
            vid = hello["viewer_id"]
            async with http.post(f"{b.url}/v/{token}/webrtc/offer",
                                 json={"viewer_id": vid}) as resp:
                assert resp.status == 200, await resp.text()
                offer = await resp.json()
            assert offer["type"] == "offer" and "m=video" in offer["sdp"]
            # A rendered it and holds the peer; B holds none.
            assert local_a.running() == (1, 1) and local_b.running() == (0, 0)

            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            first_frame: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            readers: list[asyncio.Task[None]] = []

            @pc.on("track")
            def on_track(track: Any) -> None:
                async def read() -> None:
                    with contextlib.suppress(MediaStreamError):
                        await track.recv()
                        if not first_frame.done():
                            first_frame.set_result(None)
                if track.kind == "video":
                    readers.append(asyncio.ensure_future(read()))

            try:
                await pc.setRemoteDescription(RTCSessionDescription(**offer))
                await pc.setLocalDescription(await pc.createAnswer())
                async with http.post(f"{b.url}/v/{token}/webrtc/answer", json={
                    "viewer_id": vid, "sdp": pc.localDescription.sdp,
                }) as resp:
                    assert resp.status == 200, await resp.text()
                async with http.post(f"{b.url}/v/{token}/webrtc/candidate", json={
                    "viewer_id": vid, "candidate": None,
                }) as resp:
                    assert resp.status == 200
                # The viewer gets the avatar's video from A, though it only ever talked to B.
                await asyncio.wait_for(first_frame, 30)
            finally:
                await pc.close()
                for task in readers:
                    task.cancel()
        # The page closed on B: B's hub has A drop the peer.
        await eventually(lambda: local_a.running() == (1, 0), "A to drop the viewer's peer")

        # A home that does not answer is a clear, retryable error, not a hang or a 500.
        prefix_key = f"{prefix}worker:{a.id}"
        real = await redis_client.get(prefix_key)
        await redis_client.set(prefix_key, f"http://127.0.0.1:{free_port()}")
        try:
            async with http.ws_connect(f"{b.url}/v/{token}/ws") as ws:
                vid = (await ws.receive_json(timeout=10))["viewer_id"]
                async with http.post(f"{b.url}/v/{token}/webrtc/offer",
                                     json={"viewer_id": vid}) as resp:
                    assert resp.status == 503
                    assert "cannot be reached" in (await resp.json())["error"]
        finally:
            await redis_client.set(prefix_key, real)
        assert local_a.running() == (1, 0)

        # The internal route answers only calls signed with the workers' key: a stranger's,
        # unsigned or signed with another key, gets the plain 404 of any unknown path.
        body = b'{"op":"offer","session_id":"%s","viewer_id":"x"}' % session_id.encode()
        for headers in ({}, {HEADER: sign(b"not-the-key", body)},
                        {HEADER: sign(a.services.cluster.homes.key, body,  # type: ignore[union-attr]
                                      now=time.time() - 3600)}):
            async with http.post(a.url + PATH, data=body, headers=headers) as resp:
                assert resp.status == 404
        assert local_a.running() == (1, 0)


# ---------------------------------------------------------------------------- relay outbox
class Page:
    """A relay page's socket: it 'sends' what it is handed into the room and acknowledges it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.lines: list[str] = []

    async def join(self) -> None:
        hello = await self.ws.receive_json(timeout=10)
        assert hello["type"] == "hello" and hello["active"]
        await self.ws.send_json({"type": "joined", "joined": True})

    async def handed(self) -> list[dict[str, Any]]:
        """The next batch of relayed messages (other messages are noted)."""
        while True:
            msg = await self.ws.receive_json(timeout=20)
            if msg["type"] == "relay":
                assert msg["config"]["max_message_bytes"] > 0
                return list(msg["messages"])
            if msg["type"] == "transcript":
                self.lines.append(f"{msg['speaker']}: {msg['text']}")

    async def ack(self, ids: list[str]) -> None:
        await self.ws.send_json({"type": "relayed", "ids": ids})


def said(messages: list[dict[str, Any]]) -> list[str]:
    """The texts of the chat messages in a batch (each of these says is one chunk)."""
    return [str(m["payload"]["pld"]["text"]) for m in messages
            if m["payload"].get("type") == "chat"]


async def test_relay_messages_queued_on_one_worker_reach_a_page_on_the_other_in_order(
    pg_url, redis_client, prefix, tmp_path
):
    async with FakeAKool() as akool, two_workers(
        pg_url, prefix, tmp_path, **akool.settings_overrides(),
    ) as (a, b), aiohttp.ClientSession() as http:
        session_id, token = await start(a, "akool", mode=Mode.SAY)
        outbox_a, outbox_b = a.services.events.relay, b.services.events.relay
        for text in ("one", "two", "three"):
            await a.services.service.say(session_id, text)
        assert outbox_a.waiting(session_id) == 3

        sent: list[str] = []  # what reached the vendor's room, in order
        async with http.ws_connect(f"{b.url}/v/{token}/ws") as ws:
            page = Page(ws)
            await page.join()
            batch = await page.handed()
            assert said(batch) == ["one", "two", "three"]
            # The page got as far as the first one before it went away.
            sent.append(said(batch)[0])
            await page.ack([batch[0]["id"]])
            await eventually(lambda: outbox_a.waiting(session_id) == 2, "A to count the ack")
        assert outbox_b.waiting(session_id) == 0  # nothing was ever queued on B

        # Reconnected, this time through A: what the page held and did not send comes again.
        async with http.ws_connect(f"{a.url}/v/{token}/ws") as ws:
            page = Page(ws)
            await page.join()
            batch = await page.handed()
            assert said(batch) == ["two", "three"]
            sent += said(batch)
            await page.ack([m["id"] for m in batch])
            # A message sent through B is queued at the home, behind the others.
            await b.services.service.say(session_id, "four")
            batch = await page.handed()
            assert said(batch) == ["four"]
            sent += said(batch)
            await page.ack([m["id"] for m in batch])
            await eventually(lambda: outbox_a.waiting(session_id) == 0, "A to count the acks")

        # And back to B, woken by a message queued on A.
        async with http.ws_connect(f"{b.url}/v/{token}/ws") as ws:
            page = Page(ws)
            await page.join()
            await a.services.service.say(session_id, "five")
            batch = await page.handed()
            assert said(batch) == ["five"]
            sent += said(batch)
            await page.ack([m["id"] for m in batch])
            await eventually(lambda: outbox_a.queued(session_id) == [], "the outbox to empty")
            # Each acknowledged say is the avatar's line, shown on the page on B.
            while "avatar: five" not in page.lines:
                msg = await ws.receive_json(timeout=10)
                if msg["type"] == "transcript":
                    page.lines.append(f"{msg['speaker']}: {msg['text']}")

        assert sent == ["one", "two", "three", "four", "five"]
        assert outbox_a.waiting(session_id) == 0 and outbox_b.queued(session_id) == []

        # The home's refusal reaches whoever sent the message through B, in its own words.
        outbox_a.max_queued = 0
        with pytest.raises(Forwarded) as refused:
            await b.services.service.say(session_id, "six")
        assert refused.value.status == 429
        assert "waiting to reach the avatar" in refused.value.user_message
        assert outbox_a.queued(session_id) == []


@pytest.fixture(autouse=True)
def _quiet_aiortc(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="aioice")
