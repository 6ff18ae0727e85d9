"""A fake LiveAvatar API, FULL mode (``docs/vendors/liveavatar.md`` has every source).

REST: ``X-API-KEY`` on server calls, ``Authorization: Bearer <session_token>`` on the session
calls [LA-docs create-session-token, start-session; SDK 0.0.18 SessionApiClient.js]; envelope
``{code: 100, data, message}`` [LA-docs OpenAPI ``Response`` default]; ``sessions/start``
answers HTTP 201 [LA-docs start-session]; validation errors are FastAPI's 422 ``{detail: [...]}``
[LA-docs OpenAPI ``HTTPValidationError``]; other errors ``{code, message}`` with an HTTP status
(the exact codes are not published: [?]); 429 carries ``Retry-After`` and ``X-RateLimit-Reset``
[LA-docs core-concepts/rate-limits].

Media: the LiveKit room is simulated by ``room(vendor_id)``: what the viewer page publishes on
topic ``agent-control`` goes to ``publish`` and the avatar's answers on topic ``agent-response``
land in ``viewer_messages`` [LA-docs full-mode/events; SDK const.js]. A FULL session without a
``context_id`` speaks ``speak_text`` but ignores ``speak_response`` (restricted mode) [LA-docs
core-concepts/contexts]. The session's ``ws_url`` speaks the LITE-mode socket protocol
(``{type: ...}``): it sends ``session.state_updated`` and takes ``agent.interrupt`` and
``session.keep_alive``; ``avatar.*`` text commands are not part of it [LA-docs lite-mode/events;
SDK 0.0.18 LiveAvatarSession.js ``sendCommandEventToWebSocket``].

Billing: 2 credits a minute in FULL mode, per started minute, a session needs one minute of
credit to start [LA-docs faq/credits]. Sandbox sessions cost nothing.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.vendor_base import FakeVendor, body_of

V1 = "/v1"
SANDBOX_AVATAR = "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a"


@dataclass
class Session:
    """One LiveAvatar session."""

    id: str
    body: dict[str, Any]  # the token request
    token: str
    status: str = "token"  # token -> active -> closed
    client_token: str = ""
    agent_token: str = ""
    ws_token: str = ""
    said: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    interrupts: int = 0
    keep_alives: int = 0
    stop_reason: str | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    socket_received: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def context_id(self) -> str | None:
        persona = self.body.get("avatar_persona") or {}
        return persona.get("context_id") if isinstance(persona, dict) else None


class Room:
    """The session's LiveKit room, as far as data messages go."""

    def __init__(self, fake: FakeLiveAvatar, session: Session) -> None:
        self._fake = fake
        self._session = session

    def publish(self, topic: str, raw: bytes | str) -> None:
        """The viewer page publishes a data message (the LiveKit ``publishData`` call)."""
        if topic != "agent-control":
            return  # the agent listens on agent-control only [LA-docs full-mode/events]
        try:
            msg = json.loads(raw)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        self._fake.command(self._session, msg)


