"""The viewer WebSocket hub: takeover for one-credential sessions, all tabs for the local avatar,
relay to the active tab only, page data reported as transcript, bad input dropped, clean end and
shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest

from tests.web.conftest import page_socket


async def _metric(client: aiohttp.ClientSession, url: str, line: str) -> float:
    async with client.get(url + "/metrics") as resp:
        for row in (await resp.text()).splitlines():
            if row.startswith(line + " "):
                return float(row.split()[-1])
    return 0.0


async def play_relay(ps: Any, channel: Any, text: str) -> list[dict[str, Any]]:
    """Be the page in the room: send what the hub hands out into the fake AKool data channel,
    acknowledge it, and report what the avatar sends back, until the chat ``text`` went out."""
    handed: list[dict[str, Any]] = []
    while True:
        relay = await ps.next("relay")
        handed += relay["messages"]
        for m in relay["messages"]:
            channel.send(json.dumps(m["payload"]).encode(), at=time.monotonic())
        await ps.ws.send_json({"type": "relayed", "ids": [m["id"] for m in relay["messages"]]})
        for out in channel.outbox:
            await ps.ws.send_json({"type": "data", "payload": out})
        channel.outbox.clear()
        if any(m["payload"]["pld"].get("text") == text for m in relay["messages"]):
            return handed


async def test_newest_tab_takes_over_and_relay_goes_to_the_active_tab_only(
    stack: Any, client: Any
) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    async with page_socket(client, link) as first:
        assert (await first.next("hello"))["active"] is True
        async with page_socket(client, link) as second:
            assert (await second.next("hello"))["active"] is True
            await first.next("superseded")
            await second.ws.send_json({"type": "joined"})

            channel = stack.vendors["akool"].channel(record.provider_session_id)
            await stack.service.say(record.id, "Hello from the thread", author="ann")
            handed = await play_relay(second, channel, "Hello from the thread")
            # The session started in dialogue mode: the switch went first, then the text.
            assert [m["payload"]["type"] for m in handed] == ["command", "chat"]
            assert channel.said == ["Hello from the thread"]
            configs = [m["config"] for m in second.received if m["type"] == "relay"]
            assert all(c["bytes_per_second"] > 0 and c["max_message_bytes"] > 0 for c in configs)
            # Both tabs show the transcript, only the active one relays.
            assert (await first.next("transcript"))["text"] == "Hello from the thread"
            assert (await second.next("transcript"))["text"] == "Hello from the thread"
            assert not [m for m in first.received if m["type"] == "relay"]

            # The displaced tab takes the media back; it gets messages once it has joined.
            await first.ws.send_json({"type": "takeover"})
            await first.next("active")
            await second.next("superseded")
            await stack.service.ask(record.id, "Are you there?", author="ann")
            await asyncio.sleep(0.1)
            assert not [m for m in first.received if m["type"] == "relay"]
            await first.ws.send_json({"type": "joined"})
            handed = await play_relay(first, channel, "Are you there?")
            assert channel.asked == ["Are you there?"]
            await asyncio.sleep(0.1)
            assert len([m for m in second.received if m["type"] == "relay"]) == len(configs)


async def test_a_displaced_tab_reconnecting_passively_does_not_take_the_media(
    stack: Any, client: Any
) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    async with page_socket(client, link) as active:
        await active.next("hello")
        await active.ws.send_json({"type": "joined"})
        async with page_socket(client, link, "?passive=1") as passive:
            assert (await passive.next("hello"))["active"] is False
            await passive.ws.send_json({"type": "joined"})
            await stack.service.say(record.id, "for the active tab", author="ann")
            await active.next("relay")
            await asyncio.sleep(0.1)
            assert not [m for m in active.received if m["type"] == "superseded"]
            assert not [m for m in passive.received if m["type"] == "relay"]
    # With nobody holding the media, even a passive page gets it.
    async with page_socket(client, link, "?passive=1") as alone:
        assert (await alone.next("hello"))["active"] is True


async def test_local_avatar_serves_every_tab_at_once(stack: Any, client: Any) -> None:
    record = await stack.start("local")
    link = stack.link(record.id)
    async with page_socket(client, link) as first, page_socket(client, link) as second:
        assert (await first.next("hello"))["active"] is True
        assert (await second.next("hello"))["active"] is True
        await stack.service.say(record.id, "Everyone hears this.", author="bo")
        for ps in (first, second):
            line = await ps.next("transcript")
            assert line["speaker"] == "user" and line["author"] == "bo" and line["intent"] == "say"
        assert not [m for m in first.received if m["type"] == "superseded"]
        assert await _metric(client, stack.url, "avatarbot_viewers") == 2.0


async def test_page_data_messages_become_transcript_lines(stack: Any, client: Any) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    async with page_socket(client, link) as watcher:
        await watcher.next("hello")
        async with page_socket(client, link) as active:
            await active.next("hello")
            await active.ws.send_json({"type": "joined"})
            await stack.service.ask(record.id, "When do you open?", author="ann")
            relay = await active.next("relay")
            await active.ws.send_json({"type": "relayed",
                                       "ids": [m["id"] for m in relay["messages"]]})
            reply = {"v": 2, "type": "chat", "mid": "m1", "idx": 0, "fin": True,
                     "pld": {"from": "bot", "text": "We open at nine."}}
            # A displaced tab's reports are ignored (it holds no media).
            await watcher.ws.send_json({"type": "data", "payload": reply})
            await active.ws.send_json({"type": "data", "payload": json.dumps(reply)})
            for ps in (active, watcher):
                while (line := await ps.next("transcript"))["speaker"] != "avatar":
                    pass
                assert line["text"] == "We open at nine."
            await asyncio.sleep(0.1)
            lines = [m for m in watcher.received
                     if m["type"] == "transcript" and m["speaker"] == "avatar"]
            assert len(lines) == 1


async def test_bad_page_messages_are_dropped_and_the_socket_lives_on(
    stack: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    caplog.set_level(logging.WARNING, logger="web.viewer")
    async with page_socket(client, link) as ps:
        await ps.next("hello")
        await ps.ws.send_bytes(b"\x00\x01binary")
        await ps.ws.send_str("{not json")
        await ps.ws.send_str("[1, 2, 3]")
        await ps.ws.send_str(json.dumps({"type": "data", "payload": "x" * 20_000}))
        await ps.ws.send_str(json.dumps({"type": "launch-missiles"}))
        await ps.ws.send_json({"type": "data", "payload": {"v": 99, "junk": [None]}})
        await ps.ws.send_json({"type": "data", "payload": "\udcff-not-json"})
        await ps.ws.send_json({"type": "ping"})
        await ps.next("pong")
        reasons = " ".join(r.getMessage() for r in caplog.records)
        for reason in ("binary", "not_json", "not_object", "oversized", "unknown_type"):
            assert reason in reasons
        # The hub still delivers.
        await stack.service.say(record.id, "still here", author="ann")
        assert (await ps.next("transcript"))["text"] == "still here"
    assert await _metric(client, stack.url, 'avatarbot_ws_dropped_total{reason="oversized"}') == 1


async def test_a_frame_over_the_socket_limit_closes_only_that_socket(
    stack: Any, client: Any
) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    async with page_socket(client, link) as calm:
        await calm.next("hello")
        async with page_socket(client, link) as flood:
            await flood.next("hello")
            await calm.next("superseded")
            await flood.ws.send_str("y" * 200_000)
            closed = await flood.closed()
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await stack.service.say(record.id, "the hub survived", author="ann")
        assert (await calm.next("transcript"))["text"] == "the hub survived"
        await calm.ws.send_json({"type": "takeover"})
        await calm.next("active")


async def test_page_flooding_messages_is_throttled(stack: Any, client: Any) -> None:
    record = await stack.start("akool")
    async with page_socket(client, stack.link(record.id)) as ps:
        await ps.next("hello")
        for _ in range(200):
            await ps.ws.send_json({"type": "ping"})
        await asyncio.sleep(0.3)
        pongs = 0
        while True:
            try:
                msg = await asyncio.wait_for(ps.ws.receive_json(), 0.3)
            except TimeoutError:
                break
            pongs += msg["type"] == "pong"
        assert 50 <= pongs < 200
    assert await _metric(client, stack.url, 'avatarbot_ws_dropped_total{reason="rate"}') > 0


async def test_shutdown_closes_every_viewer_socket(stack: Any, client: Any) -> None:
    record = await stack.start("akool")
    async with page_socket(client, stack.link(record.id)) as ps:
        await ps.next("hello")
        await stack.app.shutdown()
        closed = await ps.closed()
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert closed.data == aiohttp.WSCloseCode.GOING_AWAY or ps.ws.close_code == 1001


async def test_webrtc_signalling_refuses_strangers_and_bad_bodies(stack: Any, client: Any) -> None:
    local = await stack.start("local")
    akool = await stack.start("akool")
    link = stack.link(local.id)
    async with page_socket(client, link) as ps:
        hello = await ps.next("hello")
        vid = hello["viewer_id"]
        async with client.post(link + "/webrtc/offer", json={"viewer_id": "someone-else"}) as r:
            assert r.status == 409
        async with client.post(link + "/webrtc/offer", data=b"{oops",
                               headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
        async with client.post(link + "/webrtc/explode", json={"viewer_id": vid}) as r:
            assert r.status == 404
        async with client.post(link + "/webrtc/offer", json={"viewer_id": vid}) as r:
            offer = await r.json()
            assert r.status == 200 and offer["type"] == "offer" and "m=video" in offer["sdp"]
        async with client.post(link + "/webrtc/candidate",
                               json={"viewer_id": vid, "candidate": {"candidate": 5}}) as r:
            assert r.status == 400
        async with client.post(link + "/webrtc/answer", json={"viewer_id": vid, "sdp": ""}) as r:
            assert r.status == 400
        async with client.post(link + "/webrtc/leave", json={"viewer_id": vid}) as r:
            assert r.status == 200
    akool_link = stack.link(akool.id)
    async with page_socket(client, akool_link) as ps:
        vid = (await ps.next("hello"))["viewer_id"]
        async with client.post(akool_link + "/webrtc/offer", json={"viewer_id": vid}) as r:
            assert r.status == 400 and "WebRTC" in (await r.json())["error"]


async def test_reaper_warning_and_expiry_reach_the_page(stack: Any, client: Any) -> None:
    from datetime import timedelta

    from bot.core.reaper import SessionReaper

    record = await stack.start("akool", minutes=5)
    reaper = SessionReaper(stack.service, warn_before_end_s=120, idle_timeout_s=3600)
    async with page_socket(client, stack.link(record.id)) as ps:
        assert 290 <= (await ps.next("hello"))["seconds_left"] <= 300
        await reaper.tick(now=record.expires_at - timedelta(seconds=100))
        warning = await ps.next("warning")
        assert warning["text"] == "2 minute(s) left." and warning["seconds_left"] == 100
        await reaper.tick(now=record.expires_at + timedelta(seconds=1))
        end = await ps.next("end")
        assert end["summary"]["state"] == "ended"
        await ps.closed()


async def test_an_answer_the_avatar_cannot_parse_is_a_clean_error(stack: Any, client: Any) -> None:
    record = await stack.start("local")
    link = stack.link(record.id)
    async with page_socket(client, link) as ps:
        vid = (await ps.next("hello"))["viewer_id"]
        async with client.post(link + "/webrtc/offer", json={"viewer_id": vid}) as r:
            assert r.status == 200
        async with client.post(link + "/webrtc/answer",
                               json={"viewer_id": vid, "sdp": "this is not sdp"}) as r:
            assert r.status == 400  # InvalidRequest from the provider, as on every route
            assert "error" in await r.json()
        # The session and the page's socket carry on.
        await stack.service.say(record.id, "still fine", author="ann")
        assert (await ps.next("transcript"))["text"] == "still fine"


async def test_deeply_nested_json_is_refused_like_any_bad_body(stack: Any, client: Any) -> None:
    # "[[[[...": json.loads raises RecursionError (not ValueError) past ~1000 levels.
    deep = "[" * 8000 + "]" * 8000
    local = await stack.start("local")
    link = stack.link(local.id)
    async with page_socket(client, link) as ps:
        vid = (await ps.next("hello"))["viewer_id"]
        await ps.ws.send_str(deep)
        await ps.ws.send_json({"type": "ping"})
        await ps.next("pong")  # the socket lives on
        async with client.post(link + "/webrtc/offer", data=deep.encode(),
                               headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["error"] == "bad request"
        async with client.post(link + "/webrtc/offer", json={"viewer_id": vid}) as r:
            assert r.status == 200 and (await r.json())["type"] == "offer"
    assert await _metric(client, stack.url, 'avatarbot_ws_dropped_total{reason="not_json"}') == 1
