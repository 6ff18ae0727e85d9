"""Slack event dedupe and web rate limits shared by every worker, in Redis.

Slack retries an Events API delivery that was not answered within 3 s, and behind a load balancer
the retry may reach another worker: the "seen" mark must be shared (``SET key NX EX``). The web's
per-IP limits are per process; with N workers a client would get N times the allowance, so a
fixed-window counter in Redis (``INCR`` + ``EXPIRE``) caps the total across workers.

Discord IDENTIFYs: the bucket limit (one per 5 s per ``shard_id % max_concurrency``) holds per
bot, not per worker, so workers holding shards of one bot take a short-lived key per bucket
(``SET key NX PX``) before identifying (docs/discord-sharding.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.core.pacing import LocalPacingGate
from bot.core.ports import SlackInstallStore
from bot.storage.common import EVENT_MEMORY_S  # the database stores' figure, kept as one

log = logging.getLogger(__name__)


class RedisPacingGate:
    """``PacingGate`` shared by every worker: one pass per bucket per interval in all.

    The key ``<prefix><name>:<bucket>`` is taken with ``SET NX PX interval``; a worker that finds
    it taken waits for it to expire. If Redis does not answer, the worker paces its own passes
    only (``LocalPacingGate``) and says so. Used for Discord IDENTIFYs (``name`` =
    ``discord-identify``).
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str, name: str, worker_id: str,
                 interval_s: float) -> None:
        self.client = client
        self.prefix = f"{prefix}{name}:"
        self.worker_id = worker_id
        self.interval_s = interval_s
        self._local = LocalPacingGate(interval_s)

    async def wait(self, bucket: int) -> None:
        """Return once this worker holds ``bucket``'s key (it then expires by itself)."""
        key = f"{self.prefix}{bucket}"
        try:
            while not await self.client.set(key, self.worker_id, nx=True,
                                             px=max(1, int(self.interval_s * 1000))):
                left_ms = await self.client.pttl(key)
                await asyncio.sleep(min(max(left_ms, 10), 1000) / 1000)
        except (RedisError, OSError) as exc:
            log.warning("Redis did not answer for the %s pacing (%s); pacing this worker only",
                        self.prefix, type(exc).__name__)
            await self._local.wait(bucket)


class RedisEventDedupe:
    """``remember(event_id)``: True the first time any worker sees the id, False after."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, memory_s: int = EVENT_MEMORY_S
    ) -> None:
        self.client = client
        self.prefix = f"{prefix}slack-event:"
        self.memory_s = memory_s

    async def remember(self, event_id: str, team_id: str | None) -> bool:
        """Mark ``event_id`` seen; whether it was new."""
        first = await self.client.set(
            self.prefix + event_id, team_id or "-", nx=True, ex=self.memory_s
        )
        return bool(first)


class SharedDedupeInstallStore:
    """A ``SlackInstallStore`` whose event dedupe is shared through Redis; the rest is ``inner``."""

    def __init__(self, inner: SlackInstallStore, dedupe: RedisEventDedupe) -> None:
        self._inner = inner
        self._dedupe = dedupe

    async def remember_event(self, event_id: str, team_id: str | None) -> bool:
        """Record an Events API delivery; False when any worker saw this event id before."""
        return await self._dedupe.remember(event_id, team_id)

    def __getattr__(self, name: str) -> Any:
        # Installations and OAuth state live in the shared database already.
        return getattr(self._inner, name)


class RedisRateLimiter:
    """A fixed-window request counter per (bucket, key) shared by every worker.

    ``allow`` admits up to ``limit`` requests per ``window_s`` for a key in a bucket. The window
    is aligned on the clock, so every worker counts into the same key.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}rate:"

    async def allow(
        self, bucket: str, key: str, *, limit: int, window_s: int, now: float | None = None
    ) -> bool:
        """Count one request; False when the window's count is past ``limit``."""
        window = int((time.time() if now is None else now) // window_s)
        name = f"{self.prefix}{bucket}:{window}:{key}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, window_s + 1)
            count, _ = await pipe.execute()
        return int(count) <= limit
