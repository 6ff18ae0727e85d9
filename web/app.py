"""The aiohttp application factory of the web layer.

``create_app`` builds the app over the core services; the composition root owns its lifecycle
(runner, site, shutdown). The app closes its own viewer sockets and rooms on shutdown. Other
route groups (Slack) are added to the same app by the composition root.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.core.errors import (
    AtCapacity,
    AvatarBotError,
    ConfigError,
    Forwarded,
    InvalidRequest,
    LimitReached,
    NotAllowed,
    ProviderError,
    SessionNotFound,
    SessionNotLive,
    StoreFault,
    StoreUnavailable,
    TenantNotFound,
    WorkerUnreachable,
)
from bot.core.links import ViewerLinks
from bot.core.models import ComponentStatus, SessionState
from bot.core.service import SessionService
from bot.settings import Settings
from web import home, viewer
from web.context import WEB, WebContext, make_templates, static_dir
from web.hub import ViewerHub
from web.metrics import WebMetrics
from web.proxy import forwarded_middleware
from web.security import RateLimits, add_security_headers
from web.shared_limits import SharedRateLimiter, shared_rate_limit

log = logging.getLogger(__name__)

# The HTTP status of each error of the core (bot/core/errors.py), the same on every route; an
# error takes the entry of its nearest class (InsufficientCredits that of LimitReached ...).
ERROR_STATUS: dict[type[AvatarBotError], int] = {
    AvatarBotError: 400,
    InvalidRequest: 400,
    NotAllowed: 403,
    TenantNotFound: 404,
    SessionNotFound: 404,
    SessionNotLive: 409,
    LimitReached: 429,
    ConfigError: 500,
    ProviderError: 502,
    AtCapacity: 503,  # this server is full (local-avatar caps): the same request works later
    StoreFault: 503,
    StoreUnavailable: 503,
    WorkerUnreachable: 503,  # another worker holds the session and does not answer (cluster)
}
RETRY_AFTER_S = 30  # what a full server tells clients to wait (AtCapacity)
# Seconds a client is asked to wait after a database fault (SQLite's busy timeout is 5 s).
STORE_RETRY_AFTER_S = 5


def error_status(exc: AvatarBotError) -> int:
    """The HTTP status for ``exc``: the entry of its nearest class in ``ERROR_STATUS``.

    An error a session's worker answered a forwarded call with keeps that worker's status.
    """
    if isinstance(exc, Forwarded):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


@web.middleware
async def core_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every ``AvatarBotError`` a handler raises with its status and ``{"error": ...}``.

    Only ``user_message`` reaches the client (it never holds a secret); vendor failures are
    logged with their details.
    """
    try:
        return await handler(request)
    except (StoreFault, StoreUnavailable) as exc:
        # The cause is for the operator; the visitor learns only that it is temporary.
        log.warning("%s %s: database fault: %s", request.method, request.path,
                    getattr(exc, "cause", exc))
        return web.json_response(
            {"error": "The service is briefly unavailable; nothing was changed. Try again."},
            status=503, headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        )
    except AvatarBotError as exc:
        if isinstance(exc, ProviderError):
            log.warning("%s %s failed: %r", request.method, request.path, exc)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, AtCapacity) else None
        return web.json_response({"error": exc.user_message}, status=error_status(exc),
                                 headers=headers)


def create_app(
    *,
    service: SessionService,
    links: ViewerLinks,
    settings: Settings,
    status: list[ComponentStatus],
    rate_limits: RateLimits | None = None,
    shared_limiter: SharedRateLimiter | None = None,
    home_key: bytes | None = None,
) -> web.Application:
    """Build the web app: home and playground, viewer pages, WebSocket, signalling, metrics.

    Args:
        service: the session service.
        links: signs and checks viewer links.
        settings: the process settings.
        status: what is configured and what is missing, for the home page.
        rate_limits: per-IP limits (defaults suit production).
        shared_limiter: with several workers, a counter they share, capping each IP's total
            (``web/shared_limits.py``).
        home_key: with several workers, the key other workers sign the calls they forward to
            a session's home with (``web/internal.py``); ``None`` leaves that route out.
    """
    # Signalling bodies carry SDP; nothing we accept is larger than this.
    limits = rate_limits or RateLimits()
    # The forwarded middleware runs first, so that every handler (and the shared rate limit)
    # sees the client's address.
    middlewares: list[Middleware] = [forwarded_middleware(settings.trusted_proxies), core_errors]
    if shared_limiter is not None:
        middlewares.append(shared_rate_limit(shared_limiter, limits))
    app = web.Application(client_max_size=256 * 1024, middlewares=middlewares)
    metrics = WebMetrics()
    hub = ViewerHub(service, metrics)
    app[WEB] = WebContext(
        service=service, links=links, settings=settings, status=list(status), hub=hub,
        metrics=metrics, limits=limits, buckets=limits.buckets(), templates=make_templates(),
    )
    metrics.viewers.set_function(hub.count)
    local = service.providers.get("local")
    running = getattr(local, "running", None)
    if callable(running):
        metrics.local_sessions.set_function(lambda: running()[0])
        metrics.local_peers.set_function(lambda: running()[1])
    app.on_response_prepare.append(add_security_headers)
    app.on_shutdown.append(_close_hub)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    home.setup(app)
    viewer.setup(app)
    if home_key is not None:
        from web import internal

        internal.setup(app, home_key)
    app.router.add_static("/static/", static_dir(), name="static", append_version=False)
    return app


async def _close_hub(app: web.Application) -> None:
    await app[WEB].hub.close()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers and its store can be read (one trivial statement)."""
    ctx = request.app[WEB]
    try:
        await ctx.service.healthy()
    except Exception:  # noqa: BLE001 - whatever the failure, the process is not healthy
        return web.json_response({"ok": False}, status=503)
    return web.json_response({"ok": True})


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text format; session gauges come from counts kept by events, not a load."""
    ctx = request.app[WEB]
    counts = ctx.service.counts
    if not counts.loaded:  # an app built without the composition root (tests, embedding)
        await counts.load()
    ctx.metrics.live_sessions.set(counts.count(SessionState.LIVE))
    ctx.metrics.open_sessions.set(counts.open)
    in_doubt = await ctx.service.bookings.in_doubt_bookings()
    ctx.metrics.bookings_in_doubt.set(len(in_doubt))
    ctx.metrics.in_doubt_charge.set(sum(b.likely_charge for b in in_doubt))
    body = generate_latest(ctx.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