class FakeLiveAvatar(FakeVendor):
    """LiveAvatar on an ephemeral port; ``sessions`` keeps every session."""

    api_key = "liveavatar-test-key-7c1f"

    def __init__(self, *, max_concurrent: int = 3, retry_after: str = "1", **kw: Any) -> None:
        super().__init__(**kw)
        self.max_concurrent = max_concurrent
        self.retry_after = retry_after
        # AvatarSchema items [LA-docs api-reference/avatar/list-public-avatars]
        self.user_avatars = [
            {"id": "7b1e9d1c-5f0a-4d3e-9a51-2f8c3e4d5a6b", "name": "Dexter in the office",
             "type": "VIDEO", "status": "ACTIVE", "preview_url": "https://x/dexter.webp",
             "is_expired": False, "default_voice": {"id": "v1", "name": "Dexter"}},
            {"id": "Retired_1", "name": "Expired", "type": "VIDEO", "status": "ACTIVE",
             "is_expired": True},
            {"id": "dvp_Old", "name": "Still training", "type": "VIDEO", "status": "INIT",
             "is_expired": False},
        ]
        self.public_avatars = [
            # the sandbox avatar, the only one sandbox sessions may use [LA-docs sandbox-mode]
            {"id": SANDBOX_AVATAR, "name": "Wayne", "type": "VIDEO", "status": "ACTIVE",
             "preview_url": None, "is_expired": False},
            {"id": "0f6c2b4e-8a1d-4c3b-b5e7-9d2a1f3c4e5d", "name": "Wayne (public)",
             "type": "VIDEO", "status": "ACTIVE", "preview_url": None, "is_expired": False},
        ]
        self.contexts: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, Session] = {}
        self.credits_used = 0
        self.viewer_messages: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ test API
    def open_sessions(self) -> list[str]:
        """Ids of sessions started and not stopped."""
        return [s.id for s in self.sessions.values() if s.status == "active"]

    def issued_tokens(self) -> list[str]:
        """Every credential handed out: session, LiveKit client and agent, socket tokens."""
        found = []
        for s in self.sessions.values():
            found += [t for t in (s.token, s.client_token, s.agent_token, s.ws_token) if t]
        return found

    def add_session(self, avatar_id: str = "7b1e9d1c-5f0a-4d3e-9a51-2f8c3e4d5a6b") -> str:
        """Start a session behind our back (an orphan); return its id."""
        session = Session(str(uuid.uuid4()), {"avatar_id": avatar_id, "mode": "FULL"},
                          "la-orphan-" + secrets.token_urlsafe(16), status="active")
        self.sessions[session.id] = session
        return session.id

    def room(self, vendor_id: str) -> Room:
        """The LiveKit room of a session."""
        return Room(self, self.sessions[vendor_id])

    async def end_session(self, vendor_id: str, reason: str = "INSUFFICIENT_CREDITS") -> None:
        """LiveAvatar ends the session on its own (credits out, idle, max duration)."""
        session = self.sessions[vendor_id]
        self._close(session, reason)
        self._emit(session, "session.stopped", end_reason=reason)
        for ws in list(session.sockets):
            await ws.send_json({"type": "session.state_updated", "state": "closed"})
            await ws.close()

    def settings_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``load_settings`` that point the app at this fake."""
        return {"liveavatar_api_key": self.api_key, "liveavatar_base_url": self.url}

    # ------------------------------------------------------------------ the avatar
    def command(self, session: Session, msg: dict[str, Any]) -> None:
        """An ``agent-control`` command [LA-docs full-mode/events, command table]."""
        if session.status != "active":
            return
        kind, text = msg.get("event_type"), msg.get("text")
        source = msg.get("event_id")
        if kind == "avatar.interrupt":
            session.interrupts += 1
        elif kind == "avatar.speak_text" and isinstance(text, str) and text:
            session.said.append(text)
            self._speak(session, text, source)
        elif kind == "avatar.speak_response" and isinstance(text, str) and text:
            session.asked.append(text)
            if session.context_id is None:
                return  # restricted mode: streams, ignores input [LA-docs core-concepts/contexts]
            session.transcript.append(self._line(session, "user", text))
            self._speak(session, f"You asked: {text}.", source, chunks=True)

    def _speak(self, session: Session, text: str, source: Any, chunks: bool = False) -> None:
        self._emit(session, "avatar.speak_started", source=source)
        if chunks:  # the SDK lists avatar.transcription.chunk [SDK 0.0.18 events.js]
            half = max(1, len(text) // 2)
            for piece in (text[:half], text[half:]):
                self._emit(session, "avatar.transcription.chunk", source=source, text=piece)
        # emitted after generation, or at once for speak_text [LA-docs full-mode/events]
        self._emit(session, "avatar.transcription", source=source, text=text)
        self._emit(session, "avatar.speak_ended", source=source)
        session.transcript.append(self._line(session, "avatar", text))

    def _line(self, session: Session, role: str, text: str) -> dict[str, Any]:
        # transcript_data items [LA-docs get-session-transcript]
        return {"role": role, "transcript": text, "absolute_timestamp": time.time(),
                "relative_timestamp": time.monotonic() - session.created}

    def _emit(self, session: Session, kind: str, source: Any = None, **data: Any) -> None:
        # every event: {event_id, event_type, session_id, source_event_id} [LA-docs full-mode]
        event = {"event_id": str(uuid.uuid4()), "event_type": kind, "session_id": session.id,
                 "source_event_id": source, **data}
        self.viewer_messages.setdefault(session.id, []).append(json.dumps(event))

    def _close(self, session: Session, reason: str) -> None:
        session.status = "closed"
        session.stop_reason = reason
        session.ended = time.monotonic()
        if not session.body.get("is_sandbox"):
            self.credits_used += 2 * max(1, math.ceil((session.ended - session.created) / 60))

    # ------------------------------------------------------------------ wire
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{V1}/avatars", self._avatars)
        router.add_get(f"{V1}/avatars/public", self._public_avatars)
        router.add_post(f"{V1}/contexts", self._create_context)
        router.add_delete(f"{V1}/contexts/{{context_id}}", self._delete_context)
        router.add_post(f"{V1}/sessions/token", self._token)
        router.add_post(f"{V1}/sessions/start", self._start)
        router.add_post(f"{V1}/sessions/stop", self._stop)
        router.add_post(f"{V1}/sessions/keep-alive", self._keep_alive)
        router.add_get(f"{V1}/sessions", self._list)
        router.add_get(f"{V1}/sessions/{{session_id}}/transcript", self._transcript)
        router.add_get(f"{V1}/ws/{{session_id}}", self._socket)

    def authorized(self, request: web.Request) -> bool:
        if request.path.startswith(f"{V1}/ws/") or request.path == f"{V1}/avatars/public":
            return True  # the socket checks its own token; public avatars need no auth
        if request.headers.get("X-API-KEY") == self.api_key:
            return True
        auth = request.headers.get("Authorization", "")
        return (request.path.startswith(f"{V1}/sessions/") and auth.startswith("Bearer ")
                and any(s.token == auth[7:] for s in self.sessions.values()))

    def unauthorized(self) -> web.Response:
        return _err(401, "Invalid API key")

    def error_body(self, status: int) -> dict[str, Any]:
        return {"code": status, "data": None, "message": "Internal server error"}

    async def _serve_fault(self, fault: Any) -> web.StreamResponse:
        if fault.kind == "429":  # [LA-docs core-concepts/rate-limits]
            return web.json_response(
                {"code": 429, "data": None, "message": "Too many requests"}, status=429,
                headers={"Retry-After": self.retry_after, "X-RateLimit-Reset": "1"})
        return await super()._serve_fault(fault)

    def vendor_fault(self, kind: str) -> web.Response:
        if kind == "credits":
            return _err(402, "Insufficient credits to start a session")
        if kind == "concurrent":
            return _err(400, "Concurrent session limit reached")
        if kind == "avatar":
            return _err(404, "Avatar not found")
        if kind == "422":
            return web.json_response({"detail": [{"loc": ["body", "avatar_id"],
                                                  "msg": "Input should be a valid UUID",
                                                  "type": "uuid_parsing"}]}, status=422)
        return super().vendor_fault(kind)

    async def _avatars(self, request: web.Request) -> web.Response:
        return _page(self.user_avatars)

    async def _public_avatars(self, request: web.Request) -> web.Response:
        return _page(self.public_avatars)

    async def _create_context(self, request: web.Request) -> web.Response:
        body = body_of(request)
        if not isinstance(body.get("name"), str) or not isinstance(body.get("prompt"), str):
            return _validation("prompt")
        cid = str(uuid.uuid4())
        # ContextDetailSchema [LA-docs api-reference/contexts/get-context-by-id]
        self.contexts[cid] = {"id": cid, "name": body["name"], "prompt": body["prompt"],
                              "opening_text": body.get("opening_text") or "", "links": [],
                              "created_at": "2026-11-30T12:00:00Z",
                              "updated_at": "2026-11-30T12:00:00Z"}
        return _ok(self.contexts[cid])

    async def _delete_context(self, request: web.Request) -> web.Response:
        if self.contexts.pop(request.match_info["context_id"], None) is None:
            return _err(404, "Context not found")
        return _ok(None)

    async def _token(self, request: web.Request) -> web.Response:
        body = body_of(request)
        ids = {a["id"] for a in self.user_avatars + self.public_avatars if not a["is_expired"]}
        if body.get("mode") not in ("FULL", "LITE"):
            return _validation("mode")
        if body.get("avatar_id") not in ids:
            return _err(404, "Avatar not found")
        if body.get("is_sandbox") and body.get("avatar_id") != SANDBOX_AVATAR:
            # sandbox sessions take only the sandbox avatar; the exact answer is unpublished [?]
            return _err(400, "Avatar not available in sandbox mode")
        persona = body.get("avatar_persona") or {}
        if persona.get("context_id") is not None and persona["context_id"] not in self.contexts:
            return _err(404, "Context not found")
        session = Session(str(uuid.uuid4()), body, "la-session-" + secrets.token_urlsafe(24))
        self.sessions[session.id] = session
        return _ok({"session_id": session.id, "session_token": session.token})

    async def _start(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        session = next((s for s in self.sessions.values()
                        if auth.startswith("Bearer ") and s.token == auth[7:]), None)
        if session is None:
            return _err(401, "A session token is required")
        if session.status != "token":
            return _err(400, "Session already started")
        if len(self.open_sessions()) >= self.max_concurrent:
            return _err(400, "Concurrent session limit reached")
        session.status = "active"
        session.created = time.monotonic()
        session.client_token = "eyJlk-client." + secrets.token_urlsafe(32)
        session.agent_token = "eyJlk-agent." + secrets.token_urlsafe(32)
        session.ws_token = "ws-" + secrets.token_urlsafe(24)
        host = request.host
        return _ok({"session_id": session.id, "livekit_url": "wss://fake-livekit.liveavatar.test",
                    "livekit_client_token": session.client_token,
                    "livekit_agent_token": session.agent_token,
                    "max_session_duration": session.body.get("max_session_duration") or 1200,
                    "ws_url": f"ws://{host}{V1}/ws/{session.id}?token={session.ws_token}"},
                   status=201)

    def _by_body(self, request: web.Request) -> Session | web.Response:
        body = body_of(request)
        sid = body.get("session_id")
        auth = request.headers.get("Authorization", "")
        if sid is None and auth.startswith("Bearer "):  # implicit with the session token
            sid = next((s.id for s in self.sessions.values() if s.token == auth[7:]), None)
        session = self.sessions.get(str(sid))
        if session is None:
            return _err(404, "Session not found")
        if session.status != "active":
            return _err(400, "Session is not active")
        return session

    async def _stop(self, request: web.Request) -> web.Response:
        session = self._by_body(request)
        if isinstance(session, web.Response):
            return session
        self._close(session, str(body_of(request).get("reason") or "USER_CLOSED"))
        for ws in list(session.sockets):
            await ws.send_json({"type": "session.state_updated", "state": "closing"})
            await ws.close()
        return _ok(None)

    async def _keep_alive(self, request: web.Request) -> web.Response:
        session = self._by_body(request)
        if isinstance(session, web.Response):
            return session
        session.keep_alives += 1
        return _ok(None)

    async def _list(self, request: web.Request) -> web.Response:
        kind = request.query.get("type", "active")
        items = [s for s in self.sessions.values()
                 if (s.status == "active") == (kind == "active") and s.status != "token"]
        return _page([{"id": s.id, "created_at": "2026-11-30T12:00:00Z",
                       "updated_at": "2026-11-30T12:00:00Z", "duration": 0, "source": "API",
                       "mode": s.body.get("mode"), "is_sandbox": bool(s.body.get("is_sandbox")),
                       "credits_consumed": 0} for s in items])

    async def _transcript(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["session_id"])
        if session is None:
            return _err(404, "Session not found")
        start = float(request.query.get("start_timestamp") or 0)
        items = [t for t in session.transcript if t["absolute_timestamp"] > start]
        nxt = items[-1]["absolute_timestamp"] if items else None
        return _ok({"session_active": session.status == "active", "transcript_data": items,
                    "next_timestamp": nxt})

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request.match_info["session_id"])
        if session is None or request.query.get("token") != session.ws_token:
            return _err(401, "Invalid socket token")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session.sockets.append(ws)
        await ws.send_json({"type": "session.state_updated", "state": "connected"})
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                msg = json.loads(frame.data)
                session.socket_received.append(msg)
                if msg.get("type") == "agent.interrupt":
                    session.interrupts += 1
                elif msg.get("type") == "session.keep_alive":
                    session.keep_alives += 1
                # avatar.* text commands are not part of the socket protocol: ignored
        except asyncio.CancelledError:
            raise
        finally:
            if ws in session.sockets:
                session.sockets.remove(ws)
        return ws


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"code": 100, "data": data, "message": "Success"}, status=status)


def _page(results: list[dict[str, Any]]) -> web.Response:
    # PaginatedResponse [LA-docs list-public-avatars, list-sessions]
    return _ok({"count": len(results), "results": results, "next": None, "previous": None})


def _err(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "data": None, "message": message}, status=status)


def _validation(field_name: str) -> web.Response:
    return web.json_response({"detail": [{"loc": ["body", field_name], "msg": "Field required",
                                          "type": "missing"}]}, status=422)
