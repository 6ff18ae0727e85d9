"""CPU per forwarded event: the in-process hub (the anchor) next to two hubs bridged by Redis.

Both "workers" run in this process, so the Redis figure counts both sides (publishing worker and
receiving worker) plus redis-py; the Redis server's own CPU is another process and not counted.
Each event is a transcript line delivered to one subscriber on the receiving side.

Second anchor: the single-process path of one thread message (``SessionService.send`` to a live
session of the in-memory fake vendor, with the transcript keeper writing both lines to a real
SQLite file). A message publishes two events (the question and the answer), so with Redis the
path costs about that plus two bus events; the issue's target is at most 1.5x.

Run: .venv/bin/python bench/cluster_bus.py [events]   (needs Redis at REDIS_URL or 127.0.0.1:6379)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bot.cluster import RedisEventBus
from bot.core.events import EventHub, Transcript
from bot.core.service import SessionService, StartCommand
from bot.storage import SqliteStore
from tests.fakes.provider import FakeProvider

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def line(i: int) -> Transcript:
    return Transcript(session_id="s1", speaker="avatar", text=f"line {i} of what the avatar said")


async def local(n: int) -> float:
    hub = EventHub(queue_size=n + 1)
    async with hub.subscribe("s1") as queue:
        start = time.process_time()
        for i in range(n):
            hub.publish(line(i))
            await queue.get()
        return (time.process_time() - start) / n


async def through_redis(n: int) -> float:
    client = aioredis.Redis.from_url(URL)
    prefix = f"avatarbot-bench-{secrets.token_hex(4)}:"
    hub_a, hub_b = EventHub(queue_size=n + 1), EventHub(queue_size=n + 1)
    try:
        async with (
            RedisEventBus(client, hub_a, prefix=prefix, worker_id="a"),
            RedisEventBus(client, hub_b, prefix=prefix, worker_id="b"),
            hub_b.subscribe("s1") as queue,
        ):
            start = time.process_time()
            for i in range(n):
                hub_a.publish(line(i))
                if i % 100 == 99:  # let the publisher run, as a busy worker would
                    await asyncio.sleep(0)
            for _ in range(n):
                await asyncio.wait_for(queue.get(), 10)
            return (time.process_time() - start) / n
    finally:
        await client.aclose()


async def message_path(n: int) -> float:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "bench.db")
        hub = EventHub(queue_size=4 * n + 16)
        fake = FakeProvider(hub)
        service = SessionService(store=store, providers={"fake": fake}, events=hub)
        keeper = asyncio.create_task(service.keep_transcripts())
        try:
            await store.grant("discord:1", 10_000, "bench")
            record = await service.start(StartCommand(
                tenant="discord:1", user="u1", provider="fake", minutes=30,
            ))
            await service.transcript(record.id)  # the keeper has caught up
            start = time.process_time()
            for i in range(n):
                await service.send(record.id, f"question {i}?", author="ann")
            await service.transcript(record.id)
            return (time.process_time() - start) / n
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await store.close()


async def main(n: int) -> None:
    await local(1000)  # warm up
    anchor = await local(n)
    bus = await through_redis(n)
    print(f"events: {n}")
    print(f"in-process hub (anchor): {anchor * 1e6:8.1f} us CPU per event")
    print(f"through Redis, both workers: {bus * 1e6:8.1f} us CPU per event "
          f"({bus / anchor:.1f}x the anchor)")
    path = await message_path(min(n, 1000))
    print(f"one thread message, one process (anchor): {path * 1e6:8.1f} us CPU")
    print(f"the same plus its 2 events through Redis: {(path + 2 * bus) * 1e6:8.1f} us CPU "
          f"({(path + 2 * bus) / path:.2f}x; target <= 1.5x)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
