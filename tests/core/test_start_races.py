"""Races around a start in flight: whatever ends the session meanwhile, the vendor is stopped."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.core.errors import SessionNotLive
from bot.core.events import EventHub
from bot.core.models import SessionState, utcnow
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from tests.backends import run_sql
from tests.core.conftest import TENANT, cmd
from tests.fakes.provider import FakeProvider


@pytest.fixture
def vendor(hub: EventHub) -> FakeProvider:
    # Like A2E: the vendor cannot list its sessions, so no orphan sweep would ever find a leak.
    fake = FakeProvider(hub, lists_sessions=False)
    fake.start_delay = 0.3
    return fake


@pytest.fixture
def svc(store, hub, vendor) -> SessionService:
    return SessionService(store=store, providers={"fake": vendor}, events=hub,
                          start_timeout_s=5.0, stop_timeout_s=2.0)


async def _pending(store) -> str:
    for _ in range(200):
        records = await store.open_sessions()
        if records:
            assert records[0].state is SessionState.PENDING
            return records[0].id
        await asyncio.sleep(0.01)
    raise AssertionError("the start never wrote its pending row")


async def test_stop_all_while_a_start_is_in_flight_stops_the_vendor_it_started(svc, store, vendor):
    """A server removal or shutdown ends a pending start; the vendor must not keep running."""
    await store.grant(TENANT, 100, "admin")
    starting = asyncio.create_task(svc.start(cmd()))
    await _pending(store)
    await svc.stop_all("the bot was removed from the server", TENANT)
    with pytest.raises(SessionNotLive):
        await starting
    assert vendor.open == {}, "the vendor session started after the stop is still running"
    [record] = await store.list_sessions()
    assert not record.state.is_open
    assert (await store.balance(TENANT)).available == 100
    assert await store.verify() == []


async def test_reaper_failing_a_slow_start_stops_the_vendor_it_started(svc, store, vendor):
    await store.grant(TENANT, 100, "admin")
    reaper = SessionReaper(svc, pending_timeout_s=0.0)
    starting = asyncio.create_task(svc.start(cmd()))
    await _pending(store)
    await asyncio.sleep(0.01)
    await reaper.tick()
    with pytest.raises(SessionNotLive):
        await starting
    assert vendor.open == {}
    [record] = await store.list_sessions()
    assert record.state is SessionState.FAILED
    assert (await store.balance(TENANT)).available == 100
    assert await store.verify() == []


class SlowListing(FakeProvider):
    """A vendor whose session list takes a while to come back (up to the HTTP timeout)."""

    list_delay = 0.5

    async def list_open_sessions(self) -> list[str] | None:
        await asyncio.sleep(self.list_delay)
        return await super().list_open_sessions()


async def test_orphan_sweep_spares_a_session_that_started_while_it_listed_another_vendor(
    store, hub
):
    """The sweep of vendor B must judge B's list against the sessions open after listing it."""
    slow, quick = SlowListing(hub, name="slow"), FakeProvider(hub, name="quick")
    svc = SessionService(store=store, providers={"slow": slow, "quick": quick}, events=hub)
    reaper = SessionReaper(svc)
    await store.grant(TENANT, 100, "admin")

    sweeping = asyncio.create_task(reaper.sweep_orphans(force=True))
    await asyncio.sleep(0.1)  # the sweep has read the open sessions and waits on "slow"
    record = await svc.start(cmd(provider="quick"))
    assert await sweeping == []

    assert quick.called("stop") == [], "the sweep stopped a session that had just started"
    assert record.provider_session_id in quick.open
    assert (await svc.get(record.id)).state is SessionState.LIVE


async def test_reaper_does_not_fail_a_start_that_went_live_during_its_tick(svc, store, vendor):
    """The tick's list is a snapshot: a start listed as pending may be live when its turn comes."""
    await store.grant(TENANT, 100, "admin")
    # Taken before the start: it goes live later, so it is never five minutes idle at ``later``
    # however long the newer start below takes on a busy machine.
    later = utcnow() + timedelta(minutes=5)  # the newer one expired; the start looks stale
    # The vendor answers in 0.8 s: time for the newer start (its booking intent and answer are
    # two more writes) and the tick's snapshot on a busy machine, so the snapshot sees it pending.
    vendor.start_delay = 0.8
    starting = asyncio.create_task(svc.start(cmd()))
    pending_id = await _pending(store)
    vendor.start_delay = 0.0
    newer = await svc.start(cmd(minutes=1))
    vendor.stop_delay = 1.5  # the reaper is busy ending the newer session meanwhile

    await SessionReaper(svc).tick(later)
    started = await starting

    assert started.id == pending_id and started.state is SessionState.LIVE
    record = await svc.get(pending_id)
    assert record.state is SessionState.LIVE, "a live session was failed: its vendor runs unpaid"
    assert started.provider_session_id in vendor.open
    assert (await svc.get(newer.id)).state is SessionState.ENDED
    assert await store.verify() == []


