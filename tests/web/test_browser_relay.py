"""The viewer relay in real headless Chromium: the page is the only way to AKool's avatar.

The page runs the fake ``AgoraRTC`` (``tests/fakes/agora_fake.js``), which hands every stream
message the page sends to the fake AKool data channel (``tests/fakes/akool.py``): it checks
AKool/Agora's limits (1 KB a message, 6 KB in any 1-s window), counts a chunk received twice as
a violation, records the mode the avatar was in when each chat arrived, and answers (command
acks, replies) through the page, as the avatar does. "The thread" is what the session's events
carry to the Discord and Slack relays: avatar lines and warnings.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import WSCloseCode

from bot.core.events import AnyEvent, EventHub, Transcript, Warning
from tests.web.conftest import (
    FAKE_AGORA,
    guard_page,
    keep_errors,
    new_context,
    page_socket,
    serve_fake,
    until,
    web_stack,
    wire_akool,
)
from web.context import WEB

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def stack(tmp_path: Path) -> AsyncIterator[Any]:
    async with web_stack(tmp_path, vendors=("akool",)) as s:
        outboxes = s.events.relay
        outboxes.notice_after_s = 0.5  # tell the thread quickly (production: a few seconds)
        outboxes.confirm_timeout_s = 1.0
        yield s


class Thread:
    """What the session's events would post into its Discord or Slack thread."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []

    def avatar_lines(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Transcript)
                and e.speaker == "avatar" and e.final]

    def warnings(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Warning)]


@asynccontextmanager
async def thread_of(events: EventHub, session_id: str) -> AsyncIterator[Thread]:
    thread = Thread()
    ready = asyncio.Event()

    async def listen() -> None:
        async with events.subscribe(session_id) as queue:
            ready.set()
            while True:
                thread.events.append(await queue.get())

    task = asyncio.create_task(listen())
    await ready.wait()
    try:
        yield thread
    finally:
        task.cancel()


@asynccontextmanager
async def relay_page(browser: Any, stack: Any, record: Any, *, join_delay_ms: int = 0,
                     on_send: Any = None) -> AsyncIterator[tuple[Any, list[str]]]:
    """A new browser context (another person's browser) on the viewer link, wired to the fake
    AKool data channel (or to ``on_send``): its page and console errors; closed on exit."""
    ctx = await new_context(browser)
    try:
        if join_delay_ms:
            await ctx.add_init_script(f"window.__agoraJoinDelayMs = {join_delay_ms};")
        page = await ctx.new_page()
        errors = keep_errors(page)
        await guard_page(page, stack.url)
        await wire_akool(page, stack.vendors["akool"], on_send)
        await serve_fake(page, "agora-rtc-sdk-ng.js", FAKE_AGORA)
        await page.goto(stack.link(record.id))
        yield page, errors
    finally:
        await ctx.close()


