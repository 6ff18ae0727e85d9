"""One relayed message, page on the session's home (anchor) next to a page on another worker.

Two whole workers in this process (as in tests/cluster/test_homes.py): PostgreSQL (a database of
its own, dropped after) and Redis (a prefix of its own, deleted after), the fake AKool vendor.
Each round queues ``messages`` says on worker A (the home) one at a time; a page's socket takes
each from the hub and acknowledges it, and the next say is queued once the page has it. The
page is on A for the anchor and on B (every pull and acknowledgement forwarded to A) for the
other. Figures are wall time per message (what the page waits for its next message) and the
CPU of this process (both workers) per message; the Redis and PostgreSQL servers are not counted.

Run: .venv/bin/python bench/relay_homes.py [messages] [rounds]
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import redis.asyncio as aioredis

from bot.core.models import Mode
from tests.backends import create_database, drop_database
from tests.cluster.conftest import REDIS_URL
from tests.cluster.test_homes import Page, Worker, eventually, start, two_workers
from tests.fakes.akool import FakeAKool


async def one_round(http: aiohttp.ClientSession, home: Worker, page_at: Worker, session_id: str,
                    token: str, n: int) -> tuple[float, float]:
    outbox = home.services.events.relay
    async with http.ws_connect(f"{page_at.url}/v/{token}/ws") as ws:
        page = Page(ws)
        await page.join()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            await home.services.service.say(session_id, f"message {i}")
            batch = await page.handed()
            await page.ack([m["id"] for m in batch])
        await eventually(lambda: not outbox.waiting(session_id), "the last acknowledgement")
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


async def main(n: int, rounds: int) -> None:
    url = await create_database()
    prefix = f"avatarbot-bench-{secrets.token_hex(4)}:"
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with FakeAKool() as akool, two_workers(
                url, prefix, Path(tmp), **akool.settings_overrides(),
            ) as (a, b), aiohttp.ClientSession() as http:
                session_id, token = await start(a, "akool", mode=Mode.SAY)
                results: dict[str, list[tuple[float, float]]] = {"home": [], "other": []}
                for _ in range(rounds):
                    results["home"].append(await one_round(http, a, a, session_id, token, n))
                    results["other"].append(await one_round(http, a, b, session_id, token, n))
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await drop_database(url)
    print(f"messages per round: {n}, rounds: {rounds}")
    print("figure | anchor | avatarbot | ratio")
    for index, label in ((0, "wall ms per relayed message"), (1, "CPU ms per relayed message")):
        home = [r[index] * 1000 for r in results["home"]]
        other = [r[index] * 1000 for r in results["other"]]
        for stat, fn in (("min", min), ("median", statistics.median), ("max", max)):
            anchor, ours = fn(home), fn(other)
            print(f"{label} ({stat}), page on the home vs on another worker | "
                  f"{anchor:.2f} | {ours:.2f} | {ours / anchor:.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50,
                     int(sys.argv[2]) if len(sys.argv) > 2 else 5))
