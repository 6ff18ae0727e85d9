"""A real Redis (127.0.0.1:6379, or ``TEST_REDIS_URL``) under a key prefix of this run's own.

Every test gets a fresh prefix and its keys are deleted afterwards (SCAN + DEL), so two runs, or
two tests, never see each other's data. Without a reachable Redis these tests fail when
``CI=true`` and are skipped otherwise, saying why. ``fakes`` is the fake Slack and A2E that whole
workers (tests/cluster/harness.py) are pointed at.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.fakes.a2e import FakeA2E
from tests.fakes.slack import FakeSlack

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SLACK_TOKEN = "xoxb-cluster-test"


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        reason = f"Redis is not reachable at {REDIS_URL}: {exc!r} (start it: redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    value = f"avatarbot-test-{os.getpid()}-{secrets.token_hex(4)}:"
    yield value
    keys = [k async for k in redis_client.scan_iter(match=value + "*", count=500)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlack, FakeA2E]]:
    """A fake Slack with one workspace (T1: channels C1-C3, user U1) and a fake A2E, for whole
    workers (tests/cluster/harness.py)."""
    slack = await FakeSlack().start()
    slack.add_workspace("T1", SLACK_TOKEN, channels=("C1", "C2", "C3"))
    slack.add_user("U1")
    try:
        async with FakeA2E() as a2e:
            yield slack, a2e
    finally:
        await slack.close()