async def eventually(check: Any, within: float = 10.0) -> None:
    """Wait until ``check()`` holds (the fake channel and the thread fill in the background)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling the fake's records
            await asyncio.sleep(0.05)


# 2,000 characters each: 3 bytes each in UTF-8 (Japanese), 4 (emoji), 2 (Arabic letters).
JAPANESE = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。" * 70)[:2000]
EMOJI = ("👋🌍🎉🐈🍣🚀💡🔥" * 250)[:2000]
ARABIC = ("مرحبا بكم في المتجر، نفتح أبوابنا في التاسعة صباحا كل يوم. " * 40)[:2000]


def channel_of(stack: Any, record: Any) -> Any:
    return stack.vendors["akool"].channel(record.provider_session_id)


async def test_a_say_sent_before_the_page_opens_is_delivered_once_it_has_joined(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("akool", minutes=3)
    channel = channel_of(stack, record)
    async with thread_of(stack.events, record.id) as thread:
        await stack.service.say(record.id, "Hello before anyone watches.", author="Ann")
        await stack.service.ask(record.id, "Are you there?", author="Ann")
        await eventually(lambda: thread.warnings(), within=5)
        await stack.service.say(record.id, "And a third one.", author="Ann")
        await asyncio.sleep(0.8)
        # Told once, not per message, with the avatar's name.
        assert thread.warnings() == [
            f"Open the viewer link so that {record.avatar_name} can hear you: 2 messages "
            "waiting."]
        assert thread.avatar_lines() == [] and channel.chats == []

        # Joining takes a while; nothing may be sent before it resolved.
        async with relay_page(browser, stack, record, join_delay_ms=400) as (page, errors):
            await eventually(lambda: len(channel.chats) == 3)
            assert channel.chats == [(1, "Hello before anyone watches."), (2, "Are you there?"),
                                     (1, "And a third one.")]
            assert channel.violations == []
            # The page never tried to send before it was in the room.
            assert await page.evaluate("window.__agoraFake.refused") == 0
            await eventually(lambda: len(thread.avatar_lines()) == 3)
            assert sorted(thread.avatar_lines()) == [
                "And a third one.", "Hello before anyone watches.", "You asked: Are you there?."]
            assert len(thread.warnings()) == 1
            await eventually(lambda: stack.events.relay.waiting(record.id) == 0, within=3)
            assert errors == []


async def test_a_reload_mid_queue_loses_nothing_and_duplicates_nothing(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("akool", minutes=3, mode="say")
    channel = channel_of(stack, record)
    async with relay_page(browser, stack, record) as (page, errors):
        await until(page, "window.avatarViewer.status === 'live'")
        await stack.service.say(record.id, JAPANESE, author="Ann")  # 6,000 bytes: 7 chunks
        await stack.service.say(record.id, ARABIC, author="Ann")
        await until(page, "window.__agoraFake.sent.length >= 2", 5_000)
        await page.reload()
        await eventually(lambda: len(channel.said) == 2)
        assert channel.violations == []  # no chunk twice, no window over 6,000 bytes
        assert channel.chats == [(1, JAPANESE), (1, ARABIC)]
        # The page acknowledged everything (the last acknowledgement may trail the send).
        await eventually(lambda: stack.events.relay.waiting(record.id) == 0, within=3)
        assert errors == []


async def test_an_acknowledgement_lost_with_the_socket_is_not_a_second_send(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("akool", minutes=3, mode="say")
    channel = channel_of(stack, record)
    hub = stack.app[WEB].hub
    cut = asyncio.Event()

    async def on_send(name: str, text: str, at_ms: float) -> list[str]:
        channel.send(text.encode(), at=at_ms / 1000)
        if len(channel.chats) == 0 and not cut.is_set() and '"idx":2' in text:
            # The vendor has the third chunk; the socket drops before the page can say so.
            cut.set()
            for viewer in hub.viewers_of(record.id):
                await viewer.ws.close(code=WSCloseCode.GOING_AWAY)
        return []

    async with relay_page(browser, stack, record, on_send=on_send) as (page, errors):
        await until(page, "window.avatarViewer.status === 'live'")
        await stack.service.say(record.id, JAPANESE, author="Ann")
        await eventually(lambda: channel.said == [JAPANESE], within=15)
        assert cut.is_set()
        # Handed again after the reconnect, the chunk already sent was acknowledged, not resent.
        assert channel.violations == []
        assert await page.evaluate("window.__agoraFake.joins.length") == 2
        await eventually(lambda: stack.events.relay.waiting(record.id) == 0, within=3)
        assert errors == []


async def test_a_takeover_by_a_second_tab_continues_the_queue(browser: Any, stack: Any) -> None:
    record = await stack.start("akool", minutes=3, mode="say")
    channel = channel_of(stack, record)
    async with relay_page(browser, stack, record) as (first, _):
        await until(first, "window.avatarViewer.status === 'live'")
        async with thread_of(stack.events, record.id) as thread:
            await stack.service.say(record.id, EMOJI, author="Ann")
            await stack.service.say(record.id, JAPANESE, author="Ann")
            await until(first, "window.__agoraFake.sent.length >= 2", 5_000)
            async with relay_page(browser, stack, record) as (second, errors):
                await until(first, "window.avatarViewer.status === 'elsewhere'")
                await eventually(lambda: len(channel.said) == 2)
                assert channel.said == [EMOJI, JAPANESE]
                assert await first.evaluate("window.__agoraFake.sent.length") >= 2
                assert await second.evaluate("window.__agoraFake.sent.length") > 0
                assert channel.violations == []
                await eventually(lambda: len(thread.avatar_lines()) == 2)
                assert thread.avatar_lines() == [EMOJI, JAPANESE]
                assert errors == []


async def test_a_message_that_waits_too_long_is_dropped_with_one_notice(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("akool", minutes=3, mode="say")
    channel = channel_of(stack, record)
    stack.events.relay.max_wait_s = 1.5
    try:
        async with thread_of(stack.events, record.id) as thread:
            await stack.service.say(record.id, "Nobody is watching this one.", author="Ann")
            await stack.service.say(record.id, "Nor this.", author="Ann")
            await eventually(lambda: len(thread.warnings()) == 2, within=5)
            waiting, dropped = thread.warnings()
            assert waiting.endswith("2 messages waiting.")
            assert dropped == ("No viewer page sent these to the avatar within 1.5 seconds, so "
                               "they were dropped: “say: Nobody is watching this one.”; "
                               "“say: Nor this.”")
            async with relay_page(browser, stack, record) as (page, _):
                await until(page, "window.avatarViewer.status === 'live'")
                await asyncio.sleep(0.5)
                assert channel.chats == [] and thread.avatar_lines() == []
    finally:
        stack.events.relay.max_wait_s = stack.settings.relay_max_wait_s


async def test_non_ascii_text_is_paced_in_bytes_and_reassembles_exactly(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("akool", minutes=3, mode="say")
    channel = channel_of(stack, record)
    async with relay_page(browser, stack, record) as (page, errors):
        await until(page, "window.avatarViewer.status === 'live'")
        for text in (JAPANESE, EMOJI, ARABIC):
            await stack.service.say(record.id, text, author="Ann")
        await eventually(lambda: len(channel.said) == 3, within=15)
        assert channel.said == [JAPANESE, EMOJI, ARABIC]
        assert channel.violations == []
        assert channel.peak_window() <= 6000
        assert channel.largest() <= 950
        # Twice (or more) as many bytes as UTF-16 units: what text.length-pacing got wrong.
        assert [len(t) for t in (JAPANESE, EMOJI, ARABIC)] == [2000] * 3
        assert [len(t.encode()) for t in (JAPANESE, EMOJI)] == [6000, 8000]
        assert errors == []


async def test_a_say_after_a_lost_set_params_is_still_spoken_word_for_word(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("akool", minutes=3, mode="ask")
    channel = channel_of(stack, record)
    provider = stack.providers["akool"]
    async with relay_page(browser, stack, record) as (page, errors):
        await until(page, "window.avatarViewer.status === 'live'")
        async with thread_of(stack.events, record.id) as thread:
            channel.lose.append("set-params")
            await stack.service.say(record.id, "Read this out exactly as written.", author="Ann")
            await eventually(lambda: len(channel.lost) == 1, within=5)
            await asyncio.sleep(0.3)
            # The switch never arrived: the adapter still thinks "dialogue", nothing else went.
            assert provider.confirmed_mode(record.id) == 2
            assert channel.chats == [] and thread.avatar_lines() == []
            await eventually(lambda: channel.chats != [], within=5)
            assert channel.chats == [(1, "Read this out exactly as written.")]
            assert provider.confirmed_mode(record.id) == 1
            await eventually(lambda: thread.avatar_lines() != [])
            assert thread.avatar_lines() == ["Read this out exactly as written."]
            assert channel.violations == [] and errors == []


def bot_chat(text: str, mid: str = "r1") -> str:
    return json.dumps({"v": 2, "type": "chat", "mid": mid, "idx": 0, "fin": True,
                       "pld": {"from": "bot", "text": text}})


async def test_forged_reports_never_reach_the_thread(
    browser: Any, stack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import aiohttp

    caplog.set_level(logging.WARNING)
    record = await stack.start("akool", minutes=3)
    deliver = "(m) => window.__agoraFake.deliver(m)"
    async with relay_page(browser, stack, record) as (page, errors):
        await until(page, "window.avatarViewer.status === 'live'")
        async with thread_of(stack.events, record.id) as thread, aiohttp.ClientSession() as http:
            # A tab that is not the relay.
            async with page_socket(http, stack.link(record.id), "?passive=1") as other:
                await other.next("hello")
                await other.ws.send_json({"type": "data", "payload": bot_chat("I am the avatar")})
                await other.ws.send_json({"type": "relayed", "ids": ["x-1"]})
                await other.ws.send_str(bot_chat("x" * (1 << 20)))  # 1 MB: over the frame limit
                assert (await other.closed()).type is aiohttp.WSMsgType.CLOSE
            # Through the relay page: a made-up shape, a well-formed line with no question
            # outstanding, one full of mentions and links, 100 in a second, 1 MB.
            await page.evaluate(deliver, json.dumps({"v": 2, "type": "chat",
                                                     "pld": {"from": "bot", "text": "no mid"}}))
            await page.evaluate(deliver, json.dumps({"v": 2, "type": "shout", "pld": {}}))
            await page.evaluate(deliver, bot_chat("Nobody asked me this."))
            await page.evaluate(deliver, bot_chat(
                "@everyone <@123> <!here> see https://evil.example/x and http://x.y"))
            await page.evaluate("""(m) => { for (let i = 0; i < 100; i++)
                window.__agoraFake.deliver(m.replace('r1', 'r' + i)); }""", bot_chat("flood"))
            await page.evaluate("(n) => window.__agoraFake.deliver('x'.repeat(n))", 1 << 20)
            await asyncio.sleep(1.0)
            assert thread.avatar_lines() == []

            # The session goes on: a real question gets its answer, mentions and links inert.
            channel_reply = "@everyone look at https://shop.example <@42>"
            await stack.service.ask(record.id, "Where is the shop?", author="Ann")
            await eventually(lambda: thread.avatar_lines() != [])
            [answer] = thread.avatar_lines()
            assert answer.startswith("You asked: Where is the shop?")
            await page.evaluate(deliver, bot_chat(channel_reply, mid="late"))
            await asyncio.sleep(0.3)
            assert len(thread.avatar_lines()) == 1  # one question, one answer
            assert errors == []

        drops = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
        for reason in ("not_active", "never got", "chat of the wrong shape", "(rate)",
                       "unknown AKool message type", "no question outstanding"):
            assert len([d for d in drops if reason in d]) == 1, (reason, drops)


async def test_mentions_and_links_in_an_answer_are_made_inert(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("akool", minutes=3)
    async with relay_page(browser, stack, record) as (page, errors):
        await until(page, "window.avatarViewer.status === 'live'")
        async with thread_of(stack.events, record.id) as thread:
            await stack.service.ask(record.id, "@everyone visit https://evil.example <@1> <!here>",
                                    author="Ann")
            await eventually(lambda: thread.avatar_lines() != [])
            [line] = thread.avatar_lines()
            for live in ("@everyone", "https://", "<@1>", "<!here>"):
                assert live not in line
            assert line.replace("\u200b", "") == (
                "You asked: @everyone visit https://evil.example <@1> <!here>.")
            assert errors == []
