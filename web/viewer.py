"""Viewer routes: the page at ``/v/<token>``, its WebSocket and the WebRTC signalling.

A token that is malformed, forged, expired or names an unknown session gets the same plain
404 page. An ended session shows its summary and kept transcript (``GET /v/<token>/transcript.txt``
downloads it) for ``TRANSCRIPT_RETENTION_H`` after its end, even once the link's own expiry has
passed; after that it is the plain 404 too. The page gets only what the browser needs to
join the media (never a vendor API key).

WebSocket ``/v/<token>/ws`` (JSON text frames; ``?passive=1`` joins without taking the media):

- server to page: ``hello {viewer_id, active, state, seconds_left, max_report_bytes,
  transcript}`` (``transcript``: the kept lines so far),
  ``state {state, reason, seconds_left}``, ``transcript {speaker, text, author, intent, final}``,
  ``warning {text, seconds_left}``, ``relay {config {max_message_bytes, bytes_per_second,
  topic}, messages [{id, payload}]}`` (the relay tab only, once it has joined the room),
  ``superseded`` (another tab took the media), ``active`` (this tab has it again), ``end
  {summary}``, ``pong``;
- page to server: ``joined {joined}`` (the page is in, or out of, the vendor's media room),
  ``relayed {ids}`` (the SDK's send of these resolved), ``takeover``, ``data {payload}`` (a data
  message the page received from the vendor; relay tab only), ``ping``. Anything else, or too
  big, or too fast, is dropped; each kind of drop is logged once per session.

WebRTC (server offer): ``POST /v/<token>/webrtc/{offer,answer,candidate,leave}`` with the
``viewer_id`` from ``hello``; only a connected page that holds the media may signal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web

from bot.core.errors import AvatarBotError, SessionNotFound, StoreFault
from bot.core.homes import has_home
from bot.core.ice import minted_turn_server, public_ice_servers
from bot.core.links import LinkClaims
from bot.core.models import SessionRecord, SessionState, TranscriptLine, utcnow
from bot.core.transcripts import speaker_label, transcript_filename, transcript_text
from web.context import WEB, WebContext
from web.hub import HubClosed, Viewer
from web.preview import VENDOR_LOOKUP_S, card_for, face_png, is_preview_fetcher, neutral_card
from web.security import CSP_KEY, TokenBucket, client_ip, connect_origins

log = logging.getLogger(__name__)

# A page message larger than this is dropped (AKool data messages are under 1 KB; A2E's QA
# answers arrive in pieces). The socket itself refuses frames over WS_MAX_FRAME.
MAX_PAGE_MESSAGE = 16 * 1024
WS_MAX_FRAME = 64 * 1024
MAX_SDP = 64 * 1024
MAX_CANDIDATE = 2048
WS_HEARTBEAT_S = 25.0
MAX_ACK_IDS = 200
# The provider whose WebRTC peer is this server (bot/providers/local).
LOCAL = "local"


def setup(app: web.Application) -> None:
    """Register the viewer routes."""
    app.router.add_get("/v/{token}", viewer_page)
    app.router.add_get("/v/{token}/ws", viewer_socket)
    app.router.add_get("/v/{token}/transcript.txt", transcript_file)
    app.router.add_get("/v/{token}/preview.png", preview_image)
    app.router.add_post("/v/{token}/webrtc/{action}", signalling)


# ---------------------------------------------------------------------------- helpers
def not_found(ctx: WebContext) -> web.Response:
    """The one answer for every bad link: it says nothing about why."""
    ctx.metrics.link_rejected.inc()
    return ctx.render("not_found.html", status=404)


def too_many(ctx: WebContext, endpoint: str, *, page: bool = True) -> web.Response:
    """429 with a retry hint."""
    ctx.metrics.rate_limited.labels(endpoint).inc()
    headers = {"Retry-After": "10"}
    if page:
        resp = ctx.render("message.html", status=429, title="Slow down",
                          text="Too many requests from your network. Try again in a few seconds.")
        resp.headers.update(headers)
        return resp
    return web.json_response({"error": "Too many requests; try again shortly."}, status=429,
                             headers=headers)


def limited(ctx: WebContext, request: web.Request, bucket: str) -> bool:
    """Whether the caller's IP is over the limit of ``bucket``."""
    return not ctx.buckets[bucket].allow(client_ip(request))


