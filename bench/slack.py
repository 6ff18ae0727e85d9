"""Slack adapter figures: ack latency of signed requests, and the relay's pace under a flood.

1. Ack latency: signed ``/avatar credits`` and ``/avatar start`` slash commands over HTTP into the
   real app (slack-bolt on our aiohttp app, fake Web API, real SQLite). Slack drops a command
   not acked within 3 s; target p99 well under 0.3 s.
2. Relay pace: an avatar saying 120 lines in 6 s into one workspace whose outbox allows one call
   per second. Target: at most one post per second, every line delivered, in order.

Run: .venv/bin/python bench/slack.py [commands]
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.fakes

from bot.core.events import EventHub, Transcript
from bot.core.links import ViewerLinks
from bot.core.models import limit_bounds
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.slack import build_slack, mount_slack
from bot.settings import Settings
from bot.storage import SqliteSlackInstallStore, SqliteStore
from tests.fakes.provider import FakeProvider
from tests.fakes.slack import FakeSlack

SECRET = "bench-signing-secret-0123456789"
TOKEN = "xoxb-bench"


def signed(body: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def command(fake: FakeSlack, text: str, i: int) -> str:
    return urllib.parse.urlencode({
        "team_id": "T1", "channel_id": "C1", "channel_name": "general", "user_id": f"U{i % 50}",
        "user_name": "bench", "command": "/avatar", "text": text,
        "response_url": fake.response_url(f"b{i}"), "trigger_id": "1",
    })


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))] * 1000


async def main(n: int) -> None:
    fake = await FakeSlack().start()
    fake.add_workspace("T1", TOKEN, channels=("C1",))
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "bench.db")
        hub = EventHub()
        service = SessionService(store=store, providers={"fake": FakeProvider(hub)}, events=hub)
        await store.grant("slack:T1", 1_000_000, "bench")
        # The highest limits a tenant may have: a workspace runs at most that many at once.
        most_at_once = limit_bounds("max_concurrent")[1]
        await store.set_limits("slack:T1", max_concurrent=most_at_once,
                               daily_user_credits=limit_bounds("daily_user_credits")[1])
        settings = Settings(_env_file=None, slack_signing_secret=SECRET, slack_bot_token=TOKEN,
                            slack_api_url=fake.api_url)
        adapter = build_slack(settings=settings, service=service, tenants=TenantService(store),
                              bindings=ChatBindings(store), installs=SqliteSlackInstallStore(store),
                              links=ViewerLinks(b"bench-link-secret-0123", "http://v"),
                              min_interval_s=1.0)
        web_app = web.Application()
        mount_slack(web_app, adapter)
        await adapter.relay.start()
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        async with aiohttp.ClientSession() as http:
            for text, count in (("credits", n), ("start", min(n, most_at_once))):
                times = []
                for i in range(count):
                    body = command(fake, text, i)
                    t0 = time.perf_counter()
                    async with http.post(url, data=body, headers=signed(body)) as resp:
                        assert resp.status == 200
                    times.append(time.perf_counter() - t0)
                print(f"ack /avatar {text:<8} n={count}  p50={pct(times, .5):6.1f} ms  "
                      f"p95={pct(times, .95):6.1f} ms  p99={pct(times, .99):6.1f} ms  "
                      f"max={max(times) * 1000:6.1f} ms")
            await fake.wait_for("chat.postMessage", min(n, most_at_once), within=60)

        record = (await service.open_sessions())[0]
        anchor = (await store.bindings_for_session(record.id))[0].message_id
        before = len(fake.called("chat.postMessage"))
        t0 = time.monotonic()
        for i in range(120):
            hub.publish(Transcript(session_id=record.id, speaker="avatar", text=f"line {i:03d}"))
            await asyncio.sleep(0.05)
        wanted = [f"line {i:03d}" for i in range(120)]

        def delivered() -> list[str]:
            return [line.split(":* ", 1)[1] for c in fake.called("chat.postMessage")[before:]
                    if c.params.get("thread_ts") == anchor
                    for line in c.params["text"].splitlines()]

        while delivered() != wanted and time.monotonic() - t0 < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        posts = [c for c in fake.called("chat.postMessage")[before:]
                 if c.params.get("thread_ts") == anchor]
        gaps = [b.at - a.at for a, b in zip(posts, posts[1:], strict=False)]
        print(f"relay: 120 lines in 6 s -> {len(posts)} posts in {time.monotonic() - t0:.1f} s, "
              f"min gap {min(gaps):.2f} s, median gap {statistics.median(gaps):.2f} s, "
              f"all delivered in order: {delivered() == wanted}")
        await service.stop_all("bench over")
        await adapter.relay.aclose()
        await runner.cleanup()
        await store.close()
    await fake.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
