"""The same Discord flow with the built-in local avatar and with a vendor (A2E) behind its fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.core.events import EventHub
from bot.core.models import Pricing, SessionState
from bot.core.service import SessionService
from bot.providers.a2e import A2EProvider
from bot.providers.local import LocalProvider
from bot.storage.sqlite import SqliteStore
from tests.discord.conftest import TENANT, Stack, callback, final_text, make_settings, run_bot
from tests.discord.test_session_flow import start_session
from tests.fakes.a2e import FakeA2E
from tests.fakes.discord import FakeDiscord

PRICING = Pricing(credits_per_minute=2, granularity_s=60, minimum_s=60)


class ProviderStack(Stack):
    """A stack whose service runs one real provider."""

    def __init__(self, path: Path, name: str, make: Any) -> None:
        super().__init__(path)
        self.name, self.make = name, make

    async def open(self, vendor_state: dict[str, Any] | None = None) -> ProviderStack:
        self.store = await SqliteStore.open(self.path)
        self.hub = EventHub()
        self.real = self.make(self.hub)
        self.service = SessionService(store=self.store, providers={self.name: self.real},
                                      events=self.hub)
        return self

    async def close(self) -> None:
        await self.real.aclose()
        await self.store.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_local_avatar(fake: FakeDiscord, tmp_path: Path, alice: dict) -> None:
    stack = await ProviderStack(
        tmp_path / "t.db", "local", lambda hub: LocalProvider(events=hub, pricing=PRICING)
    ).open()
    bot = await run_bot(fake, stack, make_settings(fake, tmp_path))
    try:
        await stack.store.grant(TENANT, 100, "test")
        knowledge = "Our shop opens at nine in the morning. We sell bicycles."
        reply, anchor, thread = await start_session(fake, alice, minutes=3, knowledge=knowledge)
        assert "Started" in reply
        fields = {f["name"]: f["value"] for f in anchor["embeds"][0]["fields"]}
        assert fields["Vendor"] == "Local avatar"
        await fake.user_message(alice, thread["id"], "When does the shop open?")
        answer = await fake.wait_for(lambda: [
            m for m in fake.channel_messages(thread["id"])
            if "nine in the morning" in m["content"]], timeout=10)
        assert answer[0]["author"]["id"] == fake.bot_user["id"]

        (record,) = await stack.service.open_sessions(TENANT)
        click = await fake.click(alice, anchor, f"avatar:stop:{record.id}")
        assert "credits used 2, refunded 4" in await final_text(fake, click)
        assert (await stack.service.get(record.id)).state is SessionState.ENDED
        assert await stack.store.verify() == []
    finally:
        await bot.close()
        await stack.close()


async def test_a2e_vendor(fake: FakeDiscord, tmp_path: Path, alice: dict,
                          http: httpx.AsyncClient) -> None:
    async with FakeA2E() as vendor:
        stack = await ProviderStack(tmp_path / "t.db", "a2e", lambda hub: A2EProvider(
            api_key=SecretStr(vendor.api_key), http=http, events=hub, pricing=PRICING,
            base_url=vendor.url, timeout_s=2.0,
        )).open()
        bot = await run_bot(fake, stack, make_settings(fake, tmp_path))
        try:
            await stack.store.grant(TENANT, 100, "test")
            ac = await callback(await fake.autocomplete(alice, "start", "avatar", avatar="lin"))
            assert ac["data"]["choices"] == [
                {"name": "Linda (a2e)", "value": "a2e:676e1f054c86ff839eae2cc3"}]
            _, anchor, thread = await start_session(
                fake, alice, avatar="a2e:676e1f054c86ff839eae2cc3", minutes=2)
            embed = anchor["embeds"][0]
            assert embed["title"] == "Linda is live" and embed["thumbnail"]["url"] == "https://x/l.jpg"
            (record,) = await stack.service.open_sessions(TENANT)
            room = vendor.rooms[record.provider_session_id]

            await fake.user_message(alice, thread["id"], "What is the capital of France?")
            await fake.wait_for(lambda: room.asked)
            assert room.asked == ["What is the capital of France?"]
            # the viewer page hands the vendor's data-channel messages to the service
            for message in vendor.viewer_messages.pop(record.provider_session_id, []):
                await stack.service.viewer_data(record.id, message)
            await fake.wait_for(lambda: [
                m for m in fake.channel_messages(thread["id"])
                if "You asked: What is the capital of France?" in m["content"]])

            await fake.user_message(alice, thread["id"], "!say Welcome to the shop")
            await fake.wait_for(lambda: room.spoken == ["Welcome to the shop"])

            click = await fake.click(alice, anchor, f"avatar:stop:{record.id}")
            assert "Stopped Linda" in await final_text(fake, click)
            assert room.left and vendor.open_rooms() == []
            assert (await stack.service.get(record.id)).state is SessionState.ENDED
            assert await stack.store.verify() == []
        finally:
            await bot.close()
            await stack.close()


async def test_a2e_session_survives_a_restart(fake: FakeDiscord, tmp_path: Path, alice: dict,
                                              http: httpx.AsyncClient) -> None:
    async with FakeA2E() as vendor:
        def make(hub: EventHub) -> A2EProvider:
            return A2EProvider(api_key=SecretStr(vendor.api_key), http=http, events=hub,
                               pricing=PRICING, base_url=vendor.url, timeout_s=2.0)

        settings = make_settings(fake, tmp_path)
        first = await ProviderStack(tmp_path / "t.db", "a2e", make).open()
        bot = await run_bot(fake, first, settings)
        await first.store.grant(TENANT, 100, "test")
        _, anchor, thread = await start_session(fake, alice, minutes=2)
        (record,) = await first.service.open_sessions(TENANT)
        await bot.close()
        await first.close()

        second = await ProviderStack(tmp_path / "t.db", "a2e", make).open()
        bot = await run_bot(fake, second, settings)
        try:
            room = vendor.rooms[record.provider_session_id]
            await fake.user_message(alice, thread["id"], "!say I am back")
            await fake.wait_for(lambda: room.spoken == ["I am back"])
            click = await fake.click(alice, anchor, f"avatar:stop:{record.id}")
            assert "Stopped Linda" in await final_text(fake, click)
            assert room.left
            assert await second.store.verify() == []
        finally:
            await bot.close()
            await second.close()
