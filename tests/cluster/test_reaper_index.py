"""The cluster reaper's tick costs what is due, not what is open (issues 15 and 17).

A worker holding many sessions must not read every open session from the database, nor claim
every lease in Redis, at each tick: both servers are real (PostgreSQL, Redis) and reached through
byte-counting relays (``tests/fakes/tcp_counter.py``), so what a tick costs is measured at the
network boundary. Sessions it holds still end on time, and one that another worker ends gives
its lease back.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from bot.cluster import RedisEventBus, RedisLeases
from bot.core.events import EventHub
from bot.core.models import SessionState
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService, StartCommand
from tests.backends import open_store
from tests.cluster.conftest import REDIS_URL
from tests.fakes.provider import FakeProvider
from tests.fakes.tcp_counter import CountingRelay

TENANT = "discord:170"
SESSIONS = 150


def through(url: str, relay: CountingRelay) -> str:
    """``url`` with its host and port replaced by the relay's."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{relay.listen_port}" if auth else f"127.0.0.1:{relay.listen_port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def relays(pg_url):
    pg, rd = urlsplit(pg_url), urlsplit(REDIS_URL)
    async with (
        CountingRelay(pg.hostname or "127.0.0.1", pg.port or 5432) as pg_relay,
        CountingRelay(rd.hostname or "127.0.0.1", rd.port or 6379) as redis_relay,
    ):
        yield pg_relay, redis_relay


