"""A vendor ends a session on its own: every provider, with its fake vendor, the real service,
the real SQLite store and the real reaper.

The session must end in the store within one reaper tick (at once where an event says so), its
end summary must say why in plain words, and the credits must settle at the time the vendor
ended it, not at the time we noticed. Pricing here is one credit a second, so the two differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.core.errors import ProviderSessionGone
from bot.core.events import Ended, EventHub
from bot.core.models import Pricing, SessionRecord, SessionState
from bot.core.provider import SessionStatusSource
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService, StartCommand
from bot.storage import SqliteStore
from tests.providers.conftest import AVATARS, build, make_fake

PER_SECOND = Pricing(credits_per_minute=60, granularity_s=1, minimum_s=0)
TENANT = "discord:900"


@dataclass
class World:
    """One provider behind its fake, with the service, store and reaper around it."""

    name: str
    fake: Any
    store: SqliteStore
    events: EventHub
    service: SessionService
    reaper: SessionReaper
    ended: list[Ended]

    async def start(self, minutes: int = 2) -> SessionRecord:
        await self.store.grant(TENANT, 1000, "test")
        return await self.service.start(StartCommand(
            tenant=TENANT, user="u1", provider=self.provider_name,
            avatar=AVATARS[self.name], minutes=minutes,
        ))

    @property
    def provider_name(self) -> str:
        return self.name.split("-")[0]


@contextlib.asynccontextmanager
async def world(name: str, tmp_path: Path, *, poll_every_tick: bool = True,
                **fake_kw: Any) -> AsyncIterator[World]:
    events = EventHub(queue_size=10_000)
    fake_cls = type(make_fake(name))
    extra: dict[str, Any] = {}
    if name in ("akool", "heygen-livekit") and poll_every_tick:
        extra["status_interval_s"] = 0.0  # ask at every tick: the test drives the ticks
    async with httpx.AsyncClient() as http, fake_cls(hang_s=5.0, **fake_kw) as fake:
        provider = build(name, fake, http, events, pricing=PER_SECOND, **extra)
        store = await SqliteStore.open(tmp_path / "v.db")
        service = SessionService(store=store, providers={provider.name: provider},
                                 events=events, start_timeout_s=5, stop_timeout_s=5)
        reaper = SessionReaper(service, interval_s=0.05, orphan_sweep_s=3600)
        ended: list[Ended] = []

        async def collect() -> None:
            async with events.subscribe(None) as queue:
                while True:
                    event = await queue.get()
                    if isinstance(event, Ended):
                        ended.append(event)

        collector = asyncio.create_task(collect())
        watcher = asyncio.create_task(reaper.watch_vendor_ends())
        await asyncio.sleep(0)
        try:
            yield World(name, fake, store, events, service, reaper, ended)
        finally:
            for task in (collector, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await provider.aclose()
            await store.close()


async def eventually(check: Callable[[], Any], within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def assert_settled_at(w: World, record_id: str, vendor_end: datetime,
                            noticed: datetime, reason: str) -> None:
    """Ended in the store, the thread's summary says why, credits settle at ``vendor_end``."""
    final = await w.service.get(record_id)
    assert final.state is SessionState.ENDED
    assert final.end_reason == reason
    assert final.ending_at is not None and final.started_at is not None
    assert abs((final.ending_at - vendor_end).total_seconds()) < 0.25
    used = (final.ending_at - final.started_at).total_seconds()
    assert final.settled == PER_SECOND.cost(used)
    # what we would have charged had we settled when we noticed: strictly more
    assert PER_SECOND.cost((noticed - final.started_at).total_seconds()) > final.settled
    await eventually(lambda: w.ended)
    (summary,) = [e.summary for e in w.ended if e.session_id == record_id]
    assert summary.reason == reason and summary.settled == final.settled
    assert summary.released == final.reserved - final.settled
    assert await w.store.verify() == []
    balance = await w.store.balance(TENANT)
    assert balance.pending == 0 and balance.settled == final.settled


async def test_a2e_room_released_at_its_expiry_ends_within_one_tick(tmp_path: Path) -> None:
    async with world("a2e", tmp_path, grant_s=1) as w:
        record = await w.start()
        room = w.fake.rooms[record.provider_session_id]
        await asyncio.sleep(2.2)  # A2E released the room after 1 s; we have not looked yet
        noticed = datetime.now(UTC)
        await w.reaper.tick()
        vendor_end = datetime.fromtimestamp(room.expires_at, tz=UTC)
        await assert_settled_at(w, record.id, vendor_end, noticed,
                                "A2E released the avatar's room: its booked time ran out")
        assert room.left  # we still leave, so A2E refunds what it can


