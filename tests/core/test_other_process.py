"""Stops made by another process, kept transcripts, and the playground's daily refill.

"Another process" is a second store on the same database with its own service, exactly what
``avatarbot sessions stop`` opens (tests/web/test_cli_stop.py does it with real processes); on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date, timedelta
from pathlib import Path

from bot.app import refill_playground, top_up_playground
from bot.core.events import Ended, EventHub, StateChanged, Transcript
from bot.core.models import PLAYGROUND, SessionState, TranscriptLine, utcnow
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from bot.settings import Settings
from bot.storage import SqliteStore
from tests.backends import open_store
from tests.core.conftest import TENANT, cmd
from tests.fakes.provider import FakeProvider


async def test_a_stop_in_another_process_is_told_here_and_frees_in_process_sessions(
    backend: str, store_location: Path | str,
) -> None:
    # Two stores on one database (a file, or PostgreSQL), each with its own connections.
    here_store = await open_store(backend, store_location)
    there_store = await open_store(backend, store_location, fresh=False)
    here_hub, there_hub = EventHub(), EventHub()
    # In-process sessions (like the local avatar) die with their process: only "here" can free them.
    here_fake = FakeProvider(here_hub, survives_restart=False)
    there_fake = FakeProvider(there_hub, survives_restart=False)
    here = SessionService(store=here_store, providers={"fake": here_fake}, events=here_hub)
    there = SessionService(store=there_store, providers={"fake": there_fake}, events=there_hub)
    await here_store.grant(TENANT, 100, "test")
    watcher = asyncio.create_task(here.watch_other_writers(0.05))
    try:
        record = await here.start(cmd())
        assert len(here_fake.open) == 1
        async with here_hub.subscribe(record.id) as events:
            summary = await there.stop(record.id, "stopped from the command line")
            assert summary.state is SessionState.ENDED
            async with asyncio.timeout(3):
                seen = [await events.get()]
                while not isinstance(seen[-1], Ended):
                    seen.append(await events.get())
        state = next(e for e in seen if isinstance(e, StateChanged))
        assert state.state is SessionState.ENDED and state.reason == "stopped from the command line"
        ended = seen[-1]
        assert isinstance(ended, Ended) and ended.summary.reason == "stopped from the command line"
        assert here_fake.open == {}  # the process that ran it let it go
        # Told once: later changes by the other process do not repeat the end.
        await there_store.grant(TENANT, 1, "test")
        assert await here.notice_other_writers() == []
        # A stop made here is not told twice either.
        second = await here.start(cmd())
        await here.stop(second.id, "stopped here")
        await there_store.grant(TENANT, 1, "test")
        assert await here.notice_other_writers() == []
        assert await here_store.verify() == []
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await here_store.close()
        await there_store.close()


async def test_transcripts_are_kept_then_pruned_after_the_retention(store, hub, service) -> None:
    await store.grant(TENANT, 100, "test")
    keeper = asyncio.create_task(service.keep_transcripts())
    try:
        await asyncio.sleep(0)
        record = await service.start(cmd())
        await service.say(record.id, "Kept line.", author="Ann")
        hub.publish(Transcript(session_id=record.id, speaker="avatar", text="Grow", final=False))
        hub.publish(Transcript(session_id=record.id, speaker="avatar", text="Growing answer."))
        lines = await service.transcript(record.id)
        assert [(li.speaker, li.text, li.author, li.intent) for li in lines] == [
            ("user", "Kept line.", "Ann", "say"),
            ("avatar", "Kept line.", None, None),  # the fake avatar says it back
            ("avatar", "Growing answer.", None, None),
        ]  # partial lines are not kept, only their final text
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    old = utcnow().timestamp() - 3 * 3600
    await store.add_transcript_line(TranscriptLine(session_id=record.id, at=old, speaker="user",
                                                   text="Old line."))
    reaper = SessionReaper(service, transcript_retention_s=2 * 3600)
    assert await reaper.prune_transcripts(force=True) == 1
    assert [li.text for li in await store.transcript(record.id)] == [
        "Kept line.", "Kept line.", "Growing answer."]
    assert await SessionReaper(service).prune_transcripts(force=True) == 0  # no retention set


async def test_the_playground_refills_at_midnight_utc_while_running(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, playground_credits=30)  # type: ignore[call-arg]
    store = await SqliteStore.open(tmp_path / "refill.db")
    day = [date(2026, 1, 1)]
    try:
        await top_up_playground(settings, store, today=day[0])
        tenant = str(PLAYGROUND)
        assert (await store.balance(tenant)).available == 30
        # Spend most of it: a session reserves and settles.
        hub = EventHub()
        service = SessionService(store=store, providers={"fake": FakeProvider(hub)}, events=hub)
        record = await service.start(cmd(tenant=tenant, minutes=5))
        await service.stop(record.id, "done")
        spent = (await store.balance(tenant)).available
        assert spent < 30
        refill = asyncio.create_task(refill_playground(settings, store, interval_s=0.02,
                                                       today=lambda: day[0]))
        try:
            await asyncio.sleep(0.1)
            assert (await store.balance(tenant)).available == spent  # same day: nothing
            day[0] += timedelta(days=1)  # midnight UTC passes while running
            async with asyncio.timeout(3):
                while (await store.balance(tenant)).available != 30:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            refill.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refill
        assert await store.verify() == []
    finally:
        await store.close()
