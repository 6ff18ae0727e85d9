"""The reaper's tick with several workers (leases in Redis) next to the one-process tick.

Issue 15 asked for a reaper tick that costs what is due, not what is open; issue 17 runs it on
several workers, each tending the sessions whose lease it holds. This script holds every session
on one worker (the worst case for it) and times, at each level of live sessions:

- the one-process tick (``SessionReaper`` without leases): the anchor;
- the cluster tick (``SessionReaper`` with ``RedisLeases``): its due-time index, one Redis read of
  lapsed leases, one claim of the global lease;
- what each cluster tick did before (read and validate every open session, then claim every
  lease in one script), measured directly, for comparison;
- the rescan that replaced it, every ``rescan_s`` (60 s) instead of every tick: a second worker
  holding nothing, ticking with ``rescan_s=0``, reads the open sessions' ids and tries to claim
  every lease (all held by the first).

Nothing falls due during the rounds (expiry and idle end are minutes away), so each figure is the
fixed cost of a tick. Background lease renewal (one script for all held leases every third of
``LEASE_TTL_S``) is not part of a tick and not running here. Real store (PostgreSQL by default, as
a cluster runs; ``--sqlite`` for a file), real Redis, the test suite's in-memory fake vendor.

    PYTHONPATH=. .venv/bin/python bench/cluster_reaper.py [--levels 10,5000] [--rounds 15]
        [--sqlite]   (PostgreSQL: AVATARBOT_TEST_PG or the local server; Redis: REDIS_URL)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench.looplag import LoopLag
from bot.cluster import RedisLeases
from bot.core.events import EventHub
from bot.core.leases import session_lease
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService, StartCommand
from bot.storage import SqliteStore
from bot.storage.postgres import PostgresStore
from tests.backends import create_database, drop_database
from tests.fakes.provider import FakeProvider

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PER_TENANT = 50  # Limits.max_concurrent's highest value


async def timed(
    call: Callable[[], Awaitable[Any]], rounds: int, lags: list[float] | None = None
) -> list[float]:
    out = []
    for _ in range(rounds):
        with LoopLag() as lag:
            await asyncio.sleep(0.002)  # the lag probe is running
            t = time.perf_counter()
            await call()
            out.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.002)
        if lags is not None:
            lags.append(lag.worst * 1000)
        await asyncio.sleep(0.01)
    return out


def cell(ms: list[float]) -> str:
    return f"{min(ms):.2f}/{statistics.median(ms):.2f}/{max(ms):.2f}"


async def grow(service: SessionService, store: Any, have: int, total: int) -> None:
    async def tenant_sessions(t: int, first: int, last: int) -> None:
        tenant = f"bench:T{t}"
        if first % PER_TENANT == 0:
            await store.grant(tenant, 10**6, "bench")
            await store.set_limits(tenant, max_concurrent=PER_TENANT)
        for i in range(first, last):
            await service.start(StartCommand(tenant=tenant, user=f"U{i}", provider="fake",
                                             minutes=30))

    jobs = []
    i = have
    while i < total:
        t = i // PER_TENANT
        last = min(total, (t + 1) * PER_TENANT)
        jobs.append(tenant_sessions(t, i, last))
        i = last
    for k in range(0, len(jobs), 8):  # a few workspaces at a time
        await asyncio.gather(*jobs[k:k + 8])


async def run(args: Any) -> None:
    levels = [int(x) for x in args.levels.split(",")]
    tmp = tempfile.TemporaryDirectory()
    pg_url = None
    if args.sqlite:
        store: Any = await SqliteStore.open(Path(tmp.name) / "bench.db")
        kind = "SQLite"
    else:
        pg_url = await create_database()
        store = await PostgresStore.open(pg_url)
        kind = "PostgreSQL"
    client = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"avatarbot-bench-{secrets.token_hex(4)}:"
    try:
        hub = EventHub(queue_size=100_000)
        vendor = FakeProvider(EventHub(), lists_sessions=False)
        service = SessionService(store=store, providers={"fake": vendor}, events=hub)
        leases = RedisLeases(client, prefix=prefix, ttl_s=3600, worker_id="bench")
        anchors: dict[str, float] = {}
        have = 0
        print(f"store: {kind}; Redis: {REDIS_URL.rpartition('@')[2]}; "
              f"{args.rounds} rounds, min/median/max in ms")
        solo = SessionReaper(service, orphan_sweep_s=10**6)
        worker = SessionReaper(service, leases=leases, orphan_sweep_s=10**6, rescan_s=10**6)
        other = SessionReaper(
            service, leases=RedisLeases(client, prefix=prefix, ttl_s=3600, worker_id="other"),
            orphan_sweep_s=10**6, rescan_s=0,
        )
        for level in levels:
            await grow(service, store, have, level)
            have = level
            # As a worker starts (reconcile reads and claims everything once): each reaper then
            # holds every session in its index.
            await solo.reconcile()
            await worker.reconcile()
            assert worker.indexed == level and solo.indexed == level
            await solo.tick()
            await worker.tick()
            one_lag: list[float] = []
            cluster_lag: list[float] = []
            rescan_lag: list[float] = []
            one = await timed(solo.tick, args.rounds, one_lag)
            cluster = await timed(worker.tick, args.rounds, cluster_lag)
            names = [session_lease(s) for s in await store.open_states()]

            async def old_tick_work(names: list[str] = names) -> None:
                await store.open_sessions()
                await leases.claim(names)

            old = await timed(old_tick_work, args.rounds)
            rescan = await timed(other.tick, args.rounds, rescan_lag)
            assert other.indexed == 0
            print(f"\n== {level} live sessions, all held by this worker")
            print("figure | anchor | avatarbot | ratio (medians)")
            print(f"reaper tick, nothing due | one process {cell(one)} | cluster {cell(cluster)} "
                  f"| x{statistics.median(cluster) / statistics.median(one):.2f}")
            print(f"cluster tick vs the old per-tick work (read every open session, claim every "
                  f"lease) | old work {cell(old)} | cluster tick {cell(cluster)} | "
                  f"x{statistics.median(cluster) / statistics.median(old):.3f}")
            print(f"a rescan (every 60 s, not per tick) vs the old per-tick work | old work "
                  f"{cell(old)} | rescan {cell(rescan)} | "
                  f"x{statistics.median(rescan) / statistics.median(old):.3f}")
            print(f"loop lag during a tick | one process {cell(one_lag)} | cluster "
                  f"{cell(cluster_lag)}; rescan {cell(rescan_lag)} | "
                  f"x{statistics.median(cluster_lag) / max(statistics.median(one_lag), 1e-3):.2f}")
            anchor = anchors.setdefault("cluster", statistics.median(cluster))
            print(f"cluster tick growth over {levels[0]} sessions | {anchor:.2f} | "
                  f"{statistics.median(cluster):.2f} | x{statistics.median(cluster) / anchor:.2f}")
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.close()
        if pg_url is not None:
            await drop_database(pg_url)
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="10,5000")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not PostgreSQL")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
