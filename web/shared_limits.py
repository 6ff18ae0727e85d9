"""Rate limits shared by every worker (when ``REDIS_URL`` is set; ``bot/cluster/shared.py``).

The per-IP token buckets of ``web/security.py`` count per process: behind a load balancer with N
workers a client would get N times its allowance. This middleware adds a cluster-wide cap on top:
a fixed window of ``WINDOW_S`` seconds admitting what the bucket would admit in that time
(``burst + rate * WINDOW_S``), counted in Redis. The local buckets still apply as before.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from web.security import RateLimits, client_ip

log = logging.getLogger(__name__)

WINDOW_S = 10


class SharedRateLimiter(Protocol):
    """A counter every worker shares (``RedisRateLimiter``)."""

    async def allow(self, bucket: str, key: str, *, limit: int, window_s: int) -> bool:
        """Count one request of ``key`` in ``bucket``; False past ``limit`` in the window."""
        ...


def bucket_of(request: web.Request) -> str | None:
    """Which limit a request counts against, or None for unlimited paths."""
    path = request.path
    if path.startswith("/playground/") and request.method == "POST":
        return "playground"
    if path.startswith("/v/"):
        if path.endswith("/ws"):
            return "websocket"
        if "/webrtc/" in path:
            return "signalling"
        return "pages"
    return None


def window_limit(limits: RateLimits, bucket: str) -> int:
    """Requests a bucket admits in one window: its burst plus its refill over the window."""
    burst, rate = getattr(limits, bucket)
    return int(burst + rate * WINDOW_S)


def shared_rate_limit(limiter: SharedRateLimiter, limits: RateLimits) -> Middleware:
    """The middleware: 429 once the cluster-wide count of the caller's IP is past the limit.

    If the shared counter cannot be reached the request goes on (the local limits still hold).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        bucket = bucket_of(request)
        if bucket is not None:
            try:
                allowed = await limiter.allow(
                    bucket, client_ip(request), limit=window_limit(limits, bucket),
                    window_s=WINDOW_S,
                )
            except Exception as exc:  # noqa: BLE001 - a Redis outage must not take the site down
                log.warning("shared rate limit unavailable: %r", exc)
                allowed = True
            if not allowed:
                return web.json_response(
                    {"error": "Too many requests; try again shortly."}, status=429,
                    headers={"Retry-After": str(WINDOW_S)},
                )
        return await handler(request)

    return middleware
