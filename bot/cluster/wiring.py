"""Open the Redis-backed parts for one worker (called by ``bot/app.py`` when REDIS_URL is set)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.cluster.bus import RedisEventBus
from bot.cluster.leases import RedisLeases
from bot.cluster.shared import RedisEventDedupe, RedisRateLimiter
from bot.core.errors import ConfigError
from bot.core.events import EventHub

if TYPE_CHECKING:
    from bot.cluster.homes import RedisHomes

log = logging.getLogger(__name__)


@dataclass
class Cluster:
    """A worker's Redis client and the parts built on it."""

    worker_id: str
    client: aioredis.Redis
    bus: RedisEventBus
    leases: RedisLeases
    dedupe: RedisEventDedupe
    limiter: RedisRateLimiter
    # Set by the composition root once the link secret is known (it keys worker-to-worker calls).
    homes: RedisHomes | None = None


def new_worker_id() -> str:
    """Host, pid and a random part: readable in Redis, unique across restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def open_cluster(
    url: str, hub: EventHub, *, prefix: str, lease_ttl_s: float
) -> AsyncIterator[Cluster]:
    """Connect, subscribe the hub to the other workers and start renewing leases.

    Raises ``ConfigError`` (without the URL, which may hold a password) if Redis is unreachable.
    """
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(client.aclose)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"REDIS_URL is set but Redis does not answer ({type(exc).__name__})."
            ) from None
        worker_id = new_worker_id()
        bus = await stack.enter_async_context(
            RedisEventBus(client, hub, prefix=prefix, worker_id=worker_id)
        )
        leases = await stack.enter_async_context(
            RedisLeases(client, prefix=prefix, ttl_s=lease_ttl_s, worker_id=worker_id)
        )
        log.info("worker %s joined the cluster", worker_id)
        yield Cluster(
            worker_id, client, bus, leases, RedisEventDedupe(client, prefix=prefix),
            RedisRateLimiter(client, prefix=prefix),
        )
