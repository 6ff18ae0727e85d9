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

# KEYS[1] is the sorted set of lease deadlines (``<prefix>lease-due``: each lease key scored with
# the Redis time in ms at which it runs out unless renewed), KEYS[2..] the leases. Redis's own
# clock, so workers on hosts whose clocks differ agree on what has run out.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# For each key: ours -> extend it; free -> take it; someone else's -> leave it. 1 = held.
_CLAIM = _NOW_MS + """
local due = now + tonumber(ARGV[2])
local held = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    redis.call('ZADD', KEYS[1], due, key)
    held[i - 1] = 1
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    redis.call('ZADD', KEYS[1], due, key)
    held[i - 1] = 1
  else
    held[i - 1] = 0
  end
end
return held
"""

# Ours -> delete it; handed over: listed as lapsed at once (score 0), done: no longer listed.
# A lease that already ran out and is done is unlisted too; someone else's is left alone.
_RELEASE = """
local n = 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    n = n + redis.call('DEL', key)
    if ARGV[2] == '1' then
      redis.call('ZADD', KEYS[1], 0, key)
    else
      redis.call('ZREM', KEYS[1], key)
    end
  elseif not owner and ARGV[2] ~= '1' then
    redis.call('ZREM', KEYS[1], key)
  end
end
return n
"""

# The leases (keys starting with ARGV[1]) whose deadline has passed and that nobody holds: their
# holder stopped renewing them or handed them over. O(log n + what is returned).
_LAPSED = _NOW_MS + """
local out = {}
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(keys) do
  if string.sub(key, 1, #ARGV[1]) == ARGV[1] and redis.call('EXISTS', key) == 0 then
    out[#out + 1] = key
  end
end
return out
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
        self.due_key = f"{prefix}lease-due"
        self.ttl_s = ttl_s
        self.worker_id = worker_id or uuid.uuid4().hex
        self._deadlines: dict[str, float] = {}
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._lapsed = client.register_script(_LAPSED)
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def claim(self, names: Iterable[str]) -> set[str]:
        """Take or renew each lease that is free or ours; return those now held."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return set()
        sent_at = time.monotonic()
        result = await self._claim(
            keys=[self.due_key, *(self.prefix + n for n in wanted)],
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

    async def release(self, names: Iterable[str], *, hand_over: bool = False) -> None:
        """Give up leases held here (another worker may take them at once).

        ``hand_over``: their work goes on (this worker leaves), so ``lapsed`` lists them at
        once; otherwise the work is done and they are no longer listed anywhere.
        """
        names = list(dict.fromkeys(names))
        keys = [self.prefix + n for n in names]
        for name in names:
            self._deadlines.pop(name, None)
        if keys:
            await self._release(
                keys=[self.due_key, *keys], args=[self.worker_id, "1" if hand_over else "0"]
            )

    async def lapsed(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` leases named ``prefix…`` that ran out or were handed over.

        One round trip whose cost grows with what it returns, not with the leases held: how a
        worker finds what a dead worker left without reading every session each tick.
        """
        keys = await self._lapsed(
            keys=[self.due_key], args=[self.prefix + prefix, max(1, int(limit))]
        )
        cut = len(self.prefix)
        return [(k.decode() if isinstance(k, bytes) else str(k))[cut:] for k in keys]

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
            # The sessions go on: the other workers take them over at their next tick.
            await self.release(list(self._deadlines), hand_over=True)
