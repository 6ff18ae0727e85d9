"""LiveAvatar in real headless Chromium, with a fake ``LivekitClient`` in place of the bundle:
the page joins exactly the session's room, publishes the relayed commands on ``agent-control``,
and reports what arrives on ``agent-response`` (lines in the transcript, the vendor's end)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.core.models import SessionState
from bot.core.reaper import SessionReaper
from tests.web.conftest import (
    FAKE_LIVEKIT,
    guard_page,
    keep_errors,
    new_context,
    serve_fake,
    until,
    web_stack,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

@pytest_asyncio.fixture(loop_scope="module")
async def stack(tmp_path: Path) -> AsyncIterator[Any]:
    async with web_stack(tmp_path, vendors=("liveavatar",)) as s:
        yield s


async def published(page: Any) -> list[dict[str, Any]]:
    return await page.evaluate("window.__livekitFake.published")


async def test_liveavatar_viewer_joins_relays_commands_and_reports_events(
    browser: Any, stack: Any
) -> None:
    record = await stack.start("liveavatar", minutes=3)
    fake = stack.vendors["liveavatar"]
    vid = record.provider_session_id
    reaper = SessionReaper(stack.service, interval_s=3600)
    watcher = asyncio.create_task(reaper.watch_vendor_ends())
    ctx = await new_context(browser)
    page = await ctx.new_page()
    errors = keep_errors(page)
    aborted = await guard_page(page, stack.url)
    await serve_fake(page, "livekit-client.umd.js", FAKE_LIVEKIT)
    try:
        await page.goto(stack.link(record.id))
        await until(page, "window.__livekitFake.connects.length === 1")
        assert await page.evaluate("window.__livekitFake.connects") == [
            [record.viewer.url, record.viewer.token]]
        await until(page, "window.avatarViewer.status === 'live'")

        # say and ask: the page publishes LiveAvatar's commands on agent-control.
        await stack.service.say(record.id, "Welcome to the shop!", author="Ann")
        await stack.service.ask(record.id, "When do you open?", author="Ann")
        await until(page, "window.__livekitFake.published.length === 2")
        sent = await published(page)
        assert all(item["options"] == {"reliable": True, "topic": "agent-control"}
                   for item in sent)
        for item in sent:
            fake.room(vid).publish(item["options"]["topic"], item["text"])
        assert fake.sessions[vid].said == ["Welcome to the shop!"]
        assert fake.sessions[vid].asked == ["When do you open?"]

        # The avatar's events reach the page on agent-response; the page reports them.
        for message in fake.viewer_messages.pop(vid, []):
            await page.evaluate("(m) => window.__livekitFake.deliver(m, 'agent-response')",
                                message)
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#transcript .line.avatar')]"
            ".some((li) => li.textContent.includes('You asked: When do you open?.'))",
            timeout=5_000)
        avatar_lines = await page.locator("#transcript .line.avatar").all_text_contents()
        assert sum("Welcome to the shop!" in line for line in avatar_lines) == 1  # no echo

        # LiveAvatar ends the session (credits out): the page hears it, the session ends.
        await fake.end_session(vid, "INSUFFICIENT_CREDITS")
        for message in fake.viewer_messages.pop(vid, []):
            await page.evaluate("(m) => window.__livekitFake.deliver(m, 'agent-response')",
                                message)
        for _ in range(100):
            if (await stack.store.get_session(record.id)).state is SessionState.ENDED:
                break
            await asyncio.sleep(0.05)
        ended = await stack.store.get_session(record.id)
        assert ended.state is SessionState.ENDED
        assert ended.end_reason == "the LiveAvatar account ran out of credits"
        assert await stack.store.verify() == []
        assert errors == [] and aborted == []
        assert json.dumps(await published(page)).count(fake.api_key) == 0
    finally:
        watcher.cancel()
        await ctx.close()
