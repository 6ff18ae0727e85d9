"""The end summary in the session's thread carries the transcript as a file, also when the stop
came from another process (``avatarbot sessions stop`` opens its own store on the same file)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bot.core.events import EventHub
from bot.core.service import SessionService
from bot.storage import SqliteStore
from tests.discord.conftest import TENANT, Bot, Stack
from tests.discord.test_session_flow import start_session
from tests.fakes.discord import FakeDiscord
from tests.fakes.provider import FakeProvider


async def test_a_stop_from_another_process_posts_the_summary_with_the_transcript(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict[str, Any]
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    keeper = asyncio.create_task(stack.service.keep_transcripts())
    watcher = asyncio.create_task(stack.service.watch_other_writers(0.05))
    other = await SqliteStore.open(stack.path)
    try:
        _, _, thread = await start_session(fake, alice, avatar="fake:ava-1", minutes=5)
        await fake.user_message(alice, thread["id"], "what is two plus two?")
        await fake.wait_for(lambda: [m for m in fake.channel_messages(thread["id"])
                                     if "You asked: what is two plus two?" in m["content"]])
        (record,) = await stack.service.open_sessions(TENANT)

        # The CLI's process: its own store, hub and provider; the vendor stop goes through it.
        hub = EventHub()
        cli = SessionService(store=other, providers={"fake": FakeProvider(hub)}, events=hub)
        await cli.stop(record.id, "stopped from the command line")

        summary = await fake.wait_for(lambda: [
            m for m in fake.channel_messages(thread["id"]) if m["content"].startswith("🏁")])
        assert "stopped from the command line" in summary[0]["content"]
        (attachment,) = summary[0]["attachments"]
        assert attachment["filename"] == f"transcript-{record.id}.txt"
        text = fake.files[attachment["id"]].decode()
        assert attachment["size"] == len(fake.files[attachment["id"]])
        lines = text.splitlines()
        assert lines[0].endswith(" UTC] alice asked: what is two plus two?"), lines
        assert "] Ava: You asked: what is two plus two?" in lines[1], lines
        # The upload was one multipart request: Discord's payload_json with files[0].
        (call,) = [c for c in fake.calls_to("POST", rf"/channels/{thread['id']}/messages")
                   if c.body and c.body.get("_files")]
        assert call.body["_files"][0][0] == "files[0]"
        assert call.body["attachments"][0]["filename"] == attachment["filename"]
        assert await stack.store.verify() == []
    finally:
        for task in (keeper, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await other.close()
