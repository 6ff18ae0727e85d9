"""Ledger throughput: reserve+settle pairs per second through the real store, against the ceiling.

The ceiling is the same transactions (the store's own SQL bodies, through its bench-only
``SyncLedger`` hook) run with plain ``sqlite3`` in one thread, no event loop, on a file with the
same settings (WAL, synchronous=NORMAL). Target: the store reaches at least half the ceiling's
throughput.

PostgreSQL (``PostgresStore``) runs the same pairs with 1 worker, and with 3 workers: 3 processes,
each with its own pool, as 3 ``avatarbot run`` processes on one database would be; on one tenant
(every start waits for that tenant's balance row lock: the worst case) and spread over 48. The
database is made for the run and dropped after it (on ``AVATARBOT_BENCH_PG``, a URL to the
maintenance database, by default the local server); without a server those rows are skipped.

Run: .venv/bin/python bench/ledger.py [pairs]
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.core.models import Limits, Mode, SessionRecord, SessionState, utcnow
from bot.storage import SqliteStore
from bot.storage.postgres import PostgresStore
from bot.storage.sqlite import SyncLedger

LIMITS = Limits(max_concurrent=50, daily_user_credits=1_000_000, max_minutes=240)  # the highest
TENANT = "discord:1"
ADMIN_PG = os.environ.get("AVATARBOT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_WORKERS = 3
CLIENTS = (1, 16)


def record(i: int, prefix: str = "s", tenant: str = TENANT) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        id=f"{prefix}{i}", tenant=tenant, provider="local", avatar_id="a", avatar_name="A",
        mode=Mode.ASK, state=SessionState.PENDING, requested_s=600, reserved=10,
        started_by=f"u{i % 50}", created_at=now, last_activity_at=now,
    )


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] * 1000 if len(values) > 1 else 0.0


def ceiling(path: Path, pairs: int) -> tuple[float, list[float]]:
    ledger = SyncLedger(path, LIMITS)
    ledger.grant(TENANT, 10**9, "bench")
    lat = []
    start = time.perf_counter()
    for i in range(pairs):
        t0 = time.perf_counter()
        rec = record(i)
        ledger.open_session(rec)
        ledger.begin_end(rec.id, "stop", utcnow())
        ledger.finish_session(rec.id, 3)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    ledger.close()
    return pairs / elapsed, lat


async def through_store(path: Path, pairs: int, clients: int) -> tuple[float, list[float]]:
    store = await SqliteStore.open(path, LIMITS)
    await store.grant(TENANT, 10**7, "bench")
    lat: list[float] = []

    async def client(k: int) -> None:
        for i in range(k, pairs, clients):
            t0 = time.perf_counter()
            rec = record(i)
            await store.open_session(rec)
            await store.begin_end(rec.id, "stop", utcnow())
            await store.finish_session(rec.id, 3)
            lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - start
    assert await store.verify() == []
    await store.close()
    return pairs / elapsed, lat


def tenant_of(i: int, tenants: int) -> str:
    return TENANT if tenants == 1 else f"discord:{1000 + i % tenants}"


async def _pairs(
    store: SqliteStore | PostgresStore, ids: range, clients: int, prefix: str, tenants: int
) -> list[float]:
    lat: list[float] = []
    todo = list(ids)

    async def client(k: int) -> None:
        for i in todo[k::clients]:
            t0 = time.perf_counter()
            rec = record(i, prefix, tenant_of(i, tenants))
            await store.open_session(rec)
            await store.begin_end(rec.id, "stop", utcnow())
            await store.finish_session(rec.id, 3)
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(client(k) for k in range(clients)))
    return lat


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_PG, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_worker(
    url: str, prefix: str, ids: range, clients: int, tenants: int, ready: Any, out: Any
) -> None:
    async def body() -> list[float]:
        store = await PostgresStore.open(url, LIMITS, max_size=clients)
        try:
            await store.balance(TENANT)  # connected and warm before the clock starts
            await asyncio.to_thread(ready.wait)
            return await _pairs(store, ids, clients, prefix, tenants)
        finally:
            await store.close()

    out.put(asyncio.run(body()))


async def pg_floor(url: str, pairs: int) -> tuple[float, list[float]]:
    """PostgreSQL's anchor: 3 durable one-row-update transactions per pair, plain asyncpg, one
    connection: the commits and round trips a pair cannot do without."""
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id int PRIMARY KEY, n bigint)")
    await conn.execute("INSERT INTO bench_floor VALUES (1, 0) ON CONFLICT DO NOTHING")
    lat = []
    start = time.perf_counter()
    for _ in range(pairs):
        t0 = time.perf_counter()
        for _ in range(3):
            async with conn.transaction():
                await conn.execute("UPDATE bench_floor SET n = n + 1 WHERE id = 1")
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    await conn.close()
    return pairs / elapsed, lat


def through_postgres(url: str, pairs: int, workers: int, clients: int, tenants: int, tag: str
                     ) -> tuple[float, list[float]]:
    """``workers`` processes, ``clients`` concurrent clients each, spread over ``tenants``."""
    async def grant() -> None:
        store = await PostgresStore.open(url, LIMITS)
        for t in {tenant_of(i, tenants) for i in range(tenants)}:
            await store.grant(t, min(10**7, pairs * 10 + 10), "bench")
        await store.close()

    asyncio.run(grant())
    ctx = mp.get_context("spawn")
    ready, out = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_pg_worker, args=(url, f"{tag}w{w}-", range(w, pairs, workers),
                                             clients, tenants, ready, out))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    ready.wait(timeout=120)
    start = time.perf_counter()
    lat = [x for _ in procs for x in out.get(timeout=600)]
    elapsed = time.perf_counter() - start
    for proc in procs:
        proc.join()

    async def check() -> None:
        store = await PostgresStore.open(url, LIMITS)
        assert await store.verify() == []
        await store.close()

    asyncio.run(check())
    return pairs / elapsed, lat


def _pg_database() -> str | None:
    name = f"avatarbot_bench_{os.getpid()}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure: say so and bench SQLite alone
        print(f"PostgreSQL at {ADMIN_PG} not usable ({type(exc).__name__}): its rows are skipped")
        return None
    return ADMIN_PG.rpartition("/")[0] + "/" + name


def line(label: str, rate: float, lat: list[float], base_rate: float) -> str:
    return (f"{label:<40}: {rate:8.0f} pairs/s  p50 {pct(lat, 50):6.2f} ms  "
            f"p99 {pct(lat, 99):7.2f} ms  = {rate / base_rate:.0%} of the ceiling")


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = 3
    runs: dict[str, list[tuple[float, list[float]]]] = {}
    pg_url = _pg_database()
    # (workers, clients per worker, tenants): one tenant is the worst case (every transaction
    # waits for that tenant's row lock); spread over tenants, the locks no longer meet.
    pg_variants = [(1, 1, 1), (1, 16, 1), (PG_WORKERS, 16, 1), (1, 16, 48), (PG_WORKERS, 16, 48)]
    if not pg_url:
        pg_variants = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):  # interleaved, so a busy moment hurts every variant alike
                runs.setdefault("ceiling", []).append(ceiling(Path(tmp) / f"c{r}.db", pairs))
                for clients in CLIENTS:
                    path = Path(tmp) / f"s{clients}-{r}.db"
                    runs.setdefault(f"store{clients}", []).append(
                        asyncio.run(through_store(path, pairs, clients))
                    )
                if pg_url:
                    runs.setdefault("pgfloor", []).append(asyncio.run(pg_floor(pg_url, pairs)))
                for workers, clients, tenants in pg_variants:
                    assert pg_url is not None
                    key = f"pg{workers}x{clients}t{tenants}"
                    runs.setdefault(key, []).append(
                        through_postgres(pg_url, pairs, workers, clients, tenants, f"r{r}{key}-")
                    )
    finally:
        if pg_url:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{pg_url.rpartition("/")[2]}"'))
    print(f"{pairs} reserve+settle pairs (3 transactions each), one tenant unless said "
          f"('t.'), median of {rounds} rounds")
    base_rate, base_lat = statistics.median_low(runs["ceiling"])
    print(f"{'plain sqlite3, one thread':<40}: {base_rate:8.0f} pairs/s  "
          f"p50 {pct(base_lat, 50):6.2f} ms  p99 {pct(base_lat, 99):7.2f} ms")
    for clients in CLIENTS:
        rate, lat = statistics.median_low(runs[f"store{clients}"])
        print(line(f"SqliteStore, {clients:>2} client(s)", rate, lat, base_rate))
    if not pg_variants:
        return
    floor, floor_lat = statistics.median_low(runs["pgfloor"])
    print(f"{'plain asyncpg, 3 commits a pair':<40}: {floor:8.0f} pairs/s  "
          f"p50 {pct(floor_lat, 50):6.2f} ms  p99 {pct(floor_lat, 99):7.2f} ms  "
          f"= {floor / base_rate:.0%} of the ceiling")
    for workers, clients, tenants in pg_variants:
        rate, lat = statistics.median_low(runs[f"pg{workers}x{clients}t{tenants}"])
        label = f"PostgresStore, {workers} worker(s) x {clients:>2}, {tenants:>2} t."
        print(line(label, rate, lat, base_rate) + f", {rate / floor:.0%} of asyncpg's")


if __name__ == "__main__":
    main()
