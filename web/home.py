"""The home page (what is configured, live sessions) and the playground.

The playground starts a local-avatar session in the ``web:playground`` tenant for the browser
that asks (a random id in a signed cookie is its user), with that tenant's own credits and
limits, and sends the browser to the session's viewer with a host link: a chat box for
say/ask/interrupt and a stop button. Only a host-role link may drive a session.

Fairness: each visitor (cookie) and each address may run ``PLAYGROUND_PER_VISITOR`` /
``PLAYGROUND_PER_ADDRESS`` sessions at once, within the tenant's overall ``max_concurrent``. A
session whose page is gone ends: the page's ``pagehide`` beacon (``POST .../leave``) ends it
after ``PLAYGROUND_LEAVE_GRACE_S`` unless a page reconnects (a reload), and with no beacon it
ends after ``PLAYGROUND_HEARTBEAT_S`` without a connected page. Every refusal says what the
visitor can do now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bot.core.errors import (
    AvatarBotError,
    InsufficientCredits,
    InvalidRequest,
    LimitReached,
    NotAllowed,
)
from bot.core.models import PLAYGROUND, Capabilities, SessionRecord, SessionState
from bot.core.service import StartCommand, readable_text
from web.context import WEB, WebContext
from web.security import client_ip, same_origin
from web.viewer import session_for, too_many

log = logging.getLogger(__name__)

COOKIE = "avatarbot_pg"
PROVIDER = "local"
# A host link outlives its session by this much, so the ended summary stays reachable.
LINK_GRACE_S = 3600


@dataclass
class Visitors:
    """Who runs which playground session, and which pages said goodbye (in memory).

    Playground sessions run the local avatar, which lives and dies with this process, so what
    is kept here cannot outlive what it describes.
    """

    address: dict[str, str] = field(default_factory=dict)  # session id -> client address
    seen: dict[str, float] = field(default_factory=dict)  # session id -> last time watched
    left: dict[str, float] = field(default_factory=dict)  # session id -> time of its beacon


VISITORS = web.AppKey("avatarbot_playground_visitors", Visitors)
WATCH_INTERVAL_S = 1.0


def setup(app: web.Application) -> None:
    """Register the home page and playground routes, and the watch over abandoned pages."""
    app[VISITORS] = Visitors()
    app.router.add_get("/", home)
    app.router.add_post("/playground/start", start)
    app.router.add_post("/playground/{token}/{action}", drive)
    app.cleanup_ctx.append(_watch_pages)


async def _watch_pages(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_watch_loop(app), name="playground-pages")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _watch_loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        if not playground_state(app[WEB])[0]:
            continue  # no playground sessions can start here: no need to read the store
        try:
            await end_abandoned(app)
        except Exception:
            log.exception("could not check the playground's pages")


async def end_abandoned(app: web.Application, now: float | None = None) -> list[str]:
    """End playground sessions whose page is gone; return their ids."""
    ctx, visitors = app[WEB], app[VISITORS]
    now = time.monotonic() if now is None else now
    ended = []
    records = await ctx.service.open_sessions(str(PLAYGROUND))
    open_ids = {r.id for r in records}
    for record in records:
        if record.state is not SessionState.LIVE:
            continue
        watching = ctx.hub.watching(record.id)
        if watching:
            visitors.seen[record.id] = now
        seen = visitors.seen.setdefault(record.id, now)
        left = visitors.left.get(record.id)
        if left is not None and now - left >= ctx.settings.playground_leave_grace_s:
            if watching:  # a page is back after the beacon (a reload): keep the session
                visitors.left.pop(record.id)
                continue
            why = "the page was closed"
        elif watching:
            continue
        elif now - seen >= ctx.settings.playground_heartbeat_s:
            why = "the page stopped answering"
        else:
            continue
        try:
            await ctx.service.stop(record.id, why, tenant=record.tenant)
            ended.append(record.id)
        except AvatarBotError as exc:
            log.warning("could not end an abandoned playground session: %r", exc)
    for table in (visitors.address, visitors.seen, visitors.left):
        for sid in [k for k in table if k not in open_ids]:
            del table[sid]
    return ended


def playground_state(ctx: WebContext) -> tuple[bool, str]:
    """Whether the playground can start sessions, and what to say when it cannot."""
    if not ctx.settings.playground_enabled:
        return False, "The playground is turned off on this server."
    if PROVIDER not in ctx.service.providers:
        return False, "The playground needs the built-in local avatar, which is not running."
    return True, ""


def playground_caps(ctx: WebContext) -> Capabilities | None:
    """The capabilities (text and knowledge bounds) of the playground's provider, if running."""
    provider = ctx.service.providers.get(PROVIDER)
    return provider.capabilities if provider is not None else None


