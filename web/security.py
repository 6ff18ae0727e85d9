"""Security headers for every response and in-memory per-IP rate limits.

The Content-Security-Policy allows only our own scripts; the vendors' browser SDKs (served from
our own static folder) need to reach their media and signalling servers, so ``connect-src`` also
lists the Agora and LiveKit hosts (and the exact LiveKit URL of the session on its page).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

# Agora's Web SDK talks to its gateways over https/wss on *.agora.io and *.sd-rtn.com (and
# *.agoraio.cn / *.edge.agora.io for regional edges); LiveKit Cloud rooms live on *.livekit.cloud.
VENDOR_CONNECT = (
    "https://*.agora.io", "wss://*.agora.io",
    "https://*.sd-rtn.com", "wss://*.sd-rtn.com",
    "https://*.agoraio.cn", "wss://*.agoraio.cn",
    "https://*.livekit.cloud", "wss://*.livekit.cloud",
)

# Request key under which a handler lists extra connect-src origins for its page.
CSP_KEY = web.RequestKey("avatarbot_extra_connect_src", list)


def content_security_policy(extra_connect: list[str] | tuple[str, ...] = ()) -> str:
    """The CSP header value; ``extra_connect`` adds sources such as a session's LiveKit URL."""
    connect = " ".join(("'self'", *VENDOR_CONNECT, *extra_connect))
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        # The SDKs run their workers from blob: URLs.
        "worker-src 'self' blob:",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        f"connect-src {connect}",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ))


def connect_origins(url: str) -> list[str]:
    """The origins a LiveKit URL is reached on: the wss one and its https twin.

    livekit-client checks a failed connection with an HTTPS request to the same host.
    """
    origin = origin_of(url)
    if origin is None:
        return []
    scheme, rest = origin.split("://", 1)
    twin = {"ws": "http", "wss": "https", "http": "ws", "https": "wss"}[scheme]
    return [origin, f"{twin}://{rest}"]


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute ws/wss/http/https URL, else ``None``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        return None
    # Only characters a host may hold: nothing may break out of the header value.
    if not all(c.isalnum() or c in ".-:[]" for c in parts.netloc):
        return None
    return f"{parts.scheme}://{parts.netloc}"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: headers on every response, static files and errors too."""
    extra = request.get(CSP_KEY, ())
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(extra)
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
    if request.path.startswith(("/v/", "/playground")):
        # The token is in the URL: keep these pages out of shared caches.
        headers["Cache-Control"] = "no-store"


@dataclass
class TokenBucket:
    """A token bucket per key (client IP): ``burst`` requests at once, ``rate`` per second after.

    Args:
        burst: bucket size.
        rate: tokens added per second.
        max_keys: forget the stalest keys past this many, so memory stays bounded.
    """

    burst: float
    rate: float
    max_keys: int = 10_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take one token for ``key``; ``False`` when the bucket is empty."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_keys:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        for key, (_, last) in list(self._buckets.items()):
            if now - last > full_after:
                del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))


@dataclass(frozen=True)
class RateLimits:
    """Per-IP limits of the web endpoints (burst, per second).

    Generous enough for a room of people behind one NAT opening the same link at once; tight
    enough that guessing tokens or opening sockets in a loop gets nowhere.
    """

    pages: tuple[float, float] = (60, 2.0)
    websocket: tuple[float, float] = (60, 1.0)
    signalling: tuple[float, float] = (200, 10.0)
    playground: tuple[float, float] = (20, 0.5)
    # Messages a page may send on its WebSocket (burst, per second); more are dropped.
    ws_messages: tuple[float, float] = (60, 20.0)

    def buckets(self) -> dict[str, TokenBucket]:
        """One fresh bucket set per app."""
        return {
            name: TokenBucket(*getattr(self, name))
            for name in ("pages", "websocket", "signalling", "playground")
        }


def client_ip(request: web.Request) -> str:
    """The client's address: the peer's, or what a trusted proxy says (web/proxy.py)."""
    return request.remote or "unknown"


def same_origin(request: web.Request, public_url: str | None) -> bool:
    """Whether a state-changing request comes from our own pages.

    The browser's ``Origin`` (which a page cannot forge) must be ``PUBLIC_URL``'s origin, or
    the origin the request itself was addressed to (direct access, e.g. on localhost). A request
    without ``Origin`` is not from a cross-site page of a current browser and passes.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    allowed = {f"{request.scheme}://{request.host}"}
    public = origin_of(public_url) if public_url else None
    if public is not None:
        allowed.add(public)
    return origin in allowed
