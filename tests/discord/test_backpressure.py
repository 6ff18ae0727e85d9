"""Discord under a backlog (docs/backpressure.md): a session whose queue is full replies plainly
in the thread, and every message it accepted still reaches the avatar, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.discord.conftest import TENANT, Bot, Stack
from tests.discord.test_session_flow import start_session
from tests.fakes.discord import FakeDiscord


async def poll(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``check()`` (the core's state changes without the fake Discord noticing)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling state the fake does not signal
            await asyncio.sleep(0.02)


async def test_a_full_session_queue_replies_in_the_thread_and_loses_nothing_accepted(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    _, _, thread = await start_session(fake, alice, avatar="fake:ava-1", minutes=5)
    (record,) = await stack.service.open_sessions()
    stack.service.queues.limit = 2
    stack.provider.talk_gate = asyncio.Event()  # the vendor holds the first question
    for text in ("one", "two"):
        await fake.user_message(alice, thread["id"], text)
    await poll(lambda: stack.service.queues.waiting(record.id) == 2)
    refused = await fake.user_message(alice, thread["id"], "three")
    reply = await fake.wait_for(lambda: [m for m in fake.channel_messages(thread["id"])
                                         if "still busy" in m["content"]])
    assert "Ava is still busy with 2 messages; wait a moment" in reply[0]["content"]
    assert not refused["reactions"]
    stack.provider.talk_gate.set()
    await poll(lambda: stack.provider.called("ask") == ["one", "two"])
