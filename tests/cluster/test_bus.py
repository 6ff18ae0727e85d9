"""Two hubs bridged through a real Redis: each worker's events reach the other exactly once."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from bot.cluster import RedisEventBus
from bot.core.events import Ended, EventHub, Relay, StateChanged, Transcript, VendorEnded
from bot.core.models import SessionState, SessionSummary
from tests.cluster.conftest import REDIS_URL


async def drain(queue: asyncio.Queue, expect: int, settle: float = 0.3) -> list:
    """The ``expect`` events that should arrive (each waited for up to 10 s on a busy machine),
    then anything more that arrives within ``settle`` seconds (a duplicate, say)."""
    got = [await asyncio.wait_for(queue.get(), 10) for _ in range(expect)]
    while True:
        try:
            got.append(await asyncio.wait_for(queue.get(), settle))
        except TimeoutError:
            return got


async def test_events_cross_both_ways_exactly_once(redis_client, prefix):
    hub_a, hub_b = EventHub(), EventHub()
    async with (
        RedisEventBus(redis_client, hub_a, prefix=prefix, worker_id="a"),
        RedisEventBus(redis_client, hub_b, prefix=prefix, worker_id="b"),
        hub_a.subscribe(None) as all_a, hub_b.subscribe("s1") as s1_b,
        hub_b.subscribe(None) as all_b,
    ):
        hub_a.publish(StateChanged(session_id="s1", state=SessionState.LIVE, seconds_left=60))
        hub_a.publish(Transcript(session_id="s2", speaker="avatar", text="héllo \u2603"))
        hub_b.publish(Transcript(session_id="s1", speaker="user", text="hi", author="ann",
                                 intent="ask"))
        got_a, got_b, got_s1_b = await drain(all_a, 3), await drain(all_b, 3), await drain(s1_b, 2)
    # Each hub sees its own event once (locally) and the other's once (through Redis).
    assert [type(e).__name__ for e in got_a] == ["StateChanged", "Transcript", "Transcript"]
    assert [type(e).__name__ for e in got_b] == ["Transcript", "StateChanged", "Transcript"]
    assert got_a[2].author == "ann" and got_a[2].intent == "ask"
    assert got_b[1].state is SessionState.LIVE and got_b[1].seconds_left == 60
    assert got_b[2].text == "héllo \u2603"
    # A session's subscriber on B gets that session's events only, from both workers.
    assert [(e.session_id, e.kind) for e in got_s1_b] == [("s1", "transcript"), ("s1", "state")]


async def test_ended_summary_survives_the_trip(redis_client, prefix):
    hub_a, hub_b = EventHub(), EventHub()
    summary = SessionSummary(
        session_id="s9", tenant="slack:T1", provider="a2e", avatar_name="Ava",
        state=SessionState.ENDED, duration_s=61, reserved=10, settled=3, released=7,
        reason="time is up",
    )
    async with (
        RedisEventBus(redis_client, hub_a, prefix=prefix, worker_id="a"),
        RedisEventBus(redis_client, hub_b, prefix=prefix, worker_id="b"),
        hub_b.subscribe("s9") as queue,
    ):
        hub_a.publish(Ended(session_id="s9", summary=summary))
        hub_a.publish(VendorEnded(session_id="s9", reason="out of credits"))
        got = await drain(queue, 2)
    assert [e.kind for e in got] == ["ended", "vendor_ended"]
    assert got[0].summary == summary
    assert got[1].reason == "out of credits"


async def test_local_only_subscribers_stay_local_and_relay_wakeups_cross(redis_client, prefix):
    # A relay page on another worker than the session's home is woken through the bus
    # (docs/scale-out.md, "Sessions with a home").
    hub_a, hub_b = EventHub(), EventHub()
    async with (
        RedisEventBus(redis_client, hub_a, prefix=prefix, worker_id="a"),
        RedisEventBus(redis_client, hub_b, prefix=prefix, worker_id="b") as bus_b,
        hub_b.subscribe(None, remote=False) as local_b, hub_b.subscribe(None) as all_b,
    ):
        hub_a.publish(Transcript(session_id="s1", speaker="avatar", text="from a"))
        hub_a.publish(Relay(session_id="s1", bytes_per_second=5000))
        hub_b.publish(Transcript(session_id="s1", speaker="avatar", text="from b"))
        got_local, got_all = await drain(local_b, 1), await drain(all_b, 3)
    assert [e.text for e in got_local] == ["from b"]
    assert [getattr(e, "text", e.kind) for e in got_all] == ["from b", "from a", "relay"]
    assert got_all[2].bytes_per_second == 5000
    assert bus_b.received == 2


async def test_malformed_messages_are_ignored(redis_client, prefix):
    hub = EventHub()
    async with (
        RedisEventBus(redis_client, hub, prefix=prefix, worker_id="a"),
        hub.subscribe(None) as queue,
    ):
        channel = f"{prefix}events"
        for bad in (b"not json", b'{"w": "x", "type": "nope", "event": {}}',
                    b'{"w": "x", "type": "state", "event": {"session_id": "s"}}', b"[1]"):
            await redis_client.publish(channel, bad)
        await redis_client.publish(channel, (
            b'{"w": "x", "type": "warning", "event": {"session_id": "s", "text": "ok"}}'
        ))
        got = await drain(queue, 1)
    assert [(e.kind, e.text) for e in got] == [("warning", "ok")]


async def test_unhooks_on_exit(redis_client, prefix):
    hub = EventHub()
    async with RedisEventBus(redis_client, hub, prefix=prefix) as bus:
        assert hub.bus is bus
    assert hub.bus is None
    hub.publish(Transcript(session_id="s", speaker="user", text="after"))  # no error, stays local


async def test_a_dropped_subscription_is_restored(redis_client, prefix):
    """Redis closes the listening connection (a restart, a proxy timeout): the bus resubscribes
    and events published afterwards arrive again."""
    name = f"{prefix}bus-b".replace(":", "-")
    client_b = aioredis.Redis.from_url(REDIS_URL, client_name=name)
    hub_a, hub_b = EventHub(), EventHub()
    try:
        async with (
            RedisEventBus(redis_client, hub_a, prefix=prefix, worker_id="a"),
            RedisEventBus(client_b, hub_b, prefix=prefix, worker_id="b"),
            hub_b.subscribe("s1") as queue,
        ):
            hub_a.publish(Transcript(session_id="s1", speaker="avatar", text="before"))
            assert [e.text for e in await drain(queue, 1)] == ["before"]
            clients = await redis_client.client_list(_type="pubsub")
            ids = [c["id"] for c in clients if c.get("name") == name]
            assert ids, "the bus's subscription connection is not listed"
            for client_id in ids:
                await redis_client.client_kill_filter(_id=client_id)
            # Published until it is back: what is published while it is away is lost (pub/sub),
            # everything after it resubscribed arrives.
            got = []
            for i in range(100):
                hub_a.publish(Transcript(session_id="s1", speaker="avatar", text=f"after {i}"))
                with contextlib.suppress(TimeoutError):
                    got.append(await asyncio.wait_for(queue.get(), 0.1))
                    break
            assert got and got[0].text.startswith("after")
    finally:
        await client_b.aclose()
