"""Two workers' reapers over one database and a real Redis: each session tended by one of them.

Both "workers" live in this process (the SQLite file is shared through one store: several
processes writing one SQLite file under load is not what the cluster is for). The vendor is the
in-memory fake, shared, as a real vendor is by every worker.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from bot.cluster import RedisEventBus, RedisLeases
from bot.core.events import EventHub, Warning
from bot.core.models import SessionState
from bot.core.reaper import RELAY_LOST_NOTICE, SessionReaper
from bot.core.service import SessionService, StartCommand
from bot.storage import SqliteStore
from tests.fakes.provider import FakeProvider

TENANT = "discord:100"
TTL = 1.0


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(tmp_path / "cluster.db")
    await s.grant(TENANT, 1000, "admin")
    yield s
    await s.close()


def worker(store, fake, redis_client, prefix, name):
    hub = EventHub()
    service = SessionService(store=store, providers={"fake": fake}, events=hub,
                             start_timeout_s=2.0, stop_timeout_s=2.0)
    leases = RedisLeases(redis_client, prefix=prefix, ttl_s=TTL, worker_id=name)
    reaper = SessionReaper(service, leases=leases, takeover_grace_s=0, idle_timeout_s=3600)
    return hub, service, leases, reaper


def start(service):
    return service.start(StartCommand(tenant=TENANT, user="u1", provider="fake", minutes=10))


async def wait_for_takeover(reaper, session_id, now, bound_s):
    started = time.monotonic()
    while True:
        await reaper.tick(now=now)
        if reaper.leases.holds(f"session:{session_id}"):
            return time.monotonic() - started
        assert time.monotonic() - started < bound_s, "not taken over within the bound"
        await asyncio.sleep(0.1)


async def test_only_the_holder_tends_and_a_dead_workers_session_is_taken_over(
    store, redis_client, prefix
):
    fake = FakeProvider(EventHub())
    _, service_a, _, reaper_a = worker(store, fake, redis_client, prefix, "a")
    _, _, _, reaper_b = worker(store, fake, redis_client, prefix, "b")
    record = await start(service_a)
    past_expiry = record.expires_at + timedelta(seconds=1)
    await reaper_a.tick(now=record.created_at)  # A claims its session (nothing is due yet)
    # B sees the expired session but does not hold it: it leaves it to A.
    await reaper_b.tick(now=past_expiry)
    assert (await store.get_session(record.id)).state is SessionState.LIVE
    assert fake.called("stop") == []
    # A dies (stops ticking and renewing): B takes over within TTL + a tick, and ends it.
    waited = await wait_for_takeover(reaper_b, record.id, past_expiry, bound_s=TTL + 2)
    assert waited <= TTL + 1.0
    assert (await store.get_session(record.id)).state is SessionState.ENDED
    assert len(fake.called("stop")) == 1
    assert (await store.verify()) == []


async def test_a_new_worker_does_not_end_a_live_workers_sessions(store, redis_client, prefix):
    # The local-avatar kind of session: it cannot outlive the worker that renders it.
    fake = FakeProvider(EventHub(), survives_restart=False)
    hub_a, service_a, leases_a, reaper_a = worker(store, fake, redis_client, prefix, "a")
    _, _, _, reaper_b = worker(store, fake, redis_client, prefix, "b")
    async with leases_a:  # A renews in the background while it lives
        run_a = asyncio.create_task(reaper_a.run(reconcile_first=True))
        await asyncio.sleep(0.1)
        record = await start(service_a)
        await asyncio.sleep(0.2)  # A claims its new session on its start event
        # B starts up while A runs: its reconciliation must not end A's live session.
        await reaper_b.reconcile()
        await asyncio.sleep(TTL * 2)  # past the TTL: A's renewals keep the lease
        await reaper_b.tick()
        assert (await store.get_session(record.id)).state is SessionState.LIVE
        run_a.cancel()  # A's reaper stops: on its way out it gives up its leases
        await asyncio.gather(run_a, return_exceptions=True)
    # A is gone: B finishes what A left, as a restart would have (it cannot have survived A).
    await reaper_b.tick()
    assert (await store.get_session(record.id)).state in (SessionState.ENDED, SessionState.ENDING)
    assert fake.called("stop") != []


async def test_events_of_a_session_reach_the_other_workers_viewers(store, redis_client, prefix):
    """A session started on A: a viewer subscribed on B sees its state and transcript."""
    fake = FakeProvider(EventHub())
    hub_a, service_a, _, _ = worker(store, fake, redis_client, prefix, "a")
    hub_b = EventHub()
    fake.events = hub_a
    async with (
        RedisEventBus(redis_client, hub_a, prefix=prefix, worker_id="a"),
        RedisEventBus(redis_client, hub_b, prefix=prefix, worker_id="b"),
    ):
        record = await start(service_a)
        async with hub_b.subscribe(record.id) as viewer_b:
            await service_a.send(record.id, "When do you open?", author="ann")
            await service_a.stop(record.id, "the host ended it")
            seen = []
            while not seen or seen[-1].kind != "ended":
                seen.append(await asyncio.wait_for(viewer_b.get(), 3))
    kinds = [e.kind for e in seen]
    assert "transcript" in kinds and kinds[-1] == "ended"
    assert any(getattr(e, "text", None) == "When do you open?" for e in seen)


async def test_a_new_worker_leaves_a_live_workers_booking_in_flight_alone(
    store, redis_client, prefix
):
    """Issue 16 under leases: a booking whose session another live worker holds is its own.

    Like A2E, the vendor cannot list its sessions: a reconciliation that judged the intent as
    left by a crash would record it in doubt and fail a start that is about to go live.
    """
    fake = FakeProvider(EventHub(), lists_sessions=False)
    fake.start_delay = 1.0
    _, service_a, leases_a, _ = worker(store, fake, redis_client, prefix, "a")
    _, _, _, reaper_b = worker(store, fake, redis_client, prefix, "b")
    starting = asyncio.create_task(start(service_a))
    for _ in range(200):
        pending = await store.open_sessions()
        if pending:
            break
        await asyncio.sleep(0.01)
    [record] = pending
    assert await leases_a.claim([f"session:{record.id}"])  # A tends its own start

    await reaper_b.reconcile()  # B starts up meanwhile and reconciles (it holds "global")

    assert (await store.get_booking(record.id)).state == "intent"
    started = await starting
    assert started.state is SessionState.LIVE
    assert (await store.get_booking(record.id)).state == "booked"
    assert await store.list_bookings(("in_doubt",)) == []
    assert await store.verify() == []


async def test_an_ended_sessions_lease_is_released_not_renewed_forever(
    store, redis_client, prefix
):
    fake = FakeProvider(EventHub())
    _, service, leases, reaper = worker(store, fake, redis_client, prefix, "a")
    async with leases:
        record = await start(service)
        await reaper.tick(now=record.created_at)
        key = f"{prefix}lease:session:{record.id}"
        assert await redis_client.get(key) == b"a"
        await service.stop(record.id, reason="user")
        await reaper.tick(now=record.created_at)
        # Released at once: not left in Redis, nor in what the renewer keeps extending.
        assert await redis_client.get(key) is None
        assert f"session:{record.id}" not in leases.held()
        await asyncio.sleep(TTL)  # a few renewals later it is still gone
        assert await redis_client.get(key) is None



@pytest.mark.parametrize("control", ["viewer", "server"])
async def test_a_relayed_session_taken_over_asks_people_to_resend(
    store, redis_client, prefix, control
):
    """Messages waiting in a dead worker's relay outbox are gone: the thread is told, once."""
    fake = FakeProvider(EventHub(), control=control)
    _, service_a, _, reaper_a = worker(store, fake, redis_client, prefix, "a")
    hub_b, _, _, reaper_b = worker(store, fake, redis_client, prefix, "b")
    record = await start(service_a)
    await reaper_a.tick(now=record.created_at)  # A holds it, then dies
    later = record.created_at + timedelta(seconds=5)  # older than the takeover grace, not expired
    async with hub_b.subscribe(record.id) as seen:
        await wait_for_takeover(reaper_b, record.id, later, bound_s=TTL + 2)
        await reaper_b.tick(now=later)
        notices = []
        while not seen.empty():
            event = seen.get_nowait()
            if isinstance(event, Warning) and event.text == RELAY_LOST_NOTICE:
                notices.append(event)
    # Only a session relayed through the page had messages waiting on A; it is still live.
    assert len(notices) == (1 if control == "viewer" else 0)
    assert (await store.get_session(record.id)).state is SessionState.LIVE
