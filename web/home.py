"""The home page (what is configured, live sessions) and the playground.

The playground starts a local-avatar session in the ``web:playground`` tenant for the browser
that asks (a random id in a cookie is its user), with that tenant's own credits and limits, and
sends the browser to the session's viewer with a host link: a chat box for say/ask and a stop
button. Only a host-role link may drive a session.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from bot.core.errors import InvalidRequest, NotAllowed
from bot.core.models import PLAYGROUND, Capabilities, SessionState
from bot.core.service import StartCommand, readable_text
from web.context import WEB, WebContext
from web.viewer import session_for, too_many

log = logging.getLogger(__name__)

COOKIE = "avatarbot_pg"
PROVIDER = "local"
# A host link outlives its session by this much, so the ended summary stays reachable.
LINK_GRACE_S = 3600


def setup(app: web.Application) -> None:
    """Register the home page and playground routes."""
    app.router.add_get("/", home)
    app.router.add_post("/playground/start", start)
    app.router.add_post("/playground/{token}/{action}", drive)


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
    if COOKIE not in request.cookies:
        resp.set_cookie(COOKIE, secrets.token_hex(12), max_age=365 * 86400, httponly=True,
                        samesite="Strict", secure=request.secure, path="/")
    return resp


def _not_found() -> web.Response:
    """A bad host link: the same plain answer whatever is wrong with it."""
    return web.json_response({"error": "not found"}, status=404)


def _same_origin(request: web.Request) -> bool:
    """Refuse cross-site posts: the browser's ``Origin`` must be ours when it sends one."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


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
    if not ctx.buckets["playground"].allow(request.remote or "unknown"):
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
    browser = request.cookies.get(COOKIE, "")
    if not (8 <= len(browser) <= 64 and browser.isalnum()):
        raise InvalidRequest("Open the home page first (the playground needs its cookie).")
    body = await _body(request)
    knowledge = body.get("knowledge")
    max_knowledge = ctx.service.provider(PROVIDER).capabilities.max_knowledge_chars
    if knowledge is not None and (not isinstance(knowledge, str) or len(knowledge) > max_knowledge):
        raise InvalidRequest(f"The knowledge text must be at most {max_knowledge} characters.")
    if knowledge is not None and not readable_text(knowledge):
        raise InvalidRequest("The knowledge text holds characters that are not valid Unicode.")
    # Errors of the core (limits, vendor failures ...) become statuses in web.app's middleware.
    record = await ctx.service.start(StartCommand(
        tenant=str(PLAYGROUND), user=f"web:{browser}", provider=PROVIDER,
        minutes=ctx.settings.playground_max_minutes, knowledge=knowledge or None,
    ))
    ctx.metrics.playground_starts.inc()
    expires = (record.expires_at.timestamp() if record.expires_at else 0) + LINK_GRACE_S
    token = ctx.links.token(record.id, expires, role="host")
    return web.json_response({"url": f"/v/{token}", "session_id": record.id})


async def drive(request: web.Request) -> web.Response:
    """``POST /playground/<token>/{say|ask|interrupt|stop}``: host links only."""
    ctx = request.app[WEB]
    refused = _refuse(request)
    if refused is not None:
        return refused
    action = request.match_info["action"]
    if action not in ("say", "ask", "interrupt", "stop"):
        raise web.HTTPNotFound()
    found = await session_for(ctx, request.match_info["token"])
    if found is None:
        return _not_found()
    claims, record = found
    if claims.role != "host":
        raise NotAllowed("This link may watch, not drive, the avatar.")
    if action == "stop":
        await ctx.service.stop(record.id, "stopped from the web page", tenant=record.tenant)
        return web.json_response({"ok": True})
    if action == "interrupt":
        await ctx.service.interrupt(record.id, tenant=record.tenant)
        return web.json_response({"ok": True})
    text = (await _body(request)).get("text")
    max_text = ctx.service.provider(record.provider).capabilities.max_text_chars
    if not isinstance(text, str) or len(text) > max_text:
        raise InvalidRequest(f"Send a text of at most {max_text} characters.")
    if not readable_text(text):
        raise InvalidRequest("The text holds characters that are not valid Unicode.")
    method = ctx.service.say if action == "say" else ctx.service.ask
    await method(record.id, text, author="You", tenant=record.tenant)
    return web.json_response({"ok": True})
