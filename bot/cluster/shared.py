"""Slack event dedupe and web rate limits shared by every worker, in Redis.

Slack retries an Events API delivery that was not answered within 3 s, and behind a load balancer
the retry may reach another worker: the "seen" mark must be shared (``SET key NX EX``). The web's
per-IP limits are per process; with N workers a client would get N times the allowance, so a
fixed-window counter in Redis (``INCR`` + ``EXPIRE``) caps the total across workers.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from bot.core.ports import SlackInstallStore
from bot.storage.common import EVENT_MEMORY_S  # the database stores' figure, kept as one


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
