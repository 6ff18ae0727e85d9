"""The avatar's words in the thread: throttled edits, long text split, nobody pinged, warnings."""

from __future__ import annotations

import asyncio

from bot.core.events import Transcript, Warning
from bot.platforms.discord.threads import split_text
from tests.discord.conftest import TENANT, Bot, Stack
from tests.discord.test_session_flow import start_session
from tests.fakes.discord import FakeDiscord


async def open_thread(fake: FakeDiscord, stack: Stack, alice: dict) -> tuple[str, str]:
    await stack.store.grant(TENANT, 100, "test")
    _, _, thread = await start_session(fake, alice, minutes=5)
    (record,) = await stack.service.open_sessions(TENANT)
    return record.id, thread["id"]


def writes(fake: FakeDiscord, tid: str) -> list[float]:
    return [c.at for c in fake.calls if c.method in ("POST", "PATCH")
            and c.path.startswith(f"/channels/{tid}/messages")]


async def test_words_are_throttled_to_about_one_write_per_interval(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    bot.client.relay.edit_interval_s = 0.5
    sid, tid = await open_thread(fake, stack, alice)
    for i in range(12):  # the avatar talks fast: 12 lines in 1.2 s
        stack.hub.publish(Transcript(session_id=sid, speaker="avatar", text=f"line {i}"))
        await asyncio.sleep(0.1)
    await fake.wait_for(lambda: [m for m in fake.channel_messages(tid)
                                 if m["content"].endswith("line 11")])
    times = writes(fake, tid)
    assert 2 <= len(times) <= 6  # one post, then an edit about every 0.5 s, not 12 writes
    assert all(b - a >= 0.45 for a, b in zip(times, times[1:], strict=False))
    (message,) = [m for m in fake.channel_messages(tid) if m["content"].startswith("line 0")]
    assert message["content"] == "\n".join(f"line {i}" for i in range(12))


async def test_long_text_is_split_and_mentions_are_not_pinged(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    sid, tid = await open_thread(fake, stack, alice)
    long = " ".join(f"word{i}" for i in range(900)) + " @everyone"
    stack.hub.publish(Transcript(session_id=sid, speaker="avatar", text=long))
    parts = await fake.wait_for(lambda: (ms := [m for m in fake.channel_messages(tid)
                                                if m["content"].startswith("word")
                                                or "@everyone" in m["content"]])
                                and "@everyone" in ms[-1]["content"] and ms)
    assert len(parts) == 4 and all(len(m["content"]) <= 2000 for m in parts)
    assert " ".join(m["content"] for m in parts) == long
    assert all(m["allowed_mentions"] == {"parse": []} for m in parts)


async def test_warnings_and_user_lines(fake: FakeDiscord, stack: Stack, bot: Bot,
                                       alice: dict) -> None:
    sid, tid = await open_thread(fake, stack, alice)
    stack.hub.publish(Transcript(session_id=sid, speaker="user", text="not echoed"))
    stack.hub.publish(Warning(session_id=sid, text="2 minutes left", seconds_left=120))
    warned = await fake.wait_for(lambda: [m for m in fake.channel_messages(tid)
                                          if "2 minutes left" in m["content"]])
    assert warned[0]["content"] == "⏳ 2 minutes left"
    assert not [m for m in fake.channel_messages(tid) if "not echoed" in m["content"]]


def test_split_text_prefers_line_and_word_ends() -> None:
    text = "a" * 1500 + "\n" + "b" * 1500
    assert split_text(text) == ["a" * 1500, "b" * 1500]
    assert split_text("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]
    assert split_text("  ") == []


async def test_one_sessions_flood_does_not_hold_back_another_sessions_line(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict, admin: dict
) -> None:
    # Issue 16: session A floods 50 long lines, then session B says one line; each thread has
    # its own outbox, so B's line is among the first writes, not behind A's flood.
    bot.client.relay.edit_interval_s = 0.2
    await stack.store.grant(TENANT, 100, "test")
    await stack.store.set_limits(TENANT, max_concurrent=2)
    _, _, a_thread = await start_session(fake, alice, minutes=5)
    _, _, b_thread = await start_session(fake, admin, minutes=5)
    by_thread = {r.started_by: r.id for r in await stack.service.open_sessions(TENANT)}
    a_sid, b_sid = by_thread[alice["user"]["id"]], by_thread[admin["user"]["id"]]
    a_tid, b_tid = a_thread["id"], b_thread["id"]
    mark = len(fake.calls)
    for i in range(50):
        stack.hub.publish(Transcript(session_id=a_sid, speaker="avatar",
                                     text=f"flood {i} " + "x" * 1500))
    stack.hub.publish(Transcript(session_id=b_sid, speaker="avatar", text="my turn"))
    await fake.wait_for(lambda: [m for m in fake.channel_messages(b_tid)
                                 if "my turn" in m["content"]])
    order = [c.path.split("/")[2] for c in fake.calls[mark:] if c.method in ("POST", "PATCH")
             and c.path.startswith("/channels/") and "/messages" in c.path]
    assert b_tid in order[:3], order
    assert order.count(a_tid) < 50  # B did not wait for A's flood
