"""Ledger throughput: reserve+settle pairs per second through the real store, against the ceiling.

The ceiling is the same transactions (the store's own SQL bodies, through its bench-only
``SyncLedger`` hook) run with plain ``sqlite3`` in one thread, no event loop, on a file with the
same settings (WAL, synchronous=NORMAL). Target: the store reaches at least half the ceiling's
throughput.

Run: .venv/bin/python bench/ledger.py [pairs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bot.core.models import Limits, Mode, SessionRecord, SessionState, utcnow
from bot.storage import SqliteStore
from bot.storage.sqlite import SyncLedger

LIMITS = Limits(max_concurrent=50, daily_user_credits=1_000_000, max_minutes=240)  # the highest
TENANT = "discord:1"


def record(i: int) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        id=f"s{i}", tenant=TENANT, provider="local", avatar_id="a", avatar_name="A",
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


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = 3
    runs: dict[str, list[tuple[float, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):  # interleaved, so a busy moment hurts every variant alike
            runs.setdefault("ceiling", []).append(ceiling(Path(tmp) / f"c{r}.db", pairs))
            for clients in (1, 16):
                path = Path(tmp) / f"s{clients}-{r}.db"
                runs.setdefault(f"store{clients}", []).append(
                    asyncio.run(through_store(path, pairs, clients))
                )
    print(f"{pairs} reserve+settle pairs, median of {rounds} rounds")
    base_rate, base_lat = statistics.median_low(runs["ceiling"])
    print(f"plain sqlite3, one thread : {base_rate:8.0f} pairs/s  "
          f"p50 {pct(base_lat, 50):.2f} ms  p99 {pct(base_lat, 99):.2f} ms")
    for clients in (1, 16):
        rate, lat = statistics.median_low(runs[f"store{clients}"])
        print(f"SqliteStore, {clients:>2} client(s) : {rate:8.0f} pairs/s  "
              f"p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  "
              f"= {rate / base_rate:.0%} of the ceiling")


if __name__ == "__main__":
    main()
