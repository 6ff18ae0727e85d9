"""A real discord.Client against the local fake Discord, on a real session stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.compat import discord_compat
from bot.core.events import EventHub
from bot.core.links import ViewerLinks
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.discord.client import AvatarBot
from bot.settings import Settings
from bot.storage.sqlite import SqliteStore
from tests.fakes.discord import ADMIN_PERMS, MEMBER_PERMS, FakeDiscord, PendingInteraction
from tests.fakes.provider import FakeProvider

TOKEN = "fake-bot-token-secret"
TENANT = "discord:111"


@pytest.fixture(autouse=True)
def _restore_endpoints() -> Any:
    """discord.py keeps the endpoints in class attributes; put them back after each test."""
    base, gateway = discord_compat.endpoints()
    yield
    discord_compat.set_api_base(base)
    discord_compat.set_gateway(gateway)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    yield server
    await server.close()


def make_settings(fake: FakeDiscord, tmp_path: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "discord_token": TOKEN, "discord_api_base": fake.api_base,
        "discord_gateway_url": f"http://127.0.0.1:{fake.port}/gateway",
        "database_path": tmp_path / "t.db",
    }
    values.update(extra)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Stack:
    """Store, hub, provider and service on one database file (re-openable for restarts)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: SqliteStore
        self.hub: EventHub
        self.provider: FakeProvider
        self.service: SessionService
        self.links = ViewerLinks(b"0123456789abcdef0123", "http://viewer.test")

    async def open(self, vendor_state: dict[str, Any] | None = None) -> Stack:
        self.store = await SqliteStore.open(self.path)
        self.hub = EventHub()
        self.provider = FakeProvider(self.hub)
        if vendor_state is not None:  # the vendor kept its sessions while we restarted
            self.provider.open = vendor_state
        self.service = SessionService(
            store=self.store, providers={"fake": self.provider}, events=self.hub
        )
        return self

    @property
    def tenants(self) -> TenantService:
        return TenantService(self.store)

    @property
    def bindings(self) -> ChatBindings:
        return ChatBindings(self.store)

    async def close(self) -> None:
        await self.store.close()


class Bot:
    """A running AvatarBot connected to the fake."""

    def __init__(self, client: AvatarBot, task: asyncio.Task[None]) -> None:
        self.client = client
        self.task = task

    async def close(self) -> None:
        await self.client.close()
        try:
            await asyncio.wait_for(self.task, 5)
        except (discord.ConnectionClosed, discord.PrivilegedIntentsRequired):
            pass


async def run_bot(fake: FakeDiscord, stack: Stack, settings: Settings) -> Bot:
    fake.reset_ready()
    # discord.py waits guild_ready_timeout (2 s) for more GUILD_CREATEs before on_ready
    client = AvatarBot(settings=settings, service=stack.service, tenants=stack.tenants,
                       bindings=stack.bindings, links=stack.links, guild_ready_timeout=0.05)
    client.relay.edit_interval_s = 0.2  # keep the suite fast; the throttle itself is tested
    task = asyncio.create_task(client.start(TOKEN))
    await fake.wait_ready()
    await asyncio.wait_for(client.wait_until_ready(), 5)
    await asyncio.wait_for(client.relay.subscribed.wait(), 5)
    return Bot(client, task)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = await Stack(tmp_path / "t.db").open()
    yield s
    await s.close()


@pytest.fixture
async def bot(fake: FakeDiscord, stack: Stack, tmp_path: Path) -> AsyncIterator[Bot]:
    running = await run_bot(fake, stack, make_settings(fake, tmp_path))
    yield running
    await running.close()


@pytest.fixture
def alice(fake: FakeDiscord) -> dict[str, Any]:
    """An ordinary member."""
    return fake.add_member(fake.user("alice"), [], MEMBER_PERMS)


@pytest.fixture
def admin(fake: FakeDiscord) -> dict[str, Any]:
    """A member with Manage Server."""
    return fake.add_member(fake.user("root"), [], ADMIN_PERMS | MEMBER_PERMS)


async def callback(pending: PendingInteraction) -> dict[str, Any]:
    """The interaction's first response body (raises if it missed the 3-second deadline)."""
    return await asyncio.wait_for(asyncio.shield(pending.callback), 5)


async def final_text(fake: FakeDiscord, pending: PendingInteraction) -> str:
    """Text of the reply the user ends up seeing (immediate or edited after a defer)."""
    body = await callback(pending)
    if body["type"] == 4:
        return body["data"]["content"]

    def edited() -> str | None:
        orig = pending.original
        if orig and orig.get("edited_timestamp") and orig.get("content"):
            return orig["content"]
        followups = [m for m in fake.messages.values()
                     if m.get("interaction_token") == pending.token and m is not orig]
        return followups[-1]["content"] if followups else None

    return await fake.wait_for(edited)


def is_ephemeral(body: dict[str, Any]) -> bool:
    return bool((body.get("data") or {}).get("flags", 0) & 64)
