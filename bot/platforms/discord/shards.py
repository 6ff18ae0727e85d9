"""Sharding rules: which shard hears a guild, and which IDENTIFY bucket a shard is in.

Discord's rules (docs/discord-sharding.md): a guild's events go to shard
``(guild_id >> 22) % num_shards``; each shard's IDENTIFY falls in the bucket
``shard_id % max_concurrency`` (``max_concurrency`` from ``GET /gateway/bot``), and each bucket
takes one IDENTIFY per 5 seconds, for the whole bot. discord.py's own pacing
(``before_identify_hook``) sleeps 5 s before every IDENTIFY but a process's first; it knows
neither the buckets nor the other workers. ``ShardedAvatarBot`` waits on a ``PacingGate``
(``bot/core/pacing.py``) instead: a local one for one process, the Redis one for workers.
"""

from __future__ import annotations

IDENTIFY_INTERVAL_S = 5.0


def guild_shard(guild_id: int, shard_count: int) -> int:
    """The shard that gets ``guild_id``'s events (Discord's sharding formula)."""
    return (guild_id >> 22) % shard_count


def identify_bucket(shard_id: int, max_concurrency: int) -> int:
    """The IDENTIFY rate-limit key of a shard (Discord's ``rate_limit_key``)."""
    return shard_id % max(1, max_concurrency)