async def home(request: web.Request) -> web.Response:
    """What is configured, how many sessions are live, and the playground."""
    ctx = request.app[WEB]
    if not ctx.service.counts.loaded:
        await ctx.service.counts.load()
    live = ctx.service.counts.count(SessionState.LIVE)
    enabled, why = playground_state(ctx)
    resp = ctx.render(
        "home.html", status_items=ctx.status, live=live, playground=enabled,
        playground_why=why, minutes=ctx.settings.playground_max_minutes,
        max_knowledge=caps.max_knowledge_chars if (caps := playground_caps(ctx)) else 0,
    )
    if visitor_id(ctx, request) is None:
        resp.set_cookie(COOKIE, ctx.links.sign_value(secrets.token_hex(12)),
                        max_age=365 * 86400, httponly=True, samesite="Strict",
                        secure=request.secure, path="/")
    return resp


def visitor_id(ctx: WebContext, request: web.Request) -> str | None:
    """The visitor's id from its signed cookie; ``None`` when missing or tampered with."""
    raw = request.cookies.get(COOKIE, "")
    value = ctx.links.check_value(raw) if len(raw) <= 128 else None
    if value is None or not (8 <= len(value) <= 64 and value.isalnum()):
        return None
    return value


def until_midnight_utc(now: datetime | None = None) -> str:
    """``5 h 12 min`` until the next midnight UTC (when the playground budget refills)."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = max(1, int((midnight - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


class PlaygroundRefused(LimitReached):
    """A playground start refused, with what the visitor can do now (and maybe a link)."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


def _host_url(ctx: WebContext, record: SessionRecord) -> str:
    expires = (record.expires_at.timestamp() if record.expires_at else time.time()) + LINK_GRACE_S
    return f"/v/{ctx.links.token(record.id, expires, role='host')}"


async def _check_fair(ctx: WebContext, user: str, address: str, visitors: Visitors) -> None:
    """Refuse a start over the visitor's or the address's share, naming what to do instead."""
    running = await ctx.service.open_sessions(str(PLAYGROUND))
    mine = [r for r in running if r.started_by == user]
    if len(mine) >= ctx.settings.playground_per_visitor:
        raise PlaygroundRefused(
            "You already have a playground session running. Go back to it, or end it there "
            "to start a new one.", url=_host_url(ctx, mine[0]),
        )
    same_address = [r for r in running if visitors.address.get(r.id) == address]
    if len(same_address) >= ctx.settings.playground_per_address:
        raise PlaygroundRefused(
            f"Your network already runs {len(same_address)} playground sessions (the most one "
            "address may run). End one of them, or try again when one finishes (sessions last "
            f"at most {ctx.settings.playground_max_minutes} min)."
        )


async def _explain(ctx: WebContext, exc: LimitReached) -> PlaygroundRefused:
    """The tenant's refusal in words a playground visitor can act on."""
    if isinstance(exc, InsufficientCredits):
        return PlaygroundRefused(
            "Today's playground budget is used up. It refills at midnight UTC (in "
            f"{until_midnight_utc()}). To use the avatar now, run avatarbot yourself: see the "
            "README."
        )
    slots = ctx.settings.playground_max_concurrent  # the tenant's limit (bot/app.py sets it)
    running = await ctx.service.open_sessions(str(PLAYGROUND))
    if len(running) >= slots:
        return PlaygroundRefused(
            f"All {slots} playground slots are in use right now. Try again in a "
            f"few minutes: sessions last at most {ctx.settings.playground_max_minutes} min."
        )
    return PlaygroundRefused(
        f"You have used your playground time for today. It refills at midnight UTC (in "
        f"{until_midnight_utc()})."
    )


def _not_found() -> web.Response:
    """A bad host link: the same plain answer whatever is wrong with it."""
    return web.json_response({"error": "not found"}, status=404)


