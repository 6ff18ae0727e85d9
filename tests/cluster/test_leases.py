"""Leases in a real Redis: one holder at a time, taken over once the holder stops renewing."""

from __future__ import annotations

import asyncio
import random
import time

from bot.cluster import RedisLeases


async def test_one_holder_then_takeover_after_the_ttl(redis_client, prefix):
    a = RedisLeases(redis_client, prefix=prefix, ttl_s=1.0, worker_id="a")
    b = RedisLeases(redis_client, prefix=prefix, ttl_s=1.0, worker_id="b")
    assert await a.claim(["session:1", "global"]) == {"session:1", "global"}
    assert await b.claim(["session:1", "global", "session:2"]) == {"session:2"}
    assert a.holds("session:1") and not b.holds("session:1")
    # A stops renewing (it died): B gets it within the TTL, and not before A's lease ran out.
    started = time.monotonic()
    while not await b.claim(["session:1"]):
        assert time.monotonic() - started < 3.0, "B never took the lease over"
        await asyncio.sleep(0.05)
    waited = time.monotonic() - started
    assert 0.5 < waited <= 2.0  # not before the TTL ran out; within it, give or take a busy CPU
    assert b.holds("session:1")
    # A comes back: it may not take or extend what B holds now.
    assert await a.claim(["session:1"]) == set()
    assert not a.holds("session:1")


async def test_renewal_keeps_the_lease_and_release_frees_it(redis_client, prefix):
    a = RedisLeases(redis_client, prefix=prefix, ttl_s=0.6, worker_id="a")
    b = RedisLeases(redis_client, prefix=prefix, ttl_s=0.6, worker_id="b")
    async with a:
        assert await a.claim(["session:1"]) == {"session:1"}
        for _ in range(8):  # well past the TTL: A's renewer keeps it
            await asyncio.sleep(0.2)
            assert await b.claim(["session:1"]) == set()
        assert a.holds("session:1")
    # Leaving releases: B takes it at once, no TTL wait.
    assert await b.claim(["session:1"]) == {"session:1"}


async def test_release_never_frees_another_workers_lease(redis_client, prefix):
    a = RedisLeases(redis_client, prefix=prefix, ttl_s=5, worker_id="a")
    b = RedisLeases(redis_client, prefix=prefix, ttl_s=5, worker_id="b")
    assert await a.claim(["x"]) == {"x"}
    await b.release(["x"])
    assert await b.claim(["x"]) == set()


async def test_never_held_by_two_workers_at_once(redis_client, prefix):
    """Property-style: workers claim, renew and die at random; each instant has one holder.

    Each claim answer is checked against Redis itself: when a worker is told it holds the lease,
    the key names it, and no two workers' local ``holds`` overlap in time.
    """
    rng = random.Random(17)
    workers = [
        RedisLeases(redis_client, prefix=prefix, ttl_s=0.3, worker_id=f"w{i}") for i in range(4)
    ]
    key = f"{prefix}lease:session:p"
    alive = {w.worker_id: True for w in workers}
    holders_seen = set()
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        w = rng.choice(workers)
        if rng.random() < 0.1:
            alive[w.worker_id] = not alive[w.worker_id]  # dies, or comes back
        if alive[w.worker_id]:
            held = await w.claim(["session:p"])
            if held:
                owner = await redis_client.get(key)
                assert owner is not None and owner.decode() == w.worker_id
                holders_seen.add(w.worker_id)
        believers = [x.worker_id for x in workers if x.holds("session:p")]
        assert len(believers) <= 1, believers
        await asyncio.sleep(rng.uniform(0, 0.08))
    assert len(holders_seen) >= 2  # the lease really changed hands along the way


async def test_lapsed_lists_what_ran_out_or_was_handed_over_not_what_is_held_or_done(
    redis_client, prefix
):
    """What another worker should take over, found without looking at every lease."""
    a = RedisLeases(redis_client, prefix=prefix, ttl_s=0.5, worker_id="a")
    b = RedisLeases(redis_client, prefix=prefix, ttl_s=30, worker_id="b")
    assert await a.claim(["session:dies", "session:leaves", "session:ends"]) == {
        "session:dies", "session:leaves", "session:ends"}
    assert await b.claim(["session:held", "global"]) == {"session:held", "global"}
    assert await b.lapsed("session:", 100) == []  # all held: nothing to take
    await a.release(["session:leaves"], hand_over=True)  # A leaves: listed at once
    await a.release(["session:ends"])  # that session ended: nobody needs it
    assert await b.lapsed("session:", 100) == ["session:leaves"]
    await asyncio.sleep(0.8)  # A died: its last lease runs out
    assert sorted(await b.lapsed("session:", 100)) == ["session:dies", "session:leaves"]
    assert await b.lapsed("session:", 1) in (["session:dies"], ["session:leaves"])
    # Taken again: no longer lapsed; B's own lease, renewed, never was.
    assert await b.claim(["session:dies", "session:leaves"]) == {"session:dies", "session:leaves"}
    assert await b.lapsed("session:", 100) == []
    assert not await a.claim(["session:dies"])
