"""End-to-end: /avatar start -> public message + thread -> chat both ways -> Stop -> summary."""

from __future__ import annotations

from typing import Any

from bot.core.models import SessionState
from tests.discord.conftest import (
    TENANT,
    TOKEN,
    Bot,
    Stack,
    callback,
    final_text,
    is_ephemeral,
)
from tests.fakes.discord import FakeDiscord


async def start_session(fake: FakeDiscord, member: dict[str, Any], **options: Any):
    pending = await fake.slash(member, "start", **options)
    body = await callback(pending)
    assert body["type"] == 5 and is_ephemeral(body)  # deferred, thinking, only for the caller
    reply = await final_text(fake, pending)
    thread = await fake.wait_for(lambda: fake.threads() and fake.threads()[-1])
    anchor = fake.messages[thread["id"]]
    return reply, anchor, thread


async def test_start_chat_stop(fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict) -> None:
    await stack.store.grant(TENANT, 100, "test")
    reply, anchor, thread = await start_session(fake, alice, avatar="fake:ava-1", minutes=5)

    assert "Ava" in reply and f"<#{thread['id']}>" in reply
    # the public anchor message: embed + link button + Stop button
    assert not anchor["flags"] & 64 and anchor["channel_id"] == fake.channel_id
    embed = anchor["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Vendor"] == "Fake" and fields["Length"] == "5 min"
    assert fields["Ends"].startswith("<t:") and fields["Started by"] == f"<@{alice['user']['id']}>"
    buttons = anchor["components"][0]["components"]
    assert buttons[0]["style"] == 5 and buttons[0]["url"].startswith("http://viewer.test/v/")
    (record,) = await stack.service.open_sessions(TENANT)
    assert buttons[1]["custom_id"] == f"avatar:stop:{record.id}"
    assert record.state is SessionState.LIVE and record.started_by == alice["user"]["id"]

    # a message in the thread reaches the avatar as "ask"; its answer comes back in the thread
    asked = await fake.user_message(alice, thread["id"], "what is two plus two?")
    answer = await fake.wait_for(lambda: [
        m for m in fake.channel_messages(thread["id"]) if "You asked: what is two plus two?"
        in m["content"]])
    assert answer[0]["author"]["id"] == fake.bot_user["id"]
    assert answer[0]["allowed_mentions"] == {"parse": []}
    assert stack.provider.called("ask") == ["what is two plus two?"]
    await fake.wait_for(lambda: asked["reactions"])
    # !say overrides the mode once
    await fake.user_message(alice, thread["id"], "!say Hello everyone")
    await fake.wait_for(lambda: stack.provider.called("say") == ["Hello everyone"])

    # Stop button -> summary in the thread, credits settled, ledger consistent
    click = await fake.click(alice, anchor, f"avatar:stop:{record.id}")
    assert is_ephemeral(await callback(click))
    assert "Stopped Ava: credits used 1, refunded 4" in await final_text(fake, click)
    summary = await fake.wait_for(lambda: [
        m for m in fake.channel_messages(thread["id"]) if m["content"].startswith("🏁")])
    assert "credits used 1, refunded 4" in summary[0]["content"]
    done = await stack.service.get(record.id)
    assert done.state is SessionState.ENDED and done.settled == 1
    assert (await stack.store.balance(TENANT)).available == 99
    assert await stack.store.verify() == []
    # the anchor's Stop button is now disabled
    await fake.wait_for(lambda: anchor["components"][0]["components"][-1].get("disabled"))


async def test_bots_and_own_messages_are_not_forwarded(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    _, _, thread = await start_session(fake, alice)
    other_bot = fake.add_member(fake.user("otherbot", bot=True), [])
    await fake.user_message(other_bot, thread["id"], "I am a bot")
    await fake.user_message(fake.members[fake.bot_user["id"]], thread["id"], "I am me")
    await fake.user_message(alice, thread["id"], "I am a person")
    await fake.wait_for(lambda: stack.provider.called("ask"))
    await fake.wait_for(lambda: [m for m in fake.channel_messages(thread["id"])
                                 if "You asked: I am a person" in m["content"]])
    # the bot's own answer came back over the gateway too, and was not forwarded either
    assert stack.provider.called("ask") == ["I am a person"]


async def test_thread_creation_refused_stops_the_session(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict, caplog
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    fake.fail("POST", r"/threads$", 403, 50013)
    pending = await fake.slash(alice, "start", minutes=5)
    assert (await callback(pending))["type"] == 5
    text = await final_text(fake, pending)
    assert "lack a permission" in text
    (record,) = await stack.store.list_sessions()
    assert record.state is SessionState.ENDED and record.end_reason.startswith("could not open")
    assert stack.provider.open == {}
    assert (await stack.store.balance(TENANT)).pending == 0
    assert await stack.store.verify() == []
    assert TOKEN not in caplog.text


async def test_debug_logging_keeps_viewer_links_and_interaction_tokens_out(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict, caplog
) -> None:
    # LOG_LEVEL=DEBUG is a documented setting: discord.py then logs every REST body it sends
    # (the viewer link) and every gateway event it receives (interaction tokens, by URL too).
    import logging

    caplog.set_level(logging.DEBUG)
    await stack.store.grant(TENANT, 100, "test")
    pending = await fake.slash(alice, "start", avatar="fake:ava-1", minutes=5)
    await callback(pending)
    await final_text(fake, pending)
    thread = await fake.wait_for(lambda: fake.threads() and fake.threads()[-1])
    anchor = fake.messages[thread["id"]]
    viewer_token = anchor["components"][0]["components"][0]["url"].split("/v/")[1]
    # The fake Discord's own access log is the fake's, not ours (ours has none).
    text = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    # debug logging is on: the store's writer logged each call at DEBUG
    assert any(r.levelno == logging.DEBUG and r.name == "bot.storage.writer"
               for r in caplog.records)
    assert viewer_token not in text
    assert pending.token not in text
    assert TOKEN not in text


async def test_an_unexpected_failure_in_a_thread_message_is_answered_like_a_command(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    """Thread messages and commands share one error path (``errors.user_text``)."""
    from bot.platforms.discord.errors import INTERNAL, user_text

    await stack.store.grant(TENANT, 100, "test")
    _, _, thread = await start_session(fake, alice, avatar="fake:ava-1", minutes=5)
    # A bug-like failure, not an AvatarBotError: its words must never reach the chat.
    stack.provider.fail["ask"] = RuntimeError("internal detail: secret-ish stack")
    late = await fake.user_message(alice, thread["id"], "hello?")
    reply = await fake.wait_for(lambda: [m for m in fake.channel_messages(thread["id"])
                                         if m["content"].startswith("⚠️")])
    assert reply[0]["content"] == user_text(RuntimeError()) == "⚠️ " + INTERNAL
    assert "secret-ish" not in reply[0]["content"] and not late["reactions"]
