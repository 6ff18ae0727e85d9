"""Issue 15's lean message path and constant-time lookups, held functionally (no timings).

Activity times are kept in memory and stored in batches, yet the idle rule sees them at once
and after a restart; channel-scoped lookups find the session of the channel asked about; the
gauges follow starts, stops and failures; a shutdown ends every session, a bounded number at a
time, with the ledger clean. Tests taking ``backend``/``store`` run on a real SQLite file and on
this run's PostgreSQL database (``tests/backends.py``); the vendor is the in-memory fake.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import httpx
import pytest

from bot.app import Services, _end_sessions
from bot.core.errors import SessionNotLive
from bot.core.events import EventHub, Transcript
from bot.core.links import ViewerLinks
from bot.core.models import ChatBinding, ProviderSession, SessionState, utcnow
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.settings import Settings
from bot.storage import SqliteSlackInstallStore, SqliteStore, activity
from bot.storage.postgres import PostgresStore
from bot.storage.secrets import SecretBox
from tests.backends import open_store
from tests.core.conftest import TENANT, cmd
from tests.fakes.provider import FakeProvider, unavailable


async def roomy(store: SqliteStore | PostgresStore, tenant: str = TENANT) -> None:
    """Credits and limits for many sessions at once (the defaults allow two)."""
    await store.grant(tenant, 10_000, "admin")
    await store.set_limits(tenant, max_concurrent=50, daily_user_credits=10_000)


async def test_activity_is_seen_at_once_and_stored_at_close(backend, store_location, hub, fake):
    store = await open_store(backend, store_location)
    service = SessionService(store=store, providers={"fake": fake}, events=hub)
    await store.grant(TENANT, 100, "admin")
    live = await service.start(cmd())
    await store.set_session_fields(live.id, last_activity_at=utcnow() - timedelta(seconds=400))
    await service.say(live.id, "still here")
    noted = (await store.get_session(live.id)).last_activity_at
    assert utcnow() - noted < timedelta(seconds=5)
    await store.close()
    # A restart: the new process reads the time the old one noted, and its idle rule counts
    # from there (ended at +301 s, not before).
    store = await open_store(backend, store_location, fresh=False)
    try:
        assert (await store.get_session(live.id)).last_activity_at == noted
        service = SessionService(store=store, providers={"fake": fake}, events=hub)
        reaper = SessionReaper(service, idle_timeout_s=300)
        await reaper.tick(now=noted + timedelta(seconds=250))
        assert (await store.get_session(live.id)).state is SessionState.LIVE
        await reaper.tick(now=noted + timedelta(seconds=301))
        record = await store.get_session(live.id)
        assert record.state is SessionState.ENDED and "nobody wrote" in (record.end_reason or "")
    finally:
        await store.close()


async def test_a_batched_write_stores_activity_without_a_close(
    backend, store_location, store, service
):
    await store.grant(TENANT, 100, "admin")
    live = await service.start(cmd())
    await service.say(live.id, "hello")
    noted = (await store.get_session(live.id)).last_activity_at
    await store.flush_activity()
    # A second store on the same database has no memory of the first one's notes.
    other = await open_store(backend, store_location, fresh=False)
    try:
        assert (await other.get_session(live.id)).last_activity_at == noted
    finally:
        await other.close()


async def test_the_timer_stores_a_batch_on_its_own(backend, store_location, hub, fake,
                                                   monkeypatch):
    monkeypatch.setattr(activity, "ACTIVITY_FLUSH_S", 0.05)
    store = await open_store(backend, store_location)
    other = await open_store(backend, store_location, fresh=False)
    try:
        service = SessionService(store=store, providers={"fake": fake}, events=hub)
        await store.grant(TENANT, 100, "admin")
        live = await service.start(cmd())
        await store.set_session_fields(live.id, last_activity_at=utcnow() - timedelta(minutes=9))
        await service.say(live.id, "hello")
        noted = (await store.get_session(live.id)).last_activity_at
        assert (await other.get_session(live.id)).last_activity_at < noted  # not stored yet
        for _ in range(100):  # no flush, no close: only the timer can store it
            await asyncio.sleep(0.05)
            if (await other.get_session(live.id)).last_activity_at == noted:
                break
        assert (await other.get_session(live.id)).last_activity_at == noted
    finally:
        await other.close()
        await store.close()


async def test_a_batch_never_moves_a_stored_time_backwards(backend, store_location, store,
                                                           service):
    await store.grant(TENANT, 100, "admin")
    live = await service.start(cmd())
    older = utcnow() - timedelta(seconds=30)
    store.note_activity(live.id, older)
    # Meanwhile a newer time is stored directly (on another worker, say).
    newer = utcnow() + timedelta(seconds=30)
    await store.set_session_fields(live.id, last_activity_at=newer)
    await store.flush_activity()
    other = await open_store(backend, store_location, fresh=False)
    try:
        assert (await other.get_session(live.id)).last_activity_at == newer
        assert (await store.get_session(live.id)).last_activity_at == newer
    finally:
        await other.close()


async def test_the_idle_rule_still_ends_a_session_nobody_writes_in(service, store):
    await store.grant(TENANT, 100, "admin")
    live = await service.start(cmd())
    await service.say(live.id, "once")
    reaper = SessionReaper(service, idle_timeout_s=300)
    await reaper.tick()  # indexes the session
    later = (await store.get_session(live.id)).last_activity_at + timedelta(seconds=301)
    await reaper.tick(now=later)
    assert (await store.get_session(live.id)).state is SessionState.ENDED


async def test_channel_lookups_find_the_session_of_that_channel_only(service, store):
    other_tenant = "discord:200"
    await roomy(store)
    await roomy(store, other_tenant)
    records = {}
    for key, tenant, channel in [("a1", TENANT, "C1"), ("a2", TENANT, "C1"), ("b", TENANT, "C2"),
                                 ("other", other_tenant, "C1")]:
        record = await service.start(cmd(tenant=tenant))
        await store.bind_chat(ChatBinding(session_id=record.id, platform="slack",
                                          channel_id=channel, thread_id=f"{channel}:{key}"))
        records[key] = record
    # Same channel id on another platform: not a match.
    await store.bind_chat(ChatBinding(session_id=records["b"].id, platform="discord",
                                      channel_id="C1", thread_id="D1"))
    in_c1 = await service.open_sessions_in(TENANT, "slack", "C1")
    assert [r.id for r in in_c1] == [records["a2"].id, records["a1"].id]  # newest first
    assert [r.id for r in await service.open_sessions_in(TENANT, "slack", "C2")] == [
        records["b"].id
    ]
    await service.stop(records["a2"].id)
    assert [r.id for r in await service.open_sessions_in(TENANT, "slack", "C1")] == [
        records["a1"].id
    ]
    assert await service.open_sessions_in(TENANT, "slack", "C9") == []
    assert {r.id for r in await service.open_sessions(TENANT)} == {
        records["a1"].id, records["b"].id
    }


async def _store_counts(store: SqliteStore | PostgresStore) -> dict[SessionState, int]:
    counts: dict[SessionState, int] = {}
    for record in await store.open_sessions():
        counts[record.state] = counts.get(record.state, 0) + 1
    return counts


async def test_gauges_match_the_store_after_starts_stops_and_failures(store, hub, fake):
    await roomy(store)
    earlier = SessionService(store=store, providers={"fake": fake}, events=hub)
    before = await earlier.start(cmd())  # started before the counts are loaded
    service = SessionService(store=store, providers={"fake": fake}, events=hub)
    await service.counts.load()
    started = [await service.start(cmd()) for _ in range(4)]
    await service.stop(started[0].id)
    fake.fail["start"] = unavailable()
    try:
        await service.start(cmd())
    except Exception:  # noqa: BLE001 - the failure itself is what is counted
        pass
    fake.fail.pop("start")
    fake.fail["stop"] = unavailable()
    await service.stop(started[1].id)  # the vendor stop fails: it stays ending
    fake.fail.pop("stop")
    await service.vendor_ended(before.id, "the vendor ended it")
    stored = await _store_counts(store)
    assert stored == {SessionState.LIVE: 2, SessionState.ENDING: 1}
    for state in (SessionState.PENDING, SessionState.LIVE, SessionState.ENDING):
        assert service.counts.count(state) == stored.get(state, 0), state
    assert service.counts.open == 3
    # The reaper's pending timeout fails a start stuck at the vendor; the gauge follows.
    fake.start_delay = 5.0
    stuck = asyncio.create_task(service.start(cmd()))
    await asyncio.sleep(0.1)
    assert service.counts.count(SessionState.PENDING) == 1
    await SessionReaper(service, pending_timeout_s=0.0).tick()
    assert service.counts.count(SessionState.PENDING) == 0
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    stored = await _store_counts(store)
    assert service.counts.open == sum(stored.values())


class CountingVendor(FakeProvider):
    """The fake vendor with a slow stop that records how many stops overlap."""

    def __init__(self, events: EventHub) -> None:
        super().__init__(events, survives_restart=False)
        self.stop_delay = 0.05
        self.stopping = 0
        self.most = 0

    async def stop(self, session: ProviderSession) -> None:
        self.stopping += 1
        self.most = max(self.most, self.stopping)
        try:
            await super().stop(session)
        finally:
            self.stopping -= 1


async def test_shutdown_ends_every_session_a_bounded_number_at_a_time(tmp_path):
    hub = EventHub()
    vendor = CountingVendor(hub)
    store = await SqliteStore.open(tmp_path / "s.db")
    settings = Settings(_env_file=None, shutdown_parallelism=4)  # type: ignore[call-arg]
    service = SessionService(store=store, providers={"fake": vendor}, events=hub)
    try:
        await roomy(store)
        ids = [(await service.start(cmd(user=f"u{i}"))).id for i in range(12)]
        async with httpx.AsyncClient() as http:
            services = Services(
                settings, http, store, hub, {"fake": vendor}, service, SessionReaper(service),
                ViewerLinks(b"k" * 32, "http://x"), slack_installs=SqliteSlackInstallStore(store),
                tenants=TenantService(store), bindings=ChatBindings(store),
                box=SecretBox.from_settings(None, tmp_path / "s.db"),
            )
            await _end_sessions(services)
        for sid in ids:
            assert (await store.get_session(sid)).state is SessionState.ENDED
        assert vendor.open == {}
        assert 1 < vendor.most <= 4
        assert await store.verify() == []
    finally:
        await store.close()


async def test_transcript_lines_are_kept_in_order_and_the_last_batch_at_shutdown(service, store):
    # Lines are written in batches (one transaction per TRANSCRIPT_BATCH_S, not per message):
    # a reader still sees every line published so far, and stopping the keeper (a shutdown)
    # writes what was waiting.
    await store.grant(TENANT, 100, "admin")
    live = await service.start(cmd())
    keeper = asyncio.create_task(service.keep_transcripts())
    await asyncio.sleep(0)  # the keeper runs
    for i in range(5):
        await service.ask(live.id, f"question {i}")
    lines = await service.transcript(live.id)
    assert [line.text for line in lines if line.speaker == "user"] == [
        f"question {i}" for i in range(5)]
    await service.ask(live.id, "last words")
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    kept = await store.transcript(live.id)  # the store itself, not through the service
    assert [line.text for line in kept if line.speaker == "user"][-1] == "last words"
    assert len(kept) == len({(line.at, line.speaker, line.text) for line in kept})  # once each


async def test_thread_bindings_are_remembered_yet_a_thread_bound_elsewhere_is_found(service,
                                                                                   store):
    # Each worker remembers the thread bindings it made or found (no store read per message);
    # a thread it found unbound is asked again, so a session another worker starts in it later
    # still gets its messages.
    await roomy(store)
    here, elsewhere = ChatBindings(store), ChatBindings(store)
    first = await service.start(cmd())
    await here.bind(ChatBinding(session_id=first.id, platform="slack", channel_id="C1",
                                thread_id="C1:1.0"))
    assert (await here.for_thread("slack", "C1:1.0")).session_id == first.id
    assert (await elsewhere.for_thread("slack", "C1:1.0")).session_id == first.id
    assert await here.for_thread("slack", "C1:2.0") is None
    second = await service.start(cmd())
    await elsewhere.bind(ChatBinding(session_id=second.id, platform="slack", channel_id="C1",
                                     thread_id="C1:2.0"))
    assert (await here.for_thread("slack", "C1:2.0")).session_id == second.id
    assert await here.for_thread("discord", "C1:2.0") is None  # per platform


async def test_a_message_sees_at_once_a_session_another_process_is_ending(tmp_path, hub, fake):
    # SQLite: the thread-message path reads the session on a read-only connection of its own;
    # what another connection (the CLI's `sessions stop`) committed is seen by the next read.
    path = tmp_path / "bot.db"
    store, other = await SqliteStore.open(path), None
    try:
        service = SessionService(store=store, providers={"fake": fake}, events=hub)
        spoken: list[str] = []
        hub.listen(lambda e: spoken.append(e.text) if isinstance(e, Transcript)
                   and e.speaker == "avatar" else None)
        await store.grant(TENANT, 100, "admin")
        live = await service.start(cmd())
        await service.say(live.id, "hello")
        assert spoken == ["hello"]
        other = await SqliteStore.open(path)
        await other.begin_end(live.id, "stopped from the command line", utcnow())
        with pytest.raises(SessionNotLive):
            await service.say(live.id, "still there?")
        assert spoken == ["hello"]  # the avatar never said it
    finally:
        if other is not None:
            await other.close()
        await store.close()
    with pytest.raises(RuntimeError):  # a closed store refuses reads as before
        await store.get_session(live.id)


async def test_open_session_ids_come_a_page_at_a_time_in_order(store, service):
    """What the cluster reaper's rescan reads: every open session once, closed ones never."""
    await roomy(store)
    records = [await service.start(cmd(user=f"u{i}")) for i in range(7)]
    await service.stop(records[3].id, "done")
    pages, after = [], None
    while True:
        page = await store.open_session_ids(after, 3)
        pages.append(page)
        if len(page) < 3:
            break
        after = page[-1]
    ids = [i for page in pages for i in page]
    assert ids == sorted(r.id for r in records if r.id != records[3].id)
    assert [len(p) for p in pages] == [3, 3, 0]