async def test_a_tick_costs_what_is_due_not_every_open_session(
    pg_url, redis_client, prefix, relays
):
    pg_relay, redis_relay = relays
    store = await open_store("postgres", through(pg_url, pg_relay))
    client = aioredis.Redis.from_url(through(REDIS_URL, redis_relay))
    try:
        for t in range(SESSIONS // 50):  # a workspace may run at most 50 at once
            await store.grant(f"{TENANT}{t}", 10**6, "test")
            await store.set_limits(f"{TENANT}{t}", max_concurrent=50)
        hub = EventHub(queue_size=10_000)
        fake = FakeProvider(EventHub())
        service = SessionService(store=store, providers={"fake": fake}, events=hub)
        leases = RedisLeases(client, prefix=prefix, ttl_s=30, worker_id="a")
        reaper = SessionReaper(service, leases=leases, idle_timeout_s=3600)
        records = [
            await service.start(StartCommand(tenant=f"{TENANT}{i // 50}", user=f"u{i}",
                                             provider="fake", minutes=10))
            for i in range(SESSIONS)
        ]
        await reaper.tick()  # the first tick finds them (one rescan) and claims them all
        assert leases.held() >= {f"session:{r.id}" for r in records}
        await reaper.tick()

        pg_in, redis_out = pg_relay.received, redis_relay.sent
        for _ in range(3):
            await reaper.tick()  # nothing is due: each session's next duty is minutes away
        tick_pg = (pg_relay.received - pg_in) / 3
        tick_redis = (redis_relay.sent - redis_out) / 3

        # Anchors over the same relays: reading the open sessions once, claiming them once.
        pg_in, redis_out = pg_relay.received, redis_relay.sent
        await store.open_sessions()
        await leases.claim(f"session:{r.id}" for r in records)
        one_read = pg_relay.received - pg_in
        one_claim = redis_relay.sent - redis_out
        assert tick_pg * 20 < one_read, (tick_pg, one_read)
        assert tick_redis * 5 < one_claim, (tick_redis, one_claim)

        # The index still has every one of them: at their expiry they all end.
        await reaper.tick(now=records[-1].expires_at + timedelta(seconds=1))
        states = [(await store.get_session(r.id)).state for r in records]
        assert set(states) == {SessionState.ENDED}
        assert len(fake.called("stop")) == SESSIONS
        assert await store.verify() == []
        await reaper.tick()  # their leases go back: nothing left to renew
        assert leases.held() == {"global"}  # the chores' lease only
        due = await redis_client.zrange(f"{prefix}lease-due", 0, -1)
        assert due == [f"{prefix}lease:global".encode()]
    finally:
        await client.aclose()
        await store.close()


async def test_a_session_ended_on_another_worker_gives_its_lease_back(
    tmp_path, redis_client, prefix
):
    """A holds the session; B (where the person typed "stop") ends it. A hears it through the
    bus, drops it from its index and releases its lease, instead of renewing it forever."""
    store = await open_store("sqlite", tmp_path / "two.db")
    try:
        await store.grant(TENANT, 1000, "test")
        fake = FakeProvider(EventHub())
        hub_a, hub_b = EventHub(), EventHub()
        service_a = SessionService(store=store, providers={"fake": fake}, events=hub_a)
        service_b = SessionService(store=store, providers={"fake": fake}, events=hub_b)
        leases_a = RedisLeases(redis_client, prefix=prefix, ttl_s=30, worker_id="a")
        reaper_a = SessionReaper(service_a, leases=leases_a, idle_timeout_s=3600)
        async with (
            RedisEventBus(redis_client, hub_a, prefix=prefix, worker_id="a"),
            RedisEventBus(redis_client, hub_b, prefix=prefix, worker_id="b"),
        ):
            claimer = asyncio.create_task(reaper_a.claim_own_starts())
            try:
                await asyncio.sleep(0.05)
                record = await service_a.start(
                    StartCommand(tenant=TENANT, user="u1", provider="fake", minutes=10))
                key = f"{prefix}lease:session:{record.id}"
                for _ in range(100):  # A claims its own start on its start's event
                    if await redis_client.get(key) == b"a":
                        break
                    await asyncio.sleep(0.02)
                assert await redis_client.get(key) == b"a"
                await reaper_a.tick()  # its first tick reads what is open: later ones do not
                await service_b.stop(record.id, "the host ended it")
                for _ in range(150):  # the events reach A through Redis, then A ticks
                    await reaper_a.tick()
                    if await redis_client.get(key) is None:
                        break
                    await asyncio.sleep(0.02)
                assert await redis_client.get(key) is None
                assert f"session:{record.id}" not in leases_a.held()
            finally:
                claimer.cancel()
                await asyncio.gather(claimer, return_exceptions=True)
        assert (await store.get_session(record.id)).state is SessionState.ENDED
    finally:
        await store.close()


async def test_a_session_ended_elsewhere_unheard_is_dropped_at_the_rescan(
    tmp_path, redis_client, prefix
):
    """No bus between the workers (an event lost in a reconnect): the periodic rescan finds
    that a held session ended and gives its lease back."""
    store = await open_store("sqlite", tmp_path / "lost.db")
    try:
        await store.grant(TENANT, 1000, "test")
        fake = FakeProvider(EventHub())
        service_a = SessionService(store=store, providers={"fake": fake}, events=EventHub())
        service_b = SessionService(store=store, providers={"fake": fake}, events=EventHub())
        leases_a = RedisLeases(redis_client, prefix=prefix, ttl_s=30, worker_id="a")
        reaper_a = SessionReaper(service_a, leases=leases_a, idle_timeout_s=3600, rescan_s=0.5)
        record = await service_a.start(
            StartCommand(tenant=TENANT, user="u1", provider="fake", minutes=10))
        await reaper_a.tick()
        key = f"{prefix}lease:session:{record.id}"
        assert await redis_client.get(key) == b"a"
        await service_b.stop(record.id, "the host ended it")  # A hears nothing of it
        await reaper_a.tick()
        assert await redis_client.get(key) == b"a"  # not yet: nothing told A
        await asyncio.sleep(0.6)
        await reaper_a.tick()  # the rescan: no longer open
        await reaper_a.tick()  # released
        assert await redis_client.get(key) is None
    finally:
        await store.close()


async def test_with_redis_away_a_held_session_still_ends_on_time(
    tmp_path, redis_client, prefix
):
    """Redis stops answering: the sessions this worker holds are still tended from its index
    (until its leases would have run out), so one that expires is ended and settled."""
    rd = urlsplit(REDIS_URL)
    store = await open_store("sqlite", tmp_path / "away.db")
    try:
        await store.grant(TENANT, 1000, "test")
        fake = FakeProvider(EventHub())
        service = SessionService(store=store, providers={"fake": fake}, events=EventHub())
        async with CountingRelay(rd.hostname or "127.0.0.1", rd.port or 6379) as relay:
            client = aioredis.Redis.from_url(through(REDIS_URL, relay), socket_timeout=2)
            leases = RedisLeases(client, prefix=prefix, ttl_s=30, worker_id="a")
            reaper = SessionReaper(service, leases=leases, idle_timeout_s=3600)
            record = await service.start(
                StartCommand(tenant=TENANT, user="u1", provider="fake", minutes=10))
            await reaper.tick()
            assert leases.holds(f"session:{record.id}")
        # The relay is gone: every Redis call now fails.
        try:
            await reaper.tick(now=record.expires_at + timedelta(seconds=1))
        finally:
            await client.aclose()
        final = await store.get_session(record.id)
        assert final.state is SessionState.ENDED and final.end_reason == "time is up"
        assert await store.verify() == []
    finally:
        await store.close()


async def test_a_burst_of_starts_is_claimed_by_their_worker_without_a_tick(
    tmp_path, redis_client, prefix
):
    """More starts at once than an event queue holds: each lease is still claimed by the worker
    that started it (a listener never misses an event), in few calls, before any tick."""
    store = await open_store("sqlite", tmp_path / "burst.db")
    try:
        await store.grant(TENANT, 10_000, "test")
        await store.set_limits(TENANT, max_concurrent=40)
        service = SessionService(store=store, providers={"fake": FakeProvider(EventHub())},
                                 events=EventHub(queue_size=4))
        leases = RedisLeases(redis_client, prefix=prefix, ttl_s=30, worker_id="a")
        reaper = SessionReaper(service, leases=leases, idle_timeout_s=3600)
        claimer = asyncio.create_task(reaper.claim_own_starts())
        try:
            records = await asyncio.gather(*(
                service.start(StartCommand(tenant=TENANT, user=f"u{i}", provider="fake",
                                           minutes=10))
                for i in range(30)
            ))
            keys = [f"{prefix}lease:session:{r.id}" for r in records]
            for _ in range(100):
                if await redis_client.mget(keys) == [b"a"] * len(keys):
                    break
                await asyncio.sleep(0.02)
            assert await redis_client.mget(keys) == [b"a"] * len(keys)
            assert reaper.indexed == len(records)
        finally:
            claimer.cancel()
            await asyncio.gather(claimer, return_exceptions=True)
    finally:
        await store.close()


async def test_a_dead_workers_sessions_are_all_taken_over_from_the_lapsed_leases(
    tmp_path, redis_client, prefix
):
    """A holds ten sessions and dies (stops renewing, releases nothing). B, past its first
    rescan, finds them through the lapsed leases within the TTL plus a tick and ends each of
    them once (they expired meanwhile)."""
    ttl = 1.0
    store = await open_store("sqlite", tmp_path / "dead.db")
    try:
        await store.grant(TENANT, 10_000, "test")
        await store.set_limits(TENANT, max_concurrent=20)
        fake = FakeProvider(EventHub())
        service_a = SessionService(store=store, providers={"fake": fake}, events=EventHub())
        service_b = SessionService(store=store, providers={"fake": fake}, events=EventHub())
        leases_a = RedisLeases(redis_client, prefix=prefix, ttl_s=ttl, worker_id="a")
        leases_b = RedisLeases(redis_client, prefix=prefix, ttl_s=ttl, worker_id="b")
        reaper_a = SessionReaper(service_a, leases=leases_a, takeover_grace_s=0,
                                 idle_timeout_s=3600)
        reaper_b = SessionReaper(service_b, leases=leases_b, takeover_grace_s=0,
                                 idle_timeout_s=3600)
        records = [
            await service_a.start(StartCommand(tenant=TENANT, user=f"u{i}", provider="fake",
                                               minutes=10))
            for i in range(10)
        ]
        await reaper_a.tick(now=records[0].created_at)  # A holds them all
        async with leases_b:
            await reaper_b.tick(now=records[0].created_at)  # B's first rescan: all held by A
            assert reaper_b.indexed == 0
            past = records[-1].expires_at + timedelta(seconds=1)
            started = asyncio.get_running_loop().time()
            while True:  # A is dead: B ticks on
                await reaper_b.tick(now=past)
                states = {(await store.get_session(r.id)).state for r in records}
                if states == {SessionState.ENDED}:
                    break
                assert asyncio.get_running_loop().time() - started < ttl + 3, states
                await asyncio.sleep(0.1)
        # Each vendor session stopped exactly once: one worker tended each.
        assert sorted(fake.called("stop")) == sorted(r.provider_session_id for r in records)
        assert await store.verify() == []
    finally:
        await store.close()
