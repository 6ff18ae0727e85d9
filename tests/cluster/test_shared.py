"""Slack event dedupe and web rate limits shared through a real Redis by two app instances."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest
from aiohttp import web

from bot.cluster import RedisEventDedupe, RedisRateLimiter, SharedDedupeInstallStore
from bot.core.links import ViewerLinks
from bot.platforms.slack import build_slack, mount_slack
from bot.settings import Settings
from bot.storage.slack_installs import SqliteSlackInstallStore
from bot.storage.sqlite import SqliteStore
from tests.fakes.serve import serve_local
from tests.slack.conftest import (  # noqa: F401 - fixtures
    CHANNEL,
    SECRET,
    TEAM,
    TOKEN,
    SlackHarness,
    fake_slack,
    stack,
)
from web.app import create_app
from web.security import RateLimits
from web.shared_limits import WINDOW_S


@pytest.fixture
async def two_workers(fake_slack, stack, redis_client, prefix, tmp_path):  # noqa: F811
    """Two Slack apps on one session store; each keeps its own event memory in SQLite (so only
    Redis can tell one that the other saw an event)."""
    made = []
    async with contextlib.AsyncExitStack() as exits:
        for name in ("a", "b"):
            own = await SqliteStore.open(tmp_path / f"installs-{name}.db")
            exits.push_async_callback(own.close)
            installs = SharedDedupeInstallStore(
                SqliteSlackInstallStore(own), RedisEventDedupe(redis_client, prefix=prefix)
            )
            settings = Settings(
                _env_file=None, slack_signing_secret=SECRET, slack_bot_token=TOKEN,
                slack_api_url=fake_slack.api_url, public_url="http://viewer.test",
            )
            adapter = build_slack(
                settings=settings, service=stack.service, tenants=stack.tenants,
                bindings=stack.bindings, links=stack.links, installs=installs,
                min_interval_s=0.01,
            )
            app = web.Application()
            mount_slack(app, adapter)
            await exits.enter_async_context(adapter.relay)
            runner, port = await serve_local(app)
            exits.push_async_callback(runner.cleanup)
            harness = SlackHarness(fake_slack, stack, f"http://127.0.0.1:{port}", adapter)
            exits.push_async_callback(harness.http.close)
            made.append(harness)
        await stack.store.grant(f"slack:{TEAM}", 100, "test")
        yield made


async def test_a_retry_reaching_another_worker_is_handled_once(two_workers):
    a, b = two_workers
    await a.command("start")
    (post,) = await a.fake.wait_for("chat.postMessage")
    event = {"type": "message", "channel": CHANNEL, "user": "U1", "text": "once please",
             "ts": "1800000000.5", "thread_ts": post.result["ts"], "channel_type": "channel"}
    # Slack's retry of an unanswered delivery (X-Slack-Retry-Num) lands on the other worker.
    assert (await a.event(event, event_id="EvSAME"))[0] == 200
    assert (await b.event(event, event_id="EvSAME", retry=1))[0] == 200
    assert (await b.event(event, event_id="EvSAME", retry=2))[0] == 200
    await a.fake.wait_for("reactions.add")
    await asyncio.sleep(0.2)
    assert a.stack.provider.called("ask") == ["once please"]
    # A different event id is a different message: handled.
    other = event | {"text": "and again", "ts": "1800000001.5"}
    assert (await b.event(other, event_id="EvOTHER"))[0] == 200
    for _ in range(50):
        if len(a.stack.provider.called("ask")) == 2:
            break
        await asyncio.sleep(0.05)
    assert a.stack.provider.called("ask") == ["once please", "and again"]


async def test_rate_limit_is_shared_by_two_web_apps(stack, redis_client, prefix):  # noqa: F811
    """An IP's page requests count across both workers: the total, not each, is capped."""
    limits = RateLimits(pages=(4, 0.1))  # 4 + 0.1*10 = 5 page requests per 10 s window
    limiter = RedisRateLimiter(redis_client, prefix=prefix)
    settings = Settings(_env_file=None, public_url="http://viewer.test")
    links = ViewerLinks(b"link-secret-for-tests-0123456789", "http://viewer.test")
    urls, runners = [], []
    for _ in range(2):
        app = create_app(service=stack.service, links=links, settings=settings, status=[],
                         rate_limits=limits, shared_limiter=limiter)
        runner, port = await serve_local(app)
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{port}")
    statuses = []
    try:
        async with aiohttp.ClientSession() as http:
            # Start in a fresh window so all ten requests count in the same one.
            left = WINDOW_S - (time.time() % WINDOW_S)
            if left < 3:
                await asyncio.sleep(left + 0.05)
            for i in range(10):  # alternating workers, as a load balancer would
                async with http.get(urls[i % 2] + "/v/not-a-token") as resp:
                    statuses.append(resp.status)
    finally:
        for runner in runners:
            await runner.cleanup()
    # Each worker alone would allow 4 of its 5 (its local bucket); together they allow 5 of 10.
    assert statuses.count(429) == 5, statuses
    assert 429 not in statuses[:5]
