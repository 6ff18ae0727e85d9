"""Pacing gates: at most one pass per bucket per interval (Discord's IDENTIFY buckets use it).

``PacingGate`` is the port; ``LocalPacingGate`` paces one process, and
``bot.cluster.shared.RedisPacingGate`` paces every worker sharing a Redis.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class PacingGate(Protocol):
    """Lets one pass per bucket through per interval."""

    async def wait(self, bucket: int) -> None:
        """Return when a pass in ``bucket`` may happen now (the pass is then taken)."""


class LocalPacingGate:
    """``PacingGate`` within one process: per bucket, passes at least ``interval_s`` apart."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def wait(self, bucket: int) -> None:
        """Wait until ``bucket``'s interval since its last pass has run out, then take a pass."""
        loop = asyncio.get_running_loop()
        async with self._locks.setdefault(bucket, asyncio.Lock()):
            delay = self._next.get(bucket, 0.0) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next[bucket] = loop.time() + self.interval_s
