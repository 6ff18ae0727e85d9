"""Leases in Redis: which worker tends which session, and who does the global chores.

A lease is a key ``<prefix>lease:<name>`` holding the worker's id, set with ``NX PX`` so only one
worker can take it and it runs out unless renewed. Taking and renewing are one Lua script (a
compare-and-set: renew only if the value is still our id), so a worker never extends a lease
another has taken since. A background task renews what this worker holds every third of the TTL;
when a worker dies its leases run out within ``ttl_s`` and the next reaper tick elsewhere takes
them. ``holds`` is answered from a local deadline measured from before each claim was sent, so it
errs towards "not held".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from types import TracebackType

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot.compat.cancel import cancel_and_wait

log = logging.getLogger(__name__)

# For each key: ours -> extend it; free -> take it; someone else's -> leave it. 1 = held.
_CLAIM = """
local held = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[i] = 1
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""

_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    n = n + redis.call('DEL', key)
  end
end
return n
"""


class RedisLeases:
    """``LeaseManager`` (``bot/core/leases.py``) over Redis; an async context manager that renews.

    Args:
        client: the Redis client (``decode_responses`` either way).
        prefix: the key prefix shared by the workers of one deployment.
        ttl_s: how long a lease lives without renewal (``LEASE_TTL_S``).
        worker_id: this worker's id (random by default).
    """

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, ttl_s: float = 10.0,
        worker_id: str | None = None,
    ) -> None:
        self.client = client
        self.prefix = f"{prefix}lease:"
        self.ttl_s = ttl_s
        self.worker_id = worker_id or uuid.uuid4().hex
        self._deadlines: dict[str, float] = {}
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def claim(self, names: Iterable[str]) -> set[str]:
        """Take or renew each lease that is free or ours; return those now held."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return set()
        sent_at = time.monotonic()
        result = await self._claim(
            keys=[self.prefix + n for n in wanted],
            args=[self.worker_id, max(1, int(self.ttl_s * 1000))],
        )
        held = set()
        for name, ok in zip(wanted, result, strict=True):
            if int(ok):
                held.add(name)
                self._deadlines[name] = sent_at + self.ttl_s
            else:
                self._deadlines.pop(name, None)
        return held

    def holds(self, name: str) -> bool:
        """Whether the lease was ours at the last claim and has not run out since."""
        return self._deadlines.get(name, 0.0) > time.monotonic()

    def held(self) -> set[str]:
        """Every lease this worker believes it holds."""
        now = time.monotonic()
        return {n for n, d in self._deadlines.items() if d > now}

    async def release(self, names: Iterable[str]) -> None:
        """Give up leases held here (another worker may take them at once)."""
        names = list(names)
        keys = [self.prefix + n for n in names]
        for name in names:
            self._deadlines.pop(name, None)
        if keys:
            await self._release(keys=keys, args=[self.worker_id])

    async def renew_forever(self) -> None:
        """Renew the leases held here every third of the TTL, until the context is left."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.ttl_s / 3)
                return
            names = self.held()
            if not names:
                continue
            try:
                lost = names - await self.claim(names)
                if lost:
                    log.warning("lost %d lease(s) to another worker", len(lost))
            except (RedisError, OSError) as exc:
                log.warning("could not renew leases: %r", exc)

    async def __aenter__(self) -> RedisLeases:
        self._stopping.clear()
        self._renewer = asyncio.create_task(self.renew_forever(), name="lease-renew")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._renewer is not None:
            # Stopped between renewals, not cancelled mid-call (see bot/compat/cancel.py).
            self._stopping.set()
            done, _ = await asyncio.wait({self._renewer}, timeout=self.ttl_s)
            if not done:
                await cancel_and_wait(self._renewer)
        with contextlib.suppress(RedisError, OSError):
            await self.release(list(self._deadlines))
