"""Sharding rules: which shard hears a guild, and which IDENTIFY bucket a shard is in.

Discord's rules (docs/discord-sharding.md): a guild's events go to shard
``(guild_id >> 22) % num_shards``; each shard's IDENTIFY falls in the bucket
``shard_id % max_concurrency`` (``max_concurrency`` from ``GET /gateway/bot``), and each bucket
takes one IDENTIFY per 5 seconds, for the whole bot. discord.py's own pacing
(``before_identify_hook``) sleeps 5 s before every IDENTIFY but a process's first; it knows
neither the buckets nor the other workers. ``ShardedAvatarBot`` waits on a ``PacingGate``
(``bot/core/pacing.py``) instead: a local one for one process, the Redis one for workers.

With several workers each held shard is also a lease (``hold_shards``), so that a shard given
to two workers by mistake is connected by one of them only.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable

from bot.core.leases import LeaseManager

log = logging.getLogger(__name__)

IDENTIFY_INTERVAL_S = 5.0


def guild_shard(guild_id: int, shard_count: int) -> int:
    """The shard that gets ``guild_id``'s events (Discord's sharding formula)."""
    return (guild_id >> 22) % shard_count


def identify_bucket(shard_id: int, max_concurrency: int) -> int:
    """The IDENTIFY rate-limit key of a shard (Discord's ``rate_limit_key``)."""
    return shard_id % max(1, max_concurrency)


def shard_lease(shard_id: int) -> str:
    """The name of the lease a worker holds while it holds a Discord shard."""
    return f"discord-shard:{shard_id}"


async def hold_shards(leases: LeaseManager, shard_ids: Iterable[int], *,
                      retry_s: float) -> None:
    """Return once this worker holds the lease of each of ``shard_ids`` (renewed with the rest).

    Discord sends a shard's events to every connection identified with it, so two workers
    holding one shard would both answer each command and post each line. A shard whose lease
    another worker holds is waited for: a worker that died releases it within ``LEASE_TTL_S``;
    one that is alive means two workers share a ``DISCORD_SHARD_IDS``, which is logged.
    """
    names = {shard_lease(i): i for i in shard_ids}
    last_warning = -math.inf
    while True:
        held = await leases.claim(names)
        missing = sorted(names[n] for n in set(names) - held)
        if not missing:
            return
        # All or none: a shard taken while waiting for another would be kept (renewed) without
        # being connected, shutting out the worker that should connect it.
        await leases.release(held)
        now = time.monotonic()
        if now - last_warning >= 60:
            last_warning = now
            log.warning(
                "Discord shard(s) %s are held by another worker; waiting for them before "
                "connecting. Expected for a standby worker; otherwise two workers have the same "
                "shard in DISCORD_SHARD_IDS: give each shard to exactly one worker.",
                ",".join(map(str, missing)))
        await asyncio.sleep(retry_s)