@pytest.mark.parametrize("grant_s", [30, None])
async def test_a2e_sessions_are_tended_at_their_room_expiry_not_polled(
        tmp_path: Path, grant_s: int | None) -> None:
    """A2E's room end is known at the start: the reaper files it in its index and does nothing
    for the session before then (a poll every 5 s was 100 checks a second at 500 sessions)."""
    async with world("a2e", tmp_path, grant_s=grant_s or 3600) as w:
        record = await w.start(minutes=2)
        room = w.fake.rooms[record.provider_session_id]
        await w.reaper.tick()  # builds the index
        due = w.reaper.due_at(record.id)
        assert due is not None and record.expires_at is not None
        if grant_s:  # A2E releases the room after 30 s: that is the session's next duty
            assert abs(due - room.expires_at) < 0.01
        else:  # A2E's room outlasts our 2 minutes: our own expiry comes first
            assert abs(due - record.expires_at.timestamp()) < 0.01
        for _ in range(3):
            await w.reaper.tick()
        assert w.reaper.due_at(record.id) == due
        assert (await w.service.get(record.id)).state is SessionState.LIVE


async def test_a2e_asking_a_released_room_ends_the_session_and_says_so(tmp_path: Path) -> None:
    async with world("a2e", tmp_path) as w:
        record = await w.start()
        w.fake.release_room(record.provider_session_id)
        with pytest.raises(ProviderSessionGone, match="already ended"):
            await w.service.ask(record.id, "Still there?")
        final = await w.service.get(record.id)
        assert final.state is SessionState.ENDED
        assert final.end_reason == "A2E closed the avatar's room"
        await eventually(lambda: w.ended)
        assert [e.summary.reason for e in w.ended] == ["A2E closed the avatar's room"]
        assert await w.store.verify() == []


async def test_akool_detail_showing_closed_ends_the_session(tmp_path: Path) -> None:
    async with world("akool", tmp_path) as w:
        record = await w.start()
        await asyncio.sleep(1.1)
        await w.reaper.tick()  # AKool still says processing (2): it stays live
        assert (await w.service.get(record.id)).state is SessionState.LIVE
        last_open = datetime.now(UTC)
        w.fake.end_session(record.provider_session_id, status=3)
        await asyncio.sleep(1.5)
        noticed = datetime.now(UTC)
        await w.reaper.tick()
        await assert_settled_at(
            w, record.id, last_open, noticed,
            "AKool closed the session (its time ran out or it was ended on AKool's side)")
        details = w.fake.calls("/liveAvatar/session/detail")
        assert len(details) == 2 and details[-1].query == {"id": record.provider_session_id}


async def test_akool_is_asked_at_a_bounded_rate_and_a_failed_session_ends(tmp_path: Path):
    async with world("akool", tmp_path, poll_every_tick=False) as w:
        record = await w.start()
        for _ in range(5):
            await w.reaper.tick()  # five ticks, one detail read: at most one per 30 s
        assert len(w.fake.calls("/liveAvatar/session/detail")) == 1
        w.fake.end_session(record.provider_session_id, status=4)
        # 30 s later (a reaper that has not asked yet, e.g. after a restart)
        await SessionReaper(w.service, orphan_sweep_s=3600).tick()
        final = await w.service.get(record.id)
        assert final.state is SessionState.ENDED
        assert final.end_reason == "AKool reported that the avatar session failed"
        assert await w.store.verify() == []


async def test_heygen_stream_closing_ends_the_session_and_keeps_our_window(tmp_path: Path) -> None:
    async with world("heygen-livekit", tmp_path) as w:
        record = await w.start(minutes=2)
        new = w.fake.calls("/streaming.new")[-1].json
        assert new["session_duration_limit"] == record.requested_s == 120
        assert w.fake.sessions[record.provider_session_id].duration_limit == 120
        await asyncio.sleep(1.1)
        await w.reaper.tick()  # listed by streaming.list: live
        assert (await w.service.get(record.id)).state is SessionState.LIVE
        last_open = datetime.now(UTC)
        w.fake.end_session(record.provider_session_id)
        await asyncio.sleep(1.5)
        noticed = datetime.now(UTC)
        await w.reaper.tick()
        await assert_settled_at(
            w, record.id, last_open, noticed,
            "HeyGen closed the stream (idle timeout, credits or an error on HeyGen's side)")


