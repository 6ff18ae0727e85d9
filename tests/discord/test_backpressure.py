"""Discord under a backlog (docs/backpressure.md): a session whose queue is full replies plainly
in the thread, and every message it accepted still reaches the avatar, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.platforms.intake import Intake
from tests.discord.conftest import TENANT, Bot, Stack, callback, final_text, is_ephemeral
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


async def test_a_flood_on_one_thread_is_sent_in_order_or_refused_and_commands_still_answer(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    """Many more thread messages than the session's queue holds while the vendor is held, with
    one look-up at a time through the intake: each message reaches the vendor in the order it
    was posted or gets a plain "busy" reply, none vanishes, and a slash command sent into the
    backlog is still answered (Discord drops an interaction not answered within 3 s)."""
    await stack.store.grant(TENANT, 100, "test")
    _, _, thread = await start_session(fake, alice, avatar="fake:ava-1", minutes=5)
    stack.service.queues.limit = 3
    bot.intake = Intake(limit=1)
    stack.provider.talk_gate = asyncio.Event()
    texts = [f"flood {i}" for i in range(15)]
    posted = [await fake.user_message(alice, thread["id"], text) for text in texts]

    def busy_replies() -> list[dict]:
        return [m for m in fake.channel_messages(thread["id"]) if "still busy" in m["content"]]

    pending = await fake.slash(alice, "credits", channel_id=thread["id"])
    assert (await callback(pending))["type"] in (4, 5)  # answered while the vendor holds all
    assert not stack.provider.talk_gate.is_set()
    await fake.wait_for(lambda: len(busy_replies()) == len(texts) - 3, timeout=20)
    stack.provider.talk_gate.set()
    await poll(lambda: stack.provider.called("ask") == texts[:3], within=20)
    # the three accepted got their ✅, the twelve refused a reply each and no reaction
    await fake.wait_for(lambda: all(m["reactions"] for m in posted[:3]), timeout=20)
    assert not any(m["reactions"] for m in posted[3:])
    assert len(busy_replies()) == len(texts) - 3
    for reply in busy_replies():
        assert "Ava is still busy with 3 messages; wait a moment" in reply["content"]
    assert bot.intake.waiting() == 0


async def test_a_command_waiting_on_a_slow_vendor_is_deferred_in_time_then_answered(
    fake: FakeDiscord, stack: Stack, bot: Bot, admin: dict
) -> None:
    """``/avatar admin default-avatar`` names the avatar a bare start uses, which asks the
    vendor for its list. A vendor slower than Discord's 3 s would have the person see "The
    application did not respond": the command is deferred in time and its answer follows."""
    stack.provider.list_delay = 3.5
    pending = await fake.slash(admin, "default-avatar", group="admin")
    first = await callback(pending)  # the fake refuses a first response after 3 s
    assert first["type"] == 5 and is_ephemeral(first)  # "thinking…", only for the admin
    assert "starts **Ava**" in await final_text(fake, pending)