async def session_for(
    ctx: WebContext, token: str, *, ended_ok: bool = False
) -> tuple[LinkClaims, SessionRecord] | None:
    """The claims and session of a valid token, or ``None`` (never a reason).

    With ``ended_ok``, a link past its own expiry still opens a session that has ended, during
    the transcript retention period after its end (its summary and transcript stay readable).
    """
    # One verification: with ``ended_ok`` a link past its expiry passes it, and is told apart
    # here (only an ended session may then be opened).
    claims = ctx.links.verify(token, now=0 if ended_ok else None)
    if claims is None:
        return None
    expired = ended_ok and claims.expires_at < time.time()
    try:
        record = await ctx.service.get(claims.session_id)
    except SessionNotFound:
        return None
    if ended_ok and not record.state.is_open and not retained(ctx, record):
        return None
    if expired and record.state.is_open:
        return None
    return claims, record


async def link_session(
    ctx: WebContext, request: web.Request, bucket: Literal["pages", "websocket"]
) -> tuple[LinkClaims, SessionRecord] | web.Response:
    """The claims and session of the request's ``/v/<token>`` link, or the answer instead.

    The answer is 429 over the ``bucket`` rate limit and the plain 404 for a bad link. Pages
    also open an ended session while it is kept (``session_for(ended_ok=True)``); the socket
    does not.
    """
    page = bucket == "pages"
    if limited(ctx, request, bucket):
        return too_many(ctx, "page" if page else bucket, page=page)
    found = await session_for(ctx, request.match_info["token"], ended_ok=page)
    return not_found(ctx) if found is None else found


def retained(ctx: WebContext, record: SessionRecord) -> bool:
    """Whether an ended session's summary and transcript are still kept."""
    end = record.ended_at or record.ending_at or record.created_at
    keep_s = ctx.settings.transcript_retention_h * 3600
    return (utcnow() - end).total_seconds() <= keep_s


def vendor_name(ctx: WebContext, provider: str) -> str:
    """The display name of a provider (its id when it is no longer configured)."""
    prov = ctx.service.providers.get(provider)
    return prov.display_name if prov is not None else provider


def multi_viewer(ctx: WebContext, provider: str) -> bool:
    """Whether a provider's sessions serve many viewers at once."""
    prov = ctx.service.providers.get(provider)
    return bool(prov is not None and prov.capabilities.multi_viewer)


def page_config(ctx: WebContext, token: str, claims: LinkClaims,
                record: SessionRecord) -> dict[str, Any]:
    """What the page script needs: only what a browser must have to join the media."""
    viewer = record.viewer
    media: dict[str, Any] = {}
    if viewer is not None:
        if viewer.transport == "agora":
            media = {"app_id": viewer.app_id, "channel": viewer.channel, "token": viewer.token,
                     "uid": viewer.uid}
        elif viewer.transport == "livekit":
            media = {"url": viewer.url, "token": viewer.token}
        else:
            media = {"ice_servers": viewer_ice_servers(ctx, record)}
    return {
        "token": token,
        "role": claims.role,
        "transport": viewer.transport if viewer else None,
        "media": media,
        "avatar": record.avatar_name,
        "vendor": vendor_name(ctx, record.provider),
        "state": record.state.value,
        "seconds_left": record.seconds_left(),
        "multi_viewer": multi_viewer(ctx, record.provider),
        "max_text": max_text(ctx, record.provider),
        "can_interrupt": can_interrupt(ctx, record.provider),
        "media_timeout_s": ctx.settings.viewer_media_timeout_s,
        "operator_hint": OPERATOR_HINT if record.provider == "local" else None,
        "playground": playground_on(ctx),
    }


def viewer_ice_servers(ctx: WebContext, record: SessionRecord) -> list[dict[str, Any]]:
    """The ICE servers of one page load of a WebRTC session.

    A vendor's (HeyGen v1) are the vendor's own per-session ones, passed on as they are. For
    the local avatar, whose peer is this server, a page gets the credential-free entries and,
    with ``TURN_URLS``, TURN credentials minted for this page alone (bot/core/ice.py); static
    credentials never reach a browser.
    """
    servers = record.viewer.ice_servers if record.viewer is not None else []
    if record.provider != LOCAL:
        return servers
    out = public_ice_servers(servers)
    settings = ctx.settings
    if settings.turn_urls and settings.turn_shared_secret is not None:
        out.append(minted_turn_server(
            settings.turn_urls, settings.turn_shared_secret.get_secret_value().encode(),
            secrets.token_hex(8), settings.turn_ttl_s,
        ))
    return out


