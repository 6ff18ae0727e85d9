"""Several workers behind one URL: Redis-backed parts chosen when ``REDIS_URL`` is set.

``RedisEventBus`` mirrors each worker's events to the others, ``RedisLeases`` decides which
worker tends which session, ``RedisEventDedupe`` and ``RedisRateLimiter`` share Slack's event
dedupe and the web's rate limits, ``RedisPacingGate`` paces Discord shards' IDENTIFYs
across workers. See docs/scale-out.md.
"""

from bot.cluster.bus import RedisEventBus
from bot.cluster.leases import RedisLeases
from bot.cluster.shared import (
    RedisEventDedupe,
    RedisPacingGate,
    RedisRateLimiter,
    SharedDedupeInstallStore,
)

__all__ = [
    "RedisEventBus", "RedisEventDedupe", "RedisPacingGate", "RedisLeases", "RedisRateLimiter",
    "SharedDedupeInstallStore",
]
