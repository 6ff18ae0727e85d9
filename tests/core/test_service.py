"""The session service and reaper with the in-memory fake provider and a real SQLite file."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.core.errors import InvalidRequest, SessionNotFound, SessionNotLive
from bot.core.events import Ended, StateChanged, Transcript, Warning
from bot.core.models import Mode, SessionState, utcnow
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService, parse_prefix
from tests.core.conftest import TENANT, cmd
from tests.fakes.provider import FakeProvider, unavailable


async def drain(queue) -> list:
    await asyncio.sleep(0)
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


@pytest.fixture
async def live(service, store):
    await store.grant(TENANT, 1000, "admin")
    return await service.start(cmd(knowledge="The shop opens at nine."))


async def test_thread_messages_route_by_mode_and_prefix(service, live, hub, fake):
    async with hub.subscribe(live.id) as queue:
        assert await service.send(live.id, "When do you open?", author="ann") is Mode.ASK
        assert await service.send(live.id, "!say Hello everyone", author="bob") is Mode.SAY
        await service.set_mode(live.id, Mode.SAY)
        assert await service.send(live.id, "Welcome", author="ann") is Mode.SAY
        events = await drain(queue)
    assert fake.called("ask") == ["When do you open?"]
    assert fake.called("say") == ["Hello everyone", "Welcome"]
    lines = [(e.speaker, e.text) for e in events if isinstance(e, Transcript)]
    assert ("user", "When do you open?") in lines
    assert ("avatar", "You asked: When do you open?. I know: The shop opens at nine..") in lines
    assert [e.author for e in events if isinstance(e, Transcript) and e.speaker == "user"] == [
        "ann", "bob", "ann",
    ]


def test_prefixes_are_case_insensitive_and_only_at_the_start():
    assert parse_prefix("!SAY hi", Mode.ASK) == (Mode.SAY, "hi")
    assert parse_prefix("  !ask why?", Mode.SAY) == (Mode.ASK, "why?")
    assert parse_prefix("say !say", Mode.ASK) == (Mode.ASK, "say !say")


async def test_empty_or_huge_text_is_refused_before_the_vendor(service, live, fake):
    with pytest.raises(InvalidRequest, match="empty"):
        await service.say(live.id, "   ")
    with pytest.raises(InvalidRequest, match="too long"):
        await service.ask(live.id, "x" * 5000)
    assert fake.called("say") == [] and fake.called("ask") == []


async def test_commands_on_ended_or_unknown_or_foreign_sessions_are_clear(service, live):
    with pytest.raises(SessionNotFound):
        await service.say(live.id, "hi", tenant="discord:999")
    await service.stop(live.id)
    with pytest.raises(SessionNotLive, match="ended"):
        await service.say(live.id, "hi")
    with pytest.raises(SessionNotFound):
        await service.interrupt("nope")


async def test_stop_publishes_state_and_an_end_summary(service, live, hub):
    async with hub.subscribe(live.id) as queue:
        await service.stop(live.id, "stopped by ann")
        events = await drain(queue)
    assert [e.state for e in events if isinstance(e, StateChanged)] == [SessionState.ENDING]
    [ended] = [e for e in events if isinstance(e, Ended)]
    assert ended.summary.reason == "stopped by ann"
    assert ended.summary.settled + ended.summary.released == live.reserved


async def test_failed_vendor_stop_is_retried_until_confirmed(service, live, store, fake):
    fake.fail["stop"] = unavailable()
    summary = await service.stop(live.id)
    assert summary.state is SessionState.ENDING
    record = await store.get_session(live.id)
    assert record.stop_attempts == 1 and record.next_stop_at is not None
    assert (await store.balance(TENANT)).pending == live.reserved  # not settled yet

    reaper = SessionReaper(service)
    await reaper.tick(now=record.next_stop_at - timedelta(seconds=1))
    assert len(fake.called("stop")) == 1  # not due yet
    del fake.fail["stop"]
    await reaper.tick(now=record.next_stop_at + timedelta(seconds=1))
    record = await store.get_session(live.id)
    assert record.state is SessionState.ENDED and record.vendor_stopped
    assert await store.verify() == []


async def test_reaper_ends_expired_sessions_and_warns_first(service, live, store, hub, fake):
    reaper = SessionReaper(service, warn_before_end_s=120, idle_timeout_s=3600)
    async with hub.subscribe(live.id) as queue:
        await reaper.tick(now=live.expires_at - timedelta(seconds=90))
        await reaper.tick(now=live.expires_at - timedelta(seconds=80))
        warnings = [e for e in await drain(queue) if isinstance(e, Warning)]
        assert len(warnings) == 1 and "minute(s) left" in warnings[0].text
        await reaper.tick(now=live.expires_at + timedelta(seconds=1))
    record = await store.get_session(live.id)
    assert record.state is SessionState.ENDED and record.end_reason == "time is up"
    assert fake.called("stop") == [live.provider_session_id]


async def test_reaper_ends_idle_sessions_after_a_warning(service, live, store, hub):
    reaper = SessionReaper(service, idle_timeout_s=300)
    async with hub.subscribe(live.id) as queue:
        await reaper.tick(now=live.last_activity_at + timedelta(seconds=250))
        assert any(isinstance(e, Warning) and "Nobody" in e.text for e in await drain(queue))
        await reaper.tick(now=live.last_activity_at + timedelta(seconds=301))
    record = await store.get_session(live.id)
    assert record.state is SessionState.ENDED and "nobody wrote" in record.end_reason


async def test_chat_keeps_a_session_from_idling_out(service, live, store):
    reaper = SessionReaper(service, idle_timeout_s=300)
    await store.update_session(live.id, last_activity_at=utcnow() - timedelta(seconds=400))
    await service.say(live.id, "still here")
    await reaper.tick()
    assert (await store.get_session(live.id)).state is SessionState.LIVE


async def test_keep_alive_is_sent_where_the_vendor_needs_it(store, hub):
    fake = FakeProvider(hub, keep_alive_interval_s=60)
    service = SessionService(store=store, providers={"fake": fake}, events=hub)
    await store.grant(TENANT, 100, "admin")
    record = await service.start(cmd())
    reaper = SessionReaper(service)
    await reaper.tick()
    await reaper.tick()  # within the interval: not again
    assert fake.called("keep_alive") == [record.provider_session_id]


async def test_orphan_sweep_stops_vendor_sessions_we_do_not_know(service, live, fake):
    fake.open["fake-orphan"] = {"knowledge": ""}
    service.bookings.sweep_unknown = True  # SWEEP_UNKNOWN_VENDOR_SESSIONS: a one-deployment account
    stopped = await SessionReaper(service).sweep_orphans(force=True)
    assert stopped == ["fake-orphan"]
    assert set(fake.open) == {live.provider_session_id}


async def test_restart_ends_in_process_sessions_and_keeps_vendor_sessions(store, hub):
    local_like = FakeProvider(hub, name="inproc", survives_restart=False, lists_sessions=False)
    vendor = FakeProvider(hub, name="vendor")
    providers = {"inproc": local_like, "vendor": vendor}
    service = SessionService(store=store, providers=providers, events=hub)
    await store.grant(TENANT, 100, "admin")
    await store.set_limits(TENANT, max_concurrent=5)
    a = await service.start(cmd(provider="inproc"))
    b = await service.start(cmd(provider="vendor"))
    pending = await store.open_session(a.model_copy(update={
        "id": "stuck", "state": SessionState.PENDING, "reserved": 3, "created_at": utcnow(),
    }))

    restarted = SessionService(store=store, providers=providers, events=EventHub_())
    await SessionReaper(restarted).reconcile()
    assert (await store.get_session(a.id)).state is SessionState.ENDED
    assert (await store.get_session(b.id)).state is SessionState.LIVE
    assert (await store.get_session(pending.id)).state is SessionState.FAILED
    assert local_like.called("stop") == [a.provider_session_id]
    assert await store.verify() == []


def EventHub_():  # noqa: N802 - a fresh hub, as a restarted process has
    from bot.core.events import EventHub

    return EventHub()


async def test_a_tenant_default_avatar_starts_when_none_is_named(service, store, fake):
    await store.grant(TENANT, 100, "admin")
    await store.set_limits(TENANT, max_concurrent=5)
    assert (await service.start(cmd(provider=None))).avatar_name == "Ava"  # the first
    chosen = await service.set_default_avatar(TENANT, "Bob")
    assert chosen.id == "bob-2"
    assert await store.default_avatar(TENANT) == "fake:bob-2"
    assert (await service.start(cmd(provider=None))).avatar_name == "Bob"
    assert (await service.start(cmd(provider=None, avatar="ava-1"))).avatar_name == "Ava"
    with pytest.raises(InvalidRequest, match="Unknown avatar"):
        await service.set_default_avatar(TENANT, "nobody")
    assert await store.default_avatar(TENANT) == "fake:bob-2"


async def test_a_default_avatar_that_disappeared_falls_back_to_the_first(service, store):
    await store.grant(TENANT, 100, "admin")
    await store.set_default_avatar(TENANT, "gone:avatar")
    assert (await service.start(cmd(provider=None))).avatar_name == "Ava"


async def test_one_vendor_down_does_not_block_the_others(store, hub):
    down = FakeProvider(hub, name="down")
    down.fail["list_avatars"] = unavailable("down")
    up = FakeProvider(hub, name="up")
    service = SessionService(store=store, providers={"down": down, "up": up}, events=hub)
    await store.grant(TENANT, 100, "admin")
    assert [a.provider for a in await service.list_avatars()] == ["up", "up"]
    record = await service.start(cmd(provider=None, avatar="Bob"))
    assert record.provider == "up"
    with pytest.raises(Exception, match="no free capacity"):
        await service.start(cmd(provider="down"))
    up.fail["list_avatars"] = unavailable("up")
    service._avatar_cache.clear()
    with pytest.raises(Exception, match="no free capacity"):
        await service.list_avatars()


async def test_text_that_is_not_valid_unicode_is_refused_for_every_platform(service, live, fake):
    # A JSON escape such as "\ud800" (a Slack event body, a page) decodes to a lone surrogate.
    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        await service.send(live.id, "hello \ud800 there")
    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        await service.set_context(live.id, "We open at \udfff nine.")
    assert fake.called("say") == [] and fake.called("ask") == []
    assert fake.called("set_context") == []