# Shown when the local avatar's video never arrives: what whoever runs the server can change.
OPERATOR_HINT = (
    "If you run this server: viewers behind strict firewalls need a TURN relay, set with "
    "TURN_URLS and TURN_SHARED_SECRET; for testing with the browser on the same machine, set "
    "LOCAL_ALLOW_LOOPBACK=true."
)


def playground_on(ctx: WebContext) -> bool:
    """Whether pages offer the playground (it is enabled and the local avatar runs)."""
    return ctx.settings.playground_enabled and LOCAL in ctx.service.providers


def homed(ctx: WebContext, provider: str) -> bool:
    """Whether a provider's sessions live in one worker's memory (bot/core/homes.py)."""
    prov = ctx.service.providers.get(provider)
    return bool(prov is not None and has_home(prov.capabilities))


def max_text(ctx: WebContext, provider: str) -> int:
    """The longest say/ask text the session's provider takes."""
    prov = ctx.service.providers.get(provider)
    return prov.capabilities.max_text_chars if prov is not None else 2000


def can_interrupt(ctx: WebContext, provider: str) -> bool:
    """Whether the session's avatar can be interrupted."""
    prov = ctx.service.providers.get(provider)
    return bool(prov is not None and prov.capabilities.interrupt)


def line_json(line: TranscriptLine) -> dict[str, Any]:
    """A kept line as the page receives it (the shape of a ``transcript`` message)."""
    return {"speaker": line.speaker, "text": line.text, "author": line.author,
            "intent": line.intent, "final": True, "at": line.at}


def format_duration(seconds: int) -> str:
    """``3 min 05 s`` style."""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


# ---------------------------------------------------------------------------- page
async def viewer_page(request: web.Request) -> web.Response:
    """The viewer page, the ended summary, or the plain 404."""
    ctx = request.app[WEB]
    found = await link_session(ctx, request, "pages")
    if isinstance(found, web.Response):
        return found
    claims, record = found
    token = request.match_info["token"]
    card = card_for(record, vendor_name(ctx, record.provider), f"{ctx.links.base_url}/v/{token}")
    if is_preview_fetcher(request.headers.get("User-Agent")):
        # A chat building the link's card (web/preview.py): the tags and nothing to join with.
        return ctx.render("card.html", card=card, live=record.state.is_open)
    if not record.state.is_open:
        summary = ctx.service.summary(record)
        lines = await ctx.service.transcript(record.id)
        return ctx.render(
            "ended.html", avatar=record.avatar_name, vendor=vendor_name(ctx, record.provider),
            duration=format_duration(summary.duration_s),
            failed=record.state is SessionState.FAILED, reason=summary.reason,
            lines=[(speaker_label(record.avatar_name, li), li) for li in lines],
            download=f"/v/{token}/transcript.txt",
            playground=playground_on(ctx),
            retention_h=ctx.settings.transcript_retention_h, card=card,
        )
    config = page_config(ctx, token, claims, record)
    if record.viewer is not None and record.viewer.transport == "livekit" and record.viewer.url:
        request[CSP_KEY] = connect_origins(record.viewer.url)
    return ctx.render("viewer.html", config=config, host=claims.role == "host",
                      card=card)


async def transcript_file(request: web.Request) -> web.Response:
    """``GET /v/<token>/transcript.txt``: the kept transcript as a text download."""
    ctx = request.app[WEB]
    found = await link_session(ctx, request, "pages")
    if isinstance(found, web.Response):
        return found
    _, record = found
    text = transcript_text(record.avatar_name, await ctx.service.transcript(record.id))
    name = transcript_filename(record.id)
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def preview_image(request: web.Request) -> web.StreamResponse:
    """``/v/<token>/preview.png``: the card image of a viewer link (web/preview.py).

    The built-in avatar's face, or a redirect to the vendor's thumbnail, or a neutral card.
    Reads only; a bad token gets the same plain 404 as the page.
    """
    ctx = request.app[WEB]
    found = await link_session(ctx, request, "pages")
    if isinstance(found, web.Response):
        return found
    _, record = found
    image: bytes | None = None
    if record.provider == "local":
        image = await face_png(record.avatar_id)
    else:
        try:
            info = await asyncio.wait_for(
                ctx.service.find_avatar(record.avatar_id, record.provider), VENDOR_LOOKUP_S)
        except Exception:  # a slow or failing vendor list: show the plain card
            log.info("no vendor thumbnail for a link preview", exc_info=True)
            info = None
        thumb = info.preview_url if info is not None else None
        if thumb and thumb.startswith("https://"):
            raise web.HTTPFound(thumb)
    return web.Response(body=image or neutral_card(), content_type="image/png",
                        headers={"Cache-Control": "public, max-age=300"})


