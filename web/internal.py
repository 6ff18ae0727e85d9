"""``POST /internal/home``: what another worker forwards to a session's home.

Only with several workers (docs/scale-out.md, "Sessions with a home"); the route exists only when
the app is given the signing key. A request must carry a valid ``X-Avatarbot-Worker`` signature
(``bot/cluster/homes.py``); anything else gets the plain 404 every unknown path gets, so the
route reveals nothing to the public. A call is run here and never forwarded again.

Operations (JSON ``{"op", "session_id", ...}``):

- ``say``/``ask`` ``{text}``, ``interrupt``, ``data`` ``{payload}``: the provider in this
  process handles them (``SessionService.deliver_here`` / ``viewer_data_here``);
- ``offer``/``answer``/``candidate``/``leave`` ``{viewer_id, sdp?, candidate?}``: the local
  avatar's WebRTC signalling for a viewer whose page is connected to the calling worker;
- ``relay_take`` ``{page}``, ``relay_acked`` ``{page, ids}``, ``relay_release`` ``{page}``,
  ``relay_present`` ``{present}``: the relay outbox of this process (``bot/core/relay.py``),
  for a relay page connected to the calling worker.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from bot.cluster.homes import HEADER, PATH, verify
from bot.core.errors import AvatarBotError, InvalidRequest
from bot.core.models import Mode
from bot.core.provider import WebRTCSignalling
from web.context import WEB

log = logging.getLogger(__name__)

MAX_BODY = 160 * 1024
HOME_KEY = web.AppKey("avatarbot_home_key", bytes)


def setup(app: web.Application, key: bytes) -> None:
    """Register the route, checked with ``key`` (``forward_key`` of the link secret)."""
    app[HOME_KEY] = key
    app.router.add_post(PATH, home_call)


async def home_call(request: web.Request) -> web.Response:
    """Run one forwarded operation on this worker, the session's home."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPNotFound()
    body = await request.read()
    if len(body) > MAX_BODY or not verify(request.app[HOME_KEY], request.headers.get(HEADER),
                                          body):
        raise web.HTTPNotFound()
    try:
        call = json.loads(body)
    except ValueError:
        return web.json_response({"error": "bad request"}, status=400)
    if not isinstance(call, dict) or not isinstance(call.get("session_id"), str):
        return web.json_response({"error": "bad request"}, status=400)
    op = str(call.get("op"))
    try:
        return web.json_response(await _run(request, op, call["session_id"], call))
    except AvatarBotError:
        raise  # web.app's error middleware gives it its status and user message
    except Exception:
        log.exception("a forwarded %s failed", op, extra={"session": call["session_id"]})
        return web.json_response({"error": "The request could not be completed."}, status=502)


def _text(call: dict[str, Any], name: str, limit: int) -> str:
    value = call.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidRequest(f"The forwarded {name} is missing or too long.")
    return value


async def _run(request: web.Request, op: str, session_id: str,
               call: dict[str, Any]) -> dict[str, Any]:
    ctx = request.app[WEB]
    service = ctx.service
    outboxes = service.events.relay
    # The relay outbox needs no live record: an ack after the end is simply not counted.
    if op == "relay_take":
        page = _text(call, "page", 64)
        config = outboxes.config(session_id)
        taken = outboxes.take(session_id, page)
        return {"config": config.as_json() if config else None,
                "messages": [[mid, payload] for mid, payload in taken]}
    if op == "relay_acked":
        ids = call.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest("The forwarded ids are not a list of strings.")
        return {"count": outboxes.acked(session_id, _text(call, "page", 64), ids)}
    if op == "relay_release":
        outboxes.release(session_id, _text(call, "page", 64))
        return {"ok": True}
    if op == "relay_present":
        outboxes.set_present(session_id, call.get("present") is True)
        return {"ok": True}
    record = await service.live(session_id)
    prov, ps = service.provider_session(record)
    if op in ("say", "ask"):
        mode = Mode.SAY if op == "say" else Mode.ASK
        await service.deliver_here(prov, ps, mode, _text(call, "text", 64 * 1024))
        return {"ok": True}
    if op == "interrupt":
        await prov.interrupt(ps)
        return {"ok": True}
    if op == "data":
        return {"lines": len(service.viewer_data_here(prov, ps, call.get("payload")))}
    if op in ("offer", "answer", "candidate", "leave"):
        if not isinstance(prov, WebRTCSignalling):
            raise InvalidRequest("This session does not use WebRTC signalling.")
        viewer_id = _text(call, "viewer_id", 64)
        if op == "offer":
            offer = await prov.viewer_offer(ps, viewer_id)
            return {"type": offer["type"], "sdp": offer["sdp"]}
        if op == "answer":
            await prov.viewer_answer(ps, viewer_id, _text(call, "sdp", 64 * 1024))
        elif op == "candidate":
            candidate = call.get("candidate")
            if candidate is not None and not isinstance(candidate, dict):
                raise InvalidRequest("The forwarded candidate is not an object.")
            await prov.viewer_candidate(ps, viewer_id, candidate)
        else:
            await prov.viewer_leave(ps, viewer_id)
        return {"ok": True}
    raise InvalidRequest(f"Unknown forwarded operation {op[:32]!r}.")