async def test_a_reaper_tick_during_a_slow_stop_does_not_end_the_session_twice(
    svc, store, vendor, hub
):
    """Two finishers would stop the vendor twice and post the end summary twice."""
    from bot.core.events import Ended

    vendor.start_delay = 0.0
    await store.grant(TENANT, 100, "admin")
    record = await svc.start(cmd())
    vendor.stop_delay = 0.5
    async with hub.subscribe(record.id) as queue:
        stopping = asyncio.create_task(svc.stop(record.id, "stopped by ann"))
        for _ in range(100):
            if (await svc.get(record.id)).state is SessionState.ENDING:
                break
            await asyncio.sleep(0.01)
        await SessionReaper(svc).tick()
        summary = await stopping
        await asyncio.sleep(0)
        ended = [e for e in _drain(queue) if isinstance(e, Ended)]
    assert summary.state is SessionState.ENDED
    assert vendor.called("stop") == [record.provider_session_id]
    assert len(ended) == 1, "the end summary would be posted twice"
    assert await store.verify() == []


def _drain(queue: asyncio.Queue) -> list:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_a_start_cancelled_while_the_vendor_starts_releases_its_reservation(
    svc, store, vendor
):
    """A dropped interaction or request cancels the start: nothing stays reserved."""
    await store.grant(TENANT, 100, "admin")
    starting = asyncio.create_task(svc.start(cmd()))
    await _pending(store)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    [record] = await store.list_sessions()
    assert record.state is SessionState.FAILED
    assert (await store.balance(TENANT)).available == 100
    assert await store.verify() == []


async def test_a_stop_cancelled_while_the_vendor_stops_is_finished_by_the_reaper(
    svc, store, vendor
):
    vendor.start_delay = 0.0
    await store.grant(TENANT, 100, "admin")
    record = await svc.start(cmd())
    vendor.stop_delay = 0.5
    stopping = asyncio.create_task(svc.stop(record.id))
    for _ in range(100):
        if vendor.called("stop"):
            break
        await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert (await svc.get(record.id)).state is SessionState.ENDING
    assert record.provider_session_id in vendor.open

    vendor.stop_delay = 0.0
    await SessionReaper(svc).tick()
    ended = await svc.get(record.id)
    assert ended.state is SessionState.ENDED and ended.settled == 1
    assert vendor.open == {}
    assert (await store.balance(TENANT)).available == 99
    assert await store.verify() == []


async def test_two_stops_at_once_stop_the_vendor_once_and_end_once(svc, store, vendor, hub):
    """A double-clicked Stop button: one vendor stop, one end summary, one settlement."""
    from bot.core.events import Ended

    vendor.start_delay = 0.0
    await store.grant(TENANT, 100, "admin")
    record = await svc.start(cmd())
    vendor.stop_delay = 0.2
    async with hub.subscribe(record.id) as queue:
        first, second = await asyncio.gather(svc.stop(record.id), svc.stop(record.id))
        await asyncio.sleep(0)
        ended = [e for e in _drain(queue) if isinstance(e, Ended)]
    assert first == second and first.settled == 1
    assert vendor.called("stop") == [record.provider_session_id]
    assert len(ended) == 1
    assert await store.verify() == []


async def test_an_in_process_session_lost_in_a_crash_is_not_charged_for_the_downtime(
    store, hub
):
    """The avatar died with the process; it would have idled out 5 minutes after the last chat."""
    inproc = FakeProvider(hub, name="inproc", survives_restart=False, lists_sessions=False)
    svc = SessionService(store=store, providers={"inproc": inproc}, events=hub)
    await store.grant(TENANT, 100, "admin")
    record = await svc.start(cmd(provider="inproc", minutes=30))
    # The process crashed 20 minutes ago, a minute after the session started, and the server
    # was down since; nobody chatted.
    then = utcnow() - timedelta(minutes=21)
    await run_sql(
        store, "UPDATE sessions SET started_at = ?, last_activity_at = ? WHERE id = ?",
        then, then, record.id,
    )

    await SessionReaper(SessionService(store=store, providers={"inproc": inproc},
                                       events=EventHub()), idle_timeout_s=300).reconcile()
    ended = await store.get_session(record.id)
    assert ended.state is SessionState.ENDED
    assert ended.settled == 5, "charged for the downtime, past what the idle rule allows"
    assert (await store.balance(TENANT)).available == 95
    assert await store.verify() == []