async def test_heygen_sessions_polled_together_share_one_listing(tmp_path: Path) -> None:
    """HeyGen tells a session's status only through the account's listing: N live sessions
    polled in one tick cost one ``streaming.list``, not N, and a closed one is still noticed."""
    n = 6
    async with world("heygen-livekit", tmp_path, max_concurrent=n) as w:
        await w.store.grant(TENANT, 1000, "test")
        await w.store.set_limits(TENANT, max_concurrent=n, daily_user_credits=100_000)
        records = [await w.start() for _ in range(n)]
        await w.reaper.sweep_orphans(force=True)  # the sweep's own listing, out of the count
        listings = len(w.fake.calls("/streaming.list"))
        await w.reaper.tick()  # every session's status, asked at each tick here
        assert len(w.fake.calls("/streaming.list")) == listings + 1
        await asyncio.sleep(0.1)
        w.fake.end_session(records[0].provider_session_id)
        await w.reaper.tick()  # a new poll: a new listing, which no longer has the first
        assert len(w.fake.calls("/streaming.list")) == listings + 2
        states = [(await w.service.get(r.id)).state for r in records]
        assert states == [SessionState.ENDED] + [SessionState.LIVE] * (n - 1)
        # Concurrent polls (not through the reaper) share the listing in flight too.
        provider = w.service.providers["heygen"]
        assert isinstance(provider, SessionStatusSource)
        answers = await asyncio.gather(
            *(provider.status(r.provider_session()) for r in  # type: ignore[arg-type]
              [await w.service.get(r.id) for r in records[1:]])
        )
        assert [a.open for a in answers] == [True] * (n - 1)
        assert len(w.fake.calls("/streaming.list")) == listings + 3


async def test_heygen_task_on_a_closed_session_ends_it(tmp_path: Path) -> None:
    async with world("heygen-livekit", tmp_path) as w:
        record = await w.start()
        w.fake.end_session(record.provider_session_id)
        with pytest.raises(ProviderSessionGone):
            await w.service.say(record.id, "Hello?")
        final = await w.service.get(record.id)
        assert final.state is SessionState.ENDED
        assert "HeyGen closed the stream" in (final.end_reason or "")
        assert await w.store.verify() == []


async def test_a_keep_alive_answering_gone_ends_the_session_in_that_tick(tmp_path: Path):
    async with world("liveavatar", tmp_path) as w:
        record = await w.start()
        vid = record.provider_session_id
        w.fake.sessions[vid].sockets.clear()  # neither the socket nor a page tells us
        await w.fake.end_session(vid, "IDLE_TIMEOUT")
        w.fake.viewer_messages.pop(vid, None)
        await w.reaper.tick()  # the keep-alive answers "Session is not active"
        assert w.fake.calls("/sessions/keep-alive")
        final = await w.service.get(record.id)
        assert final.state is SessionState.ENDED
        assert final.end_reason == "LiveAvatar ended the session"
        await eventually(lambda: w.ended)
        assert [e.summary.reason for e in w.ended] == ["LiveAvatar ended the session"]
        assert await w.store.verify() == []


async def test_liveavatar_session_stopped_ends_it_at_once(tmp_path: Path) -> None:
    async with world("liveavatar", tmp_path) as w:
        record = await w.start()
        vid = record.provider_session_id
        w.fake.sessions[vid].sockets.clear()  # the page tells us, not the socket
        await w.fake.end_session(vid, "INSUFFICIENT_CREDITS")
        for raw in w.fake.viewer_messages.pop(vid, []):
            await w.service.viewer_data(record.id, raw)  # what the page forwards
        told_at = datetime.now(UTC)
        await eventually(lambda: w.ended)
        final = await w.service.get(record.id)
        assert final.state is SessionState.ENDED
        assert final.end_reason == "the LiveAvatar account ran out of credits"
        assert final.ending_at is not None and final.ending_at <= told_at
        assert w.ended[0].summary.reason == "the LiveAvatar account ran out of credits"
        assert await w.store.verify() == []
