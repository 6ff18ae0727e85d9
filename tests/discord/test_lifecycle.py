"""Restarts, thread archive/delete, the message-content refusal (4014) and 429s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.core.errors import NotAllowed
from bot.core.models import SessionState
from bot.core.service import StartCommand
from tests.discord.conftest import (
    TENANT,
    Bot,
    Stack,
    callback,
    final_text,
    make_settings,
    run_bot,
)
from tests.discord.test_session_flow import start_session
from tests.fakes.discord import MESSAGE_CONTENT, FakeDiscord


async def test_restart_keeps_stop_button_and_thread_routing(
    fake: FakeDiscord, tmp_path: Path, alice: dict
) -> None:
    settings = make_settings(fake, tmp_path)
    first = await Stack(tmp_path / "t.db").open()
    bot = await run_bot(fake, first, settings)
    await first.store.grant(TENANT, 100, "test")
    _, anchor, thread = await start_session(fake, alice, minutes=5)
    (record,) = await first.service.open_sessions(TENANT)
    await bot.close()
    await first.close()

    # a new process: new store, hub, service and client; the vendor kept its session
    second = await Stack(tmp_path / "t.db").open(vendor_state=first.provider.open)
    fake.hide_threads = True  # the new client has the thread nowhere in its cache
    bot = await run_bot(fake, second, settings)
    try:
        assert bot.client.get_channel(int(thread["id"])) is None
        await fake.user_message(alice, thread["id"], "still there?")
        await fake.wait_for(lambda: [m for m in fake.channel_messages(thread["id"])
                                     if "You asked: still there?" in m["content"]])
        assert second.provider.called("ask") == ["still there?"]

        click = await fake.click(alice, anchor, f"avatar:stop:{record.id}")
        assert "Stopped Ava" in await final_text(fake, click)
        assert (await second.service.get(record.id)).state is SessionState.ENDED
        assert second.provider.called("stop") == [record.provider_session_id]
        assert await second.store.verify() == []
    finally:
        await bot.close()
        await second.close()


@pytest.mark.parametrize("how", ["archive", "lock", "delete"])
async def test_closing_the_thread_ends_the_session(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict, how: str
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    _, anchor, thread = await start_session(fake, alice, minutes=5)
    (record,) = await stack.service.open_sessions(TENANT)
    if how == "delete":
        await fake.delete_thread(thread["id"])
    else:
        await fake.archive_thread(thread["id"], locked=how == "lock")

    async def ended() -> bool:
        return (await stack.service.get(record.id)).state is SessionState.ENDED

    for _ in range(100):
        if await ended():
            break
        await fake.wait_for(lambda: True, 0.05)
    done = await stack.service.get(record.id)
    assert done.state is SessionState.ENDED and done.end_reason.startswith("thread ")
    assert stack.provider.called("stop") == [record.provider_session_id]
    assert await stack.store.verify() == []
    # the session message's Stop button is disabled; nothing was posted into the closed thread
    await fake.wait_for(lambda: anchor["components"][0]["components"][-1].get("disabled"))
    assert not [m for m in fake.channel_messages(thread["id"]) if m["content"].startswith("🏁")]


async def test_message_content_refused_runs_in_mention_mode(
    fake: FakeDiscord, stack: Stack, tmp_path: Path, alice: dict,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake.reject_message_content = True
    bot = await run_bot(fake, stack, make_settings(fake, tmp_path))
    try:
        first, second = fake.identifies
        assert first["intents"] & MESSAGE_CONTENT and not second["intents"] & MESSAGE_CONTENT
        assert bot.client.mention_mode
        err = capsys.readouterr().err
        assert "close 4014" in err and "MESSAGE CONTENT INTENT" in err
        assert "discord.com/developers/applications" in err

        # slash commands still work, and a thread message that mentions the bot is forwarded
        await stack.store.grant(TENANT, 100, "test")
        _, _, thread = await start_session(fake, alice)
        await fake.user_message(alice, thread["id"], "no mention here")
        me = fake.bot_user
        await fake.user_message(alice, thread["id"], f"<@{me['id']}> hello there",
                                mentions=[me])
        await fake.wait_for(lambda: stack.provider.called("ask"))
        assert stack.provider.called("ask") == ["hello there"]
    finally:
        await bot.close()


async def test_429_is_waited_out(fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict) -> None:
    await stack.store.grant(TENANT, 100, "test")
    fake.rate_limits.append(("POST", r"^/channels/\d+/messages$", 0.5))
    _, anchor, _ = await start_session(fake, alice)
    (limited,) = fake.limited
    posted = fake.calls_to("POST", r"^/channels/\d+/messages$")
    assert len(posted) == 1 and posted[0].at - limited.at >= 0.45
    assert anchor["embeds"][0]["title"] == "Ava is live"


async def test_answers_within_deadline_while_a_vendor_is_slow(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    """A vendor that takes 2.5 s to list avatars: the start still defers in time, and
    another command answers at once meanwhile."""
    await stack.store.grant(TENANT, 100, "test")
    original = stack.provider.list_avatars

    async def slow_list():  # noqa: ANN202
        await asyncio.sleep(2.5)
        return await original()

    stack.provider.list_avatars = slow_list  # type: ignore[method-assign]
    started = time.monotonic()
    pending = await fake.slash(alice, "start")
    credits = await fake.slash(alice, "credits")
    assert (await callback(credits))["type"] == 4
    assert time.monotonic() - started < 2.0  # well before the vendor's list came back
    assert (await callback(pending))["type"] == 5  # deferred before the deadline
    assert "Started **Ava**" in await final_text(fake, pending)


async def test_gateway_found_through_the_api_base(
    fake: FakeDiscord, stack: Stack, tmp_path: Path
) -> None:
    """With only DISCORD_API_BASE set, the gateway URL comes from GET /gateway/bot."""
    settings = make_settings(fake, tmp_path, discord_gateway_url=None)
    bot = await run_bot(fake, stack, settings)
    try:
        assert fake.calls_to("GET", r"^/gateway/bot$")
        assert bot.client.is_ready() and fake.identifies
    finally:
        await bot.close()


async def test_the_fake_refuses_a_late_first_answer(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    """The deadline check in the fake can fail: an answer after it is refused with 10062."""
    fake.deadline_s = 0.0
    pending = await fake.slash(alice, "credits")
    with pytest.raises(TimeoutError, match="3-second deadline"):
        await callback(pending)
    assert not [m for m in fake.messages.values() if "credits available" in m["content"]]


async def test_removing_the_bot_from_the_server_ends_its_sessions_until_it_is_added_again(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    await start_session(fake, alice, minutes=5)
    (record,) = await stack.service.open_sessions(TENANT)

    await fake.dispatch("GUILD_DELETE", {"id": str(fake.guild_id)})

    for _ in range(100):
        if not await _active(stack):
            break
        await asyncio.sleep(0.05)
    assert (await stack.service.get(record.id)).state is SessionState.ENDED
    assert stack.provider.called("stop") == [record.provider_session_id]
    with pytest.raises(NotAllowed, match="removed from this server"):
        await stack.service.start(StartCommand(tenant=TENANT, user="u", provider="fake"))

    # A guild the bot joins comes without "unavailable" (that key marks an outage ending).
    joined = {k: v for k, v in fake.guild_payload().items() if k != "unavailable"}
    await fake.dispatch("GUILD_CREATE", joined)
    for _ in range(100):
        if await _active(stack):
            break
        await asyncio.sleep(0.05)
    started = await stack.service.start(StartCommand(tenant=TENANT, user="u", provider="fake"))
    assert started.state is SessionState.LIVE
    assert await stack.store.verify() == []


async def _active(stack: Stack) -> bool:
    rows = await stack.store.run(
        lambda c: c.execute("SELECT active FROM tenants WHERE tenant = ?", (TENANT,)).fetchall()
    )
    return bool(rows and rows[0][0])


async def test_a_start_during_the_server_removal_is_refused_not_left_running(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    """While the removal is still stopping earlier sessions, a new start must not slip in."""
    await stack.store.grant(TENANT, 100, "test")
    await start_session(fake, alice, minutes=5)
    (first,) = await stack.service.open_sessions(TENANT)
    stack.provider.stop_delay = 0.5  # the vendor takes a while to stop the first session

    await fake.dispatch("GUILD_DELETE", {"id": str(fake.guild_id)})
    for _ in range(100):
        if (await stack.service.get(first.id)).state is SessionState.ENDING:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(NotAllowed, match="removed from this server"):
        await stack.service.start(StartCommand(tenant=TENANT, user="u", provider="fake"))

    for _ in range(100):
        if not await stack.service.open_sessions(TENANT) and not await _active(stack):
            break
        await asyncio.sleep(0.05)
    assert await stack.service.open_sessions(TENANT) == []
    assert stack.provider.open == {}, "a vendor session outlived the server removal"
    assert await stack.store.verify() == []