# ---------------------------------------------------------------------------- websocket
async def viewer_socket(request: web.Request) -> web.StreamResponse:
    """The page's WebSocket: events out; takeover and relayed data messages in."""
    ctx = request.app[WEB]
    found = await link_session(ctx, request, "websocket")
    if isinstance(found, web.Response):
        return found
    _, record = found
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=WS_MAX_FRAME)
    await ws.prepare(request)
    if not record.state.is_open:
        await ws.send_json({"type": "end", "summary": None})
        await ws.close()
        return ws
    try:
        viewer = await ctx.hub.join(
            record.id, ws, multi_viewer=multi_viewer(ctx, record.provider),
            take_over=request.query.get("passive") != "1", homed=homed(ctx, record.provider),
        )
    except HubClosed:
        await ws.close(code=WSCloseCode.GOING_AWAY)
        return ws
    try:
        # The session may have ended between the check above and the join (its end event
        # then went by before this page's room listened).
        try:
            record = await ctx.service.get(record.id)
        except StoreFault as exc:
            # The socket is open: no JSON error can be sent; the page retries on this code.
            log.warning("viewer socket: database fault: %s", exc.cause)
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)
            return ws
        if not record.state.is_open:
            await ws.send_json({"type": "end", "summary": None})
            await ws.close()
            return ws
        history = [line_json(li) for li in await ctx.service.transcript(record.id)]
        await ctx.hub.send(viewer, {
            "type": "hello", "viewer_id": viewer.id, "active": ctx.hub.is_active(viewer),
            "state": record.state.value, "seconds_left": record.seconds_left(),
            "transcript": history,
            "max_report_bytes": MAX_PAGE_MESSAGE,
        })
        await _read_loop(ctx, viewer, ws)
    finally:
        await ctx.hub.leave(viewer)
    return ws


async def _read_loop(ctx: WebContext, viewer: Viewer, ws: web.WebSocketResponse) -> None:
    bucket = TokenBucket(*ctx.limits.ws_messages)
    async for msg in ws:
        if msg.type is not WSMsgType.TEXT:
            if msg.type is WSMsgType.ERROR:
                log.info("viewer socket error: %r", ws.exception(),
                         extra={"session": viewer.session_id})
            else:
                _drop(ctx, viewer, "binary")
            continue
        ctx.metrics.ws_messages.labels("in").inc()
        if not bucket.allow(viewer.id):
            _drop(ctx, viewer, "rate")
            continue
        if len(msg.data) > MAX_PAGE_MESSAGE:
            _drop(ctx, viewer, "oversized")
            continue
        try:
            data = json.loads(msg.data)
        except (ValueError, RecursionError):  # deep nesting ("[[[[...") is a RecursionError
            _drop(ctx, viewer, "not_json")
            continue
        if not isinstance(data, dict):
            _drop(ctx, viewer, "not_object")
            continue
        await _handle(ctx, viewer, data)


def _drop(ctx: WebContext, viewer: Viewer, reason: str) -> None:
    ctx.metrics.ws_dropped.labels(reason).inc()
    ctx.hub.drops.drop(viewer.session_id, reason)


