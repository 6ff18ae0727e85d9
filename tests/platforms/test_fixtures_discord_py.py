"""The Discord fixtures read the way the docs say, when the real discord.py client receives them.

Each fixture goes through the local fake gateway (tests/fakes/discord.py) into a plain
discord.Client, so a fixture with a wrong field name or shape shows up here, before a fake feeds it
to the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl

from tests.fakes.discord import FakeDiscord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "discord"


@pytest.fixture
async def client() -> AsyncIterator[tuple[FakeDiscord, discord.Client, asyncio.Queue[Any]]]:
    base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    fake = await FakeDiscord().start()
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    intents = discord.Intents.default()
    intents.message_content = True
    bot = discord.Client(intents=intents)
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def on_message(message: discord.Message) -> None:
        await received.put(message)

    async def on_interaction(interaction: discord.Interaction) -> None:
        await received.put(interaction)

    bot.event(on_message)
    bot.event(on_interaction)
    task = asyncio.create_task(bot.start("fake-token"))
    try:
        await fake.wait_ready(10)
        yield fake, bot, received
    finally:
        await bot.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await fake.close()
        discord.http.Route.BASE = base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway


async def deliver(fake: FakeDiscord, queue: asyncio.Queue[Any], name: str) -> Any:
    envelope = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    data = copy.deepcopy(envelope["d"])
    data["guild_id"] = fake.guild_id  # the guild the fake serves; every other field as published
    await fake.dispatch(envelope["t"], data)
    return await asyncio.wait_for(queue.get(), 5)


CASES = [
    ("message_create_default.json", discord.MessageType.default),
    ("message_create_reply.json", discord.MessageType.reply),
    ("message_create_channel_name_change.json", discord.MessageType.channel_name_change),
    ("message_create_pinned.json", discord.MessageType.pins_add),
    ("message_create_user_join.json", discord.MessageType.new_member),
    ("message_create_recipient_add.json", discord.MessageType.recipient_add),
    ("message_create_thread_created.json", discord.MessageType.thread_created),
    ("message_create_thread_starter.json", discord.MessageType.thread_starter_message),
]


async def test_message_types_as_discord_py_sees_them(client: Any) -> None:
    fake, _, queue = client
    for name, expected in CASES:
        message = await deliver(fake, queue, name)
        assert message.type is expected, name


async def test_is_system_is_not_the_rule_to_forward_by(client: Any) -> None:
    # discord.py counts thread starters (and command, context-menu and poll-result messages) as
    # not "system"; the forwarding rule must test for DEFAULT and REPLY instead.
    fake, _, queue = client
    starter = await deliver(fake, queue, "message_create_thread_starter.json")
    assert starter.is_system() is False
    assert starter.type not in (discord.MessageType.default, discord.MessageType.reply)


async def test_wordless_messages_carry_what_the_reaction_is_for(client: Any) -> None:
    fake, _, queue = client
    attachment = await deliver(fake, queue, "message_create_attachment_only.json")
    assert attachment.content == "" and attachment.attachments[0].filename == "cat.png"
    sticker = await deliver(fake, queue, "message_create_sticker_only.json")
    assert sticker.content == "" and [s.name for s in sticker.stickers] == ["Wave"]
    forward = await deliver(fake, queue, "message_create_forward.json")
    assert forward.content == ""
    assert forward.reference is not None
    assert forward.reference.type is discord.MessageReferenceType.forward
    assert forward.message_snapshots[0].content == "Have you seen <#103735883630395392>?"


async def test_avatar_start_interaction_and_its_missing_permissions(client: Any) -> None:
    fake, _, queue = client
    interaction = await deliver(fake, queue, "interaction_avatar_start.json")
    assert interaction.type is discord.InteractionType.application_command
    assert interaction.data["name"] == "avatar"
    sub = interaction.data["options"][0]
    assert (sub["type"], sub["name"], sub["options"][0]["value"]) == (1, "start", "local")
    perms = interaction.app_permissions
    assert perms.embed_links  # the published example grants Embed Links…
    missing = [name for name in ("read_message_history", "add_reactions", "send_messages",
                                 "send_messages_in_threads", "create_public_threads")
               if not getattr(perms, name)]
    # …and none of what the bot needs to answer in a thread: a refusal test can use it as is.
    assert missing == ["read_message_history", "add_reactions", "send_messages",
                       "send_messages_in_threads", "create_public_threads"]
