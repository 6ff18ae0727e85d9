"""Viewer links: tampered, expired, foreign or unknown tokens all get the same plain 404; an ended
session shows its summary; links die with the session; every response carries the headers."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.links import ViewerLinks
from tests.web.conftest import page_socket, web_stack
from web.security import RateLimits


def _flip(text: str, index: int) -> str:
    ch = text[index]
    return text[:index] + ("A" if ch != "A" else "B") + text[index + 1:]


async def _get(client: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    async with client.get(url) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_bad_links_get_one_plain_404_that_reveals_nothing(stack: Any, client: Any) -> None:
    a = await stack.start("akool")
    b = await stack.start("local")
    good = stack.links.token(a.id, time.time() + 600)
    payload_a, _ = good.split(".")
    _, sig_b = stack.links.token(b.id, time.time() + 600).split(".")
    other = ViewerLinks(b"another-server-secret-0000", stack.url)
    other_secret = other.token(a.id, time.time() + 60)
    expired = stack.links.token(a.id, time.time() - 5)
    # A well-signed token for a session that does not exist.
    unknown = stack.links.token("0123456789abcdef", time.time() + 600)
    host_payload = f"{a.id}.{int(time.time()) + 600}.host".encode()
    forged_role = base64.urlsafe_b64encode(host_payload).decode().rstrip("=") + "." + sig_b
    bad = {
        "tampered signature": _flip(good, len(good) - 3),
        "tampered payload": _flip(good, 2),
        "other session's signature": f"{payload_a}.{sig_b}",
        "other secret": other_secret,
        "expired": expired,
        "unknown session": unknown,
        "role changed": forged_role,
        "garbage": "not-a-token",
        "empty parts": "a.b",
    }
    bodies = set()
    for name, token in bad.items():
        status, body, headers = await _get(client, f"{stack.url}/v/{token}")
        assert status == 404, name
        assert a.id not in body and "Tristan" not in body and "expired" not in body.lower(), name
        assert headers["Referrer-Policy"] == "no-referrer"
        bodies.add(body)
    assert len(bodies) == 1, "every bad link must look the same"
    status, body, _ = await _get(client, f"{stack.url}/v/{good}")
    assert status == 200 and "Tristan" in body


async def test_ended_session_shows_its_summary_and_its_link_plays_nothing(
    stack: Any, client: Any
) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    async with page_socket(client, link) as ps:
        await ps.next("hello")
        await stack.service.stop(record.id, "stopped by an admin")
        end = await ps.next("end")
        assert end["summary"]["avatar_name"] == "Tristan"
        assert "tenant" not in end["summary"] and "settled" not in end["summary"]
        closed = await ps.closed()
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    status, body, _ = await _get(client, link)
    assert status == 200
    assert "Ended" in body and "Tristan" in body and "AKool" in body
    assert "Duration" in body and "stopped by an admin" in body
    # Nothing to join any more: no transport config, no vendor token, no player script.
    assert record.viewer.token not in body and "viewer-config" not in body
    assert "discord:1" not in body
    # The socket of an ended session says so and closes; WebRTC signalling is refused.
    async with page_socket(client, link) as ps:
        end = await ps.next("end")
        assert end["summary"] is None
    async with client.post(link + "/webrtc/offer", json={"viewer_id": "x"}) as resp:
        assert resp.status == 409


async def test_security_headers_on_every_response(stack: Any, client: Any) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    urls = [
        stack.url + "/", link, stack.url + "/v/nope", stack.url + "/static/viewer.js",
        stack.url + "/static/app.css", stack.url + "/healthz", stack.url + "/metrics",
        stack.url + "/no-such-page",
    ]
    for url in urls:
        status, _, headers = await _get(client, url)
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, url
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, url
        assert headers["Referrer-Policy"] == "no-referrer", url
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
    _, _, headers = await _get(client, link)
    assert headers["Cache-Control"] == "no-store"
    async with client.ws_connect(link.replace("http", "ws") + "/ws") as ws:
        assert "frame-ancestors 'none'" in ws._response.headers["Content-Security-Policy"]


async def test_livekit_page_may_connect_to_its_own_room_only(tmp_path: Path, client: Any) -> None:
    async with web_stack(tmp_path, vendors=("heygen",)) as stack:
        record = await stack.start("heygen")
        _, body, headers = await _get(client, stack.link(record.id))
        csp = headers["Content-Security-Policy"]
        assert "wss://fake-livekit.heygen.test" in csp and "https://fake-livekit.heygen.test" in csp
        assert "livekit-client.umd.js" in body and "agora-rtc-sdk-ng.js" not in body
        _, _, home = await _get(client, stack.url + "/")
        assert "fake-livekit" not in home["Content-Security-Policy"]


async def test_link_and_socket_endpoints_are_rate_limited(tmp_path: Path, client: Any) -> None:
    limits = RateLimits(pages=(3, 0.01), websocket=(2, 0.01))
    async with web_stack(tmp_path, vendors=("akool",), rate_limits=limits) as stack:
        record = await stack.start("akool")
        link = stack.link(record.id)
        statuses = [(await _get(client, link))[0] for _ in range(3)]
        assert statuses == [200, 200, 200]
        status, body, headers = await _get(client, stack.url + "/v/guess")
        assert status == 429 and "Too many requests" in body and headers["Retry-After"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        for _ in range(2):
            async with client.ws_connect(link.replace("http", "ws") + "/ws") as ws:
                assert (await ws.receive_json())["type"] == "hello"
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            async with client.ws_connect(link.replace("http", "ws") + "/ws"):
                pass
        assert exc.value.status == 429
        async with client.get(stack.url + "/metrics") as resp:
            text = await resp.text()
        assert 'avatarbot_rate_limited_total{endpoint="page"} 1.0' in text
        assert 'avatarbot_rate_limited_total{endpoint="websocket"} 1.0' in text


async def test_a_session_still_starting_shows_a_waiting_page(tmp_path: Path, client: Any) -> None:
    import asyncio

    from bot.core.service import StartCommand
    from tests.fakes.provider import FakeProvider

    slow: dict[str, FakeProvider] = {}

    def extra(events: Any) -> dict[str, Any]:
        slow["p"] = FakeProvider(events, name="slow")
        slow["p"].start_delay = 1.0
        return {"slow": slow["p"]}

    async with web_stack(tmp_path, vendors=(), extra=extra) as stack:
        async with stack.events.subscribe() as events:
            starting = asyncio.create_task(stack.service.start(
                StartCommand(tenant="discord:1", user="u1", provider="slow", minutes=2)))
            first = await asyncio.wait_for(events.get(), 5)
        assert first.state == "pending"
        record = await stack.service.get(first.session_id)
        link = stack.link(record.id)
        status, body, _ = await _get(client, link)
        assert status == 200 and '"state": "pending"' in body and '"transport": null' in body
        async with page_socket(client, link) as ps:
            assert (await ps.next("hello"))["state"] == "pending"
            live = await ps.next("state")
            assert live["state"] == "live" and live["seconds_left"] > 100
        await starting
        _, body, _ = await _get(client, link)
        assert '"transport": "agora"' in body and "tok-slow-" in body