async def _handle(ctx: WebContext, viewer: Viewer, data: dict[str, Any]) -> None:
    kind = data.get("type")
    if kind == "ping":
        await ctx.hub.send(viewer, {"type": "pong"})
    elif kind == "takeover":
        await ctx.hub.take_over(viewer)
    elif kind == "joined":
        await ctx.hub.joined(viewer, data.get("joined") is not False)
    elif kind == "relayed":
        ids = data.get("ids")
        if (not isinstance(ids, list) or not 0 < len(ids) <= MAX_ACK_IDS
                or not all(isinstance(i, str) and len(i) <= 64 for i in ids)):
            _drop(ctx, viewer, "bad_ack")
            return
        await ctx.hub.relayed(viewer, ids)
    elif kind == "data":
        if not ctx.hub.is_relay_target(viewer):
            _drop(ctx, viewer, "not_active")
            return
        try:
            await ctx.service.viewer_data(viewer.session_id, data.get("payload"))
        except AvatarBotError:
            _drop(ctx, viewer, "session_not_live")
        except Exception:
            # A provider that cannot decode a message must not take the socket down.
            log.exception("viewer data could not be decoded", extra={"session": viewer.session_id})
    else:
        _drop(ctx, viewer, "unknown_type")


# ---------------------------------------------------------------------------- signalling
async def signalling(request: web.Request) -> web.Response:
    """``POST /v/<token>/webrtc/{offer|answer|candidate|leave}`` for a connected viewer."""
    ctx = request.app[WEB]
    if limited(ctx, request, "signalling"):
        return too_many(ctx, "signalling", page=False)
    action = request.match_info["action"]
    if action not in ("offer", "answer", "candidate", "leave"):
        raise web.HTTPNotFound()
    found = await session_for(ctx, request.match_info["token"])
    if found is None:
        return web.json_response({"error": "not found"}, status=404)
    body = await _json_body(request)
    if body is None:
        return web.json_response({"error": "bad request"}, status=400)
    viewer = ctx.hub.find(found[1].id, str(body.get("viewer_id", "")))
    if viewer is None and action == "leave":
        # Leaving is idempotent: a page whose socket already closed (the session ended) has
        # no peer left to drop.
        return web.json_response({"ok": True})
    if viewer is None:
        return web.json_response({"error": "unknown viewer"}, status=409)
    if action != "leave" and not ctx.hub.is_active(viewer):
        return web.json_response({"error": "watching in another tab"}, status=409)
    try:
        return await _signal(ctx, viewer, action, body)
    except AvatarBotError:
        raise  # the core's errors get their status in web.app's error middleware
    except Exception:
        # e.g. an SDP the WebRTC stack cannot parse: the page gets a plain error, we the trace.
        log.exception("signalling %s failed", action, extra={"session": viewer.session_id})
        return web.json_response({"error": "The video connection could not be set up."},
                                 status=502)


async def _signal(ctx: WebContext, viewer: Viewer, action: str,
                  body: dict[str, Any]) -> web.Response:
    sig, ps = await ctx.service.signalling(viewer.session_id)
    if action == "offer":
        viewer.signalled = True
        offer = await sig.viewer_offer(ps, viewer.id)
        return web.json_response({"type": offer["type"], "sdp": offer["sdp"]})
    if action == "answer":
        sdp = body.get("sdp")
        if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP:
            return web.json_response({"error": "bad answer"}, status=400)
        await sig.viewer_answer(ps, viewer.id, sdp)
    elif action == "candidate":
        candidate = _candidate(body.get("candidate"))
        if candidate is False:
            return web.json_response({"error": "bad candidate"}, status=400)
        await sig.viewer_candidate(ps, viewer.id, candidate or None)
    else:
        viewer.signalled = False
        await sig.viewer_leave(ps, viewer.id)
    return web.json_response({"ok": True})


def _candidate(raw: Any) -> dict[str, Any] | None | Literal[False]:
    """A browser ICE candidate, ``None`` for end-of-candidates, ``False`` when malformed."""
    if raw is None or (isinstance(raw, dict) and not raw.get("candidate")):
        return None
    if not isinstance(raw, dict):
        return False
    cand, mid, index = raw.get("candidate"), raw.get("sdpMid"), raw.get("sdpMLineIndex")
    if not isinstance(cand, str) or len(cand) > MAX_CANDIDATE:
        return False
    if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
        return False
    if index is not None and (not isinstance(index, int) or not 0 <= index < 64):
        return False
    return {"candidate": cand, "sdpMid": mid, "sdpMLineIndex": index}


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    if request.content_length is not None and request.content_length > MAX_SDP + 4096:
        return None
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, ConnectionError, RecursionError):
        # RecursionError: deeply nested JSON ("[[[[..."), which json.loads cannot decode.
        return None
    return body if isinstance(body, dict) else None
