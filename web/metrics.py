"""Prometheus metrics of the web layer, in a registry of the app's own (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WebMetrics:
    """The web layer's counters and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.live_sessions = Gauge(
            "avatarbot_live_sessions", "Sessions that are live now", registry=self.registry
        )
        self.open_sessions = Gauge(
            "avatarbot_open_sessions", "Sessions pending, live or ending now",
            registry=self.registry,
        )
        self.viewers = Gauge(
            "avatarbot_viewers", "Viewer pages connected by WebSocket", registry=self.registry
        )
        self.ws_messages = Counter(
            "avatarbot_ws_messages", "WebSocket messages", ["direction"], registry=self.registry
        )
        self.ws_dropped = Counter(
            "avatarbot_ws_dropped", "Page messages dropped (bad, oversized or too fast)",
            ["reason"], registry=self.registry,
        )
        self.link_rejected = Counter(
            "avatarbot_link_rejected", "Viewer links refused (bad, tampered or expired)",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "avatarbot_rate_limited", "Requests refused by a rate limit", ["endpoint"],
            registry=self.registry,
        )
        self.bookings_in_doubt = Gauge(
            "avatarbot_bookings_in_doubt",
            "Vendor bookings left without an answer that the vendor cannot be asked about",
            registry=self.registry,
        )
        self.in_doubt_charge = Gauge(
            "avatarbot_bookings_in_doubt_likely_charge",
            "Credits the in-doubt bookings probably cost at their vendors",
            registry=self.registry,
        )
        self.local_sessions = Gauge(
            "avatarbot_local_sessions", "Local-avatar sessions rendering now",
            registry=self.registry,
        )
        self.local_peers = Gauge(
            "avatarbot_local_peers", "Viewer peer connections of the local avatar now",
            registry=self.registry,
        )
        self.playground_starts = Counter(
            "avatarbot_playground_starts", "Playground sessions started", registry=self.registry
        )