def _same_origin(request: web.Request) -> bool:
    """Refuse cross-site posts: the browser's ``Origin`` must be ours when it sends one."""
    public = request.app[WEB].settings.public_url
    return same_origin(request, str(public) if public is not None else None)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        return {}
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON ("[[[[...")
        return {}
    return body if isinstance(body, dict) else {}


def _refuse(request: web.Request) -> web.Response | None:
    """The answer for a playground call over its rate limit, else None; refuse other sites."""
    ctx = request.app[WEB]
    if not ctx.buckets["playground"].allow(client_ip(request)):
        return too_many(ctx, "playground", page=False)
    if not _same_origin(request):
        raise NotAllowed("Cross-site requests are refused.")
    return None


async def start(request: web.Request) -> web.Response:
    """``POST /playground/start``: start a local-avatar session; answer with its host link."""
    ctx = request.app[WEB]
    refused = _refuse(request)
    if refused is not None:
        return refused
    enabled, why = playground_state(ctx)
    if not enabled:
        raise NotAllowed(why)
    browser = visitor_id(ctx, request)
    if browser is None:
        raise InvalidRequest(
            "Your browser did not send the playground's cookie. Reload the home page (with "
            "cookies allowed for this site) and start again."
        )
    body = await _body(request)
    knowledge = body.get("knowledge")
    max_knowledge = ctx.service.provider(PROVIDER).capabilities.max_knowledge_chars
    if knowledge is not None and (not isinstance(knowledge, str) or len(knowledge) > max_knowledge):
        raise InvalidRequest(f"The knowledge text must be at most {max_knowledge} characters.")
    if knowledge is not None and not readable_text(knowledge):
        raise InvalidRequest("The knowledge text holds characters that are not valid Unicode.")
    user, address = f"web:{browser}", client_ip(request)
    visitors = request.app[VISITORS]
    try:
        await _check_fair(ctx, user, address, visitors)
        # Errors of the core (vendor failures ...) become statuses in web.app's middleware.
        record = await ctx.service.start(StartCommand(
            tenant=str(PLAYGROUND), user=user, provider=PROVIDER,
            minutes=ctx.settings.playground_max_minutes, knowledge=knowledge or None,
        ))
    except PlaygroundRefused as exc:
        return _refusal(exc)
    except LimitReached as exc:
        return _refusal(await _explain(ctx, exc))
    visitors.address[record.id] = address
    visitors.seen[record.id] = time.monotonic()
    ctx.metrics.playground_starts.inc()
    return web.json_response({"url": _host_url(ctx, record), "session_id": record.id})


def _refusal(exc: PlaygroundRefused) -> web.Response:
    body: dict[str, Any] = {"error": exc.user_message}
    if exc.url:
        body["url"] = exc.url
    return web.json_response(body, status=429)


async def drive(request: web.Request) -> web.Response:
    """``POST /playground/<token>/{say|ask|interrupt|stop|leave}``: host links only."""
    ctx = request.app[WEB]
    refused = _refuse(request)
    if refused is not None:
        return refused
    action = request.match_info["action"]
    if action not in ("say", "ask", "interrupt", "stop", "leave"):
        raise web.HTTPNotFound()
    found = await session_for(ctx, request.match_info["token"])
    if found is None:
        return _not_found()
    claims, record = found
    if claims.role != "host":
        raise NotAllowed("This link may watch, not drive, the avatar.")
    if action == "leave":
        # The page's pagehide beacon: end the session unless a page is back within the grace.
        if record.state.is_open:
            request.app[VISITORS].left[record.id] = time.monotonic()
        return web.json_response({"ok": True})
    if action == "stop":
        await ctx.service.stop(record.id, "stopped from the web page", tenant=record.tenant)
        return web.json_response({"ok": True})
    if action == "interrupt":
        await ctx.service.interrupt(record.id, tenant=record.tenant)
        return web.json_response({"ok": True})
    text = (await _body(request)).get("text")
    if not isinstance(text, str):
        raise InvalidRequest("Send a text for the avatar to say or answer.")
    if not readable_text(text):
        raise InvalidRequest("The text holds characters that are not valid Unicode.")
    method = ctx.service.say if action == "say" else ctx.service.ask
    await method(record.id, text, author="You", tenant=record.tenant)
    return web.json_response({"ok": True})
