"""Through the real discord.py client and the fake Discord: LiveAvatar end to end, a HeyGen
session that HeyGen closes on its own, and an A2E room that A2E released before someone wrote.

No browser runs here: the viewer page's part (publishing the relayed ``agent-control`` commands
into the LiveKit room, forwarding ``agent-response`` events back) is played by ``PageStandIn``,
which first checks that each command was handed to the relay with the right topic and shape.
The page itself is exercised in real Chromium by ``tests/web/test_browser_liveavatar.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.core.events import Relay
from bot.core.models import Pricing, SessionState
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from bot.providers.a2e import A2EProvider
from bot.providers.heygen import HeyGenProvider
from bot.providers.liveavatar import LiveAvatarProvider
from tests.discord.conftest import TENANT, callback, final_text, make_settings, run_bot
from tests.discord.test_real_providers import ProviderStack
from tests.discord.test_session_flow import start_session
from tests.fakes.a2e import FakeA2E
from tests.fakes.discord import FakeDiscord
from tests.fakes.heygen import FakeHeyGen
from tests.fakes.liveavatar import FakeLiveAvatar

# LiveAvatar FULL mode: 2 credits a minute, per minute, one minute held at start.
LA_PRICING = Pricing(credits_per_minute=2, granularity_s=60, minimum_s=60)
PER_SECOND = Pricing(credits_per_minute=60, granularity_s=1, minimum_s=0)
LA_AVATAR = "7b1e9d1c-5f0a-4d3e-9a51-2f8c3e4d5a6b"


class PageStandIn:
    """What the viewer page does with LiveAvatar data, for a test without a browser."""

    def __init__(self, service: SessionService, vendor: FakeLiveAvatar) -> None:
        self.service, self.vendor = service, vendor
        self.relayed: list[dict[str, Any]] = []  # every command the outbox handed out, in order
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PageStandIn:
        ready = asyncio.Event()

        async def listen() -> None:
            async with self.service.events.subscribe(None) as queue:
                ready.set()
                while True:
                    event = await queue.get()
                    if isinstance(event, Relay):  # the session's outbox has something
                        await self.deliver(event.session_id)

        self._task = asyncio.create_task(listen())
        await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def deliver(self, session_id: str) -> None:
        record = await self.service.get(session_id)
        outbox = self.service.events.relay
        config = outbox.config(session_id)
        # the handoff: LiveKit data on topic agent-control, one event object per message
        assert config is not None and config.topic == "agent-control"
        outbox.set_present(session_id, True)  # the page has joined the room
        room = self.vendor.room(record.provider_session_id)
        while batch := outbox.take(session_id, "stand-in"):
            for _, msg in batch:
                assert msg["session_id"] == record.provider_session_id
                assert msg["event_type"].startswith("avatar.") and msg["event_id"]
                self.relayed.append(msg)
                room.publish(config.topic, json.dumps(msg))
            outbox.acked(session_id, "stand-in", [i for i, _ in batch])
        for raw in self.vendor.viewer_messages.pop(record.provider_session_id, []):
            await self.service.viewer_data(record.id, raw)  # the page's agent-response report


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def thread_texts(fake: FakeDiscord, thread_id: str) -> list[str]:
    return [m["content"] for m in fake.channel_messages(thread_id)]


async def test_liveavatar_end_to_end(fake: FakeDiscord, tmp_path: Path, alice: dict,
                                     http: httpx.AsyncClient) -> None:
    async with FakeLiveAvatar() as vendor:
        stack = await ProviderStack(tmp_path / "t.db", "liveavatar", lambda hub: (
            LiveAvatarProvider(api_key=SecretStr(vendor.api_key), http=http, events=hub,
                               pricing=LA_PRICING, base_url=vendor.url, timeout_s=2.0))).open()
        bot = await run_bot(fake, stack, make_settings(fake, tmp_path))
        try:
            await stack.store.grant(TENANT, 100, "test")
            _, anchor, thread = await start_session(
                fake, alice, avatar=f"liveavatar:{LA_AVATAR}", minutes=3,
                knowledge="We repair bikes on Saturdays.")
            (record,) = await stack.service.open_sessions(TENANT)
            assert record.provider == "liveavatar" and record.reserved == 6
            session = vendor.sessions[record.provider_session_id]
            assert session.context_id is not None  # FULL mode with the knowledge as context
            # the viewer link carries a signed token for exactly this session
            link = anchor["components"][0]["components"][0]["url"]
            claims = stack.links.verify(link.rsplit("/v/", 1)[1])
            assert claims is not None and claims.session_id == record.id

            async with PageStandIn(stack.service, vendor) as page:
                await fake.user_message(alice, thread["id"], "!say Welcome to the shop")
                await fake.wait_for(lambda: session.said == ["Welcome to the shop"])
                await fake.user_message(alice, thread["id"], "When are you open?")
                await fake.wait_for(lambda: session.asked == ["When are you open?"])
                answer = await fake.wait_for(lambda: [
                    t for t in thread_texts(fake, thread["id"])
                    if "You asked: When are you open?" in t])
                assert answer
                assert [m["event_type"] for m in page.relayed] == [
                    "avatar.speak_text", "avatar.speak_response"]
                assert page.relayed[1]["text"] == "When are you open?"

                interrupted = await fake.slash(alice, "interrupt", channel_id=thread["id"])
                await callback(interrupted)
                await fake.wait_for(lambda: session.interrupts == 1)

            assert any("Welcome to the shop" in t for t in thread_texts(fake, thread["id"]))
            click = await fake.click(alice, anchor, f"avatar:stop:{record.id}")
            await final_text(fake, click)
            summary = await fake.wait_for(lambda: [
                t for t in thread_texts(fake, thread["id"]) if "ended" in t and "credits" in t])
            final = await stack.service.get(record.id)
            assert final.state is SessionState.ENDED and final.settled == 2  # one minute
            assert "credits used 2, refunded 4" in summary[-1]
            assert vendor.open_sessions() == []
            assert await stack.store.verify() == []
        finally:
            await bot.close()
            await stack.close()


async def test_heygen_closing_the_stream_tells_the_thread(fake: FakeDiscord, tmp_path: Path,
                                                          alice: dict,
                                                          http: httpx.AsyncClient) -> None:
    async with FakeHeyGen() as vendor:
        stack = await ProviderStack(tmp_path / "t.db", "heygen", lambda hub: HeyGenProvider(
            api_key=SecretStr(vendor.api_key), http=http, events=hub, pricing=PER_SECOND,
            base_url=vendor.url, timeout_s=2.0, status_interval_s=0.0)).open()
        bot = await run_bot(fake, stack, make_settings(fake, tmp_path))
        try:
            await stack.store.grant(TENANT, 1000, "test")
            _, anchor, thread = await start_session(
                fake, alice, avatar="heygen:Anna_public_3_20240108", minutes=2)
            (record,) = await stack.service.open_sessions(TENANT)
            assert vendor.sessions[record.provider_session_id].duration_limit == 120
            vendor.end_session(record.provider_session_id)
            await asyncio.sleep(1.2)  # we notice only at the next reaper tick
            await SessionReaper(stack.service, orphan_sweep_s=3600).tick()
            told = await fake.wait_for(lambda: [
                t for t in thread_texts(fake, thread["id"]) if "ended" in t])
            assert "HeyGen closed the stream" in told[-1]
            final = await stack.service.get(record.id)
            assert final.state is SessionState.ENDED
            assert final.settled == 0  # ended by HeyGen right after it started
            assert f"credits used 0, refunded {final.reserved}" in told[-1]
            assert await stack.store.verify() == []
            # a message after the end does not reach HeyGen any more
            await fake.user_message(alice, thread["id"], "hello?")
            await asyncio.sleep(0.3)
            assert vendor.calls("/streaming.task") == []
        finally:
            await bot.close()
            await stack.close()


async def test_a2e_room_gone_when_someone_writes_ends_the_session_at_once(
    fake: FakeDiscord, tmp_path: Path, alice: dict, http: httpx.AsyncClient
) -> None:
    async with FakeA2E() as vendor:
        stack = await ProviderStack(tmp_path / "t.db", "a2e", lambda hub: A2EProvider(
            api_key=SecretStr(vendor.api_key), http=http, events=hub, pricing=PER_SECOND,
            base_url=vendor.url, timeout_s=2.0)).open()
        bot = await run_bot(fake, stack, make_settings(fake, tmp_path))
        try:
            await stack.store.grant(TENANT, 1000, "test")
            _, anchor, thread = await start_session(
                fake, alice, avatar="a2e:676e1f054c86ff839eae2cc3", minutes=2)
            (record,) = await stack.service.open_sessions(TENANT)
            vendor.release_room(record.provider_session_id)  # A2E ends it; no reaper runs here
            await fake.user_message(alice, thread["id"], "Are you there?")
            told = await fake.wait_for(lambda: [
                t for t in thread_texts(fake, thread["id"]) if "A2E closed the avatar's room" in t])
            assert told[-1].startswith("🏁 Session with Linda ended")
            # the writer is also answered: their message could not reach the avatar
            assert "⚠️ That A2E session has already ended." in thread_texts(fake, thread["id"])
            final = await stack.service.get(record.id)
            assert final.state is SessionState.ENDED
            assert await stack.store.verify() == []
        finally:
            await bot.close()
            await stack.close()
