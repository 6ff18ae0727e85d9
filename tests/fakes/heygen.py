"""A fake HeyGen Interactive Avatar API (``docs/vendors/heygen.md``).

``X-Api-Key`` (or ``Authorization: Bearer <session token>``) auth; envelope
``{code: 100, message, data}`` except ``create_token`` (``{error: null, data: {token}}``);
errors as HTTP 400/401/500 with ``{code, message}``. ``streaming.new`` takes ``avatar_id`` or
``avatar_name``; ``version: "v2"`` gives LiveKit credentials, otherwise a v1 SDP offer. Tasks take
``repeat`` and ``chat`` (or its SDK synonym ``talk``). A ``chat`` task on a v2 session queues the
avatar's LiveKit data events (``avatar_talking_message`` pieces then ``avatar_end_message``) in
``viewer_messages``; a v1 session's data channel only ever carried ``avatar_start_talking`` /
``avatar_stop_talking`` (HeyGen's v1 ``openapi.yml`` events; the transcript events came with the
LiveKit SDK), so that is all a v1 session gets. At most ``max_concurrent`` sessions may be open
(trial accounts: 3). Billing: 0.2 credits per minute, 30 s minimum, counted on stop.

``session_duration_limit`` (seconds, exposed by HeyGen's SDK ``StartAvatarRequest``) is recorded
per session and must be a positive integer. ``end_session`` closes a session on HeyGen's side
(idle timeout, credits, an error): it leaves ``streaming.list``, and calls about it answer
"session state wrong: closed" (the message seen after an idle close, StreamingAvatarSDK issue 26).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.vendor_base import FakeVendor, body_of

V1 = "/v1"
OFFER_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fake-heygen-offer\r\n"


@dataclass
class Session:
    """One streaming session."""

    id: str
    avatar_id: str
    version: str
    body: dict[str, Any]
    access_token: str | None = None
    status: str = "new"  # new -> connected -> closed
    answer_sdp: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    interrupts: int = 0
    keep_alives: int = 0
    created: float = field(default_factory=time.monotonic)
    ended: float | None = None
    duration_limit: int | None = None  # session_duration_limit as sent
    ended_by_vendor_at: float | None = None  # time.time() when HeyGen closed it on its own


class FakeHeyGen(FakeVendor):
    """HeyGen on an ephemeral port; ``sessions`` keeps every session."""

    api_key = "heygen-test-key-4d8e"

    def __init__(self, *, max_concurrent: int = 3, echo_repeat: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_concurrent = max_concurrent
        self.echo_repeat = echo_repeat  # also send avatar_talking_message for repeat tasks
        self.avatars = [
            {"avatar_id": "Anna_public_3_20240108", "pose_name": "Anna in blue",
             "normal_preview": "https://x/anna.webp", "status": "ACTIVE", "is_public": True},
            {"avatar_id": "Wayne_20240711", "pose_name": "Wayne", "status": "ACTIVE"},
            {"avatar_id": "Retired_1", "pose_name": "Retired", "status": "INACTIVE"},
        ]
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, bool] = {}  # session token -> already used for streaming.new
        self.credits_used = 0.0
        self.viewer_messages: dict[str, list[str]] = {}

    def open_sessions(self) -> list[str]:
        """Ids of sessions not stopped."""
        return [s.id for s in self.sessions.values() if s.status != "closed"]

    def issued_tokens(self) -> list[str]:
        """Session tokens and LiveKit access tokens handed out."""
        return list(self.tokens) + [s.access_token for s in self.sessions.values()
                                    if s.access_token]

    def end_session(self, session_id: str, *, ago_s: float = 0.0) -> None:
        """Close a session on HeyGen's side, ``ago_s`` seconds in the past (no stop call)."""
        session = self.sessions[session_id]
        session.status = "closed"
        session.ended = time.monotonic() - ago_s
        session.ended_by_vendor_at = time.time() - ago_s
        self.credits_used += 0.2 * max(30.0, session.ended - session.created) / 60

    def add_session(self, avatar_id: str = "Anna_public_3_20240108") -> str:
        """Start a session behind our back (an orphan); return its id."""
        session = Session(uuid.uuid4().hex, avatar_id, "v2", {}, status="connected")
        self.sessions[session.id] = session
        return session.id

    def settings_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``load_settings`` that point the app at this fake."""
        return {"heygen_api_key": self.api_key, "heygen_base_url": self.url}

    # ------------------------------------------------------------------ wire
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(f"{V1}/streaming.create_token", self._create_token)
        router.add_post(f"{V1}/streaming.new", self._new)
        router.add_post(f"{V1}/streaming.start", self._start)
        router.add_post(f"{V1}/streaming.ice", self._ice)
        router.add_post(f"{V1}/streaming.task", self._task)
        router.add_post(f"{V1}/streaming.interrupt", self._interrupt)
        router.add_post(f"{V1}/streaming.keep_alive", self._keep_alive)
        router.add_post(f"{V1}/streaming.stop", self._stop)
        router.add_get(f"{V1}/streaming.list", self._list)
        router.add_get(f"{V1}/streaming/avatar.list", self._avatar_list)

    def authorized(self, request: web.Request) -> bool:
        if request.headers.get("X-Api-Key") == self.api_key:
            return True
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def unauthorized(self) -> web.Response:
        return _err(401, 400112, "Unauthorized")

    def error_body(self, status: int) -> dict[str, Any]:
        return {"code": status, "message": "Internal server error"}

    def vendor_fault(self, kind: str) -> web.Response:
        if kind == "400112":
            return _err(400, 400112, "Unauthorized")
        if kind == "10013":
            return _err(400, 10013, "avatar not found")
        if kind == "concurrent":
            return _err(400, 10004, "Concurrent limit reached")
        return super().vendor_fault(kind)

    async def _create_token(self, request: web.Request) -> web.Response:
        token = "hg-session-" + secrets.token_urlsafe(24)
        self.tokens[token] = False
        return web.json_response({"error": None, "data": {"token": token}})

    async def _new(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            if self.tokens.get(auth[7:]):
                return _err(400, 400175, "session token already used")
            self.tokens[auth[7:]] = True
        body = body_of(request)
        avatar = body.get("avatar_id") or body.get("avatar_name")  # both are documented
        if avatar not in {a["avatar_id"] for a in self.avatars if a["status"] == "ACTIVE"}:
            return _err(400, 10013, "avatar not found")
        limit = body.get("session_duration_limit")
        if limit is not None and (type(limit) is not int or limit <= 0):
            return _err(400, 400175, "invalid parameter: session_duration_limit")
        if len(self.open_sessions()) >= self.max_concurrent:
            return _err(400, 10004, "Concurrent limit reached")
        session = Session(uuid.uuid4().hex, avatar, body.get("version") or "v1", body,
                          duration_limit=limit)
        self.sessions[session.id] = session
        if session.version == "v2":
            session.access_token = "eyJlk." + secrets.token_urlsafe(32)
            return _ok({"session_id": session.id, "access_token": session.access_token,
                        "url": "wss://fake-livekit.heygen.test", "livekit_agent_token": "agent",
                        "realtime_endpoint": "wss://x", "is_paid": True,
                        "session_duration_limit": limit or 600, "sdp": None,
                        "ice_servers2": None})
        return _ok({"session_id": session.id, "sdp": {"type": "offer", "sdp": OFFER_SDP},
                    "ice_servers2": [{"urls": ["turn:turn.heygen.test:3478"],
                                      "username": "u", "credential": "c",
                                      "credentialType": "password"}]})

    def _session(self, body: dict[str, Any], *states: str) -> Session | web.Response:
        session = self.sessions.get(str(body.get("session_id")))
        if session is None:
            return _err(400, 10005, "Session not found")  # exact code unconfirmed [?]
        if session.status not in states:
            return _err(400, 10002, f"session state wrong: {session.status}")
        return session

    async def _start(self, request: web.Request) -> web.Response:
        body = body_of(request)
        session = self._session(body, "new")
        if isinstance(session, web.Response):
            return session
        if session.version == "v1":
            sdp = body.get("sdp") or {}
            if sdp.get("type") != "answer" or not sdp.get("sdp"):
                return _err(400, 40001, "sdp answer is required")
            session.answer_sdp = sdp["sdp"]
        session.status = "connected"
        return _ok(None)

    async def _ice(self, request: web.Request) -> web.Response:
        body = body_of(request)
        session = self._session(body, "connected")
        if isinstance(session, web.Response):
            return session
        if session.version != "v1" or not isinstance(body.get("candidate"), dict):
            return _err(400, 40001, "candidate is required")
        session.candidates.append(body["candidate"])
        return _ok(None)

    async def _task(self, request: web.Request) -> web.Response:
        body = body_of(request)
        session = self._session(body, "connected")
        if isinstance(session, web.Response):
            return session
        kind, text = body.get("task_type", "repeat"), body.get("text")
        if kind not in ("repeat", "chat", "talk") or not isinstance(text, str) or not text:
            return _err(400, 400175, "invalid parameter")
        session.tasks.append(body)
        if kind != "repeat":
            self._speak(session, f"You asked: {text}.")
        elif self.echo_repeat:
            self._speak(session, text)
        return _ok({"duration_ms": 1000.0 + 50 * len(text), "task_id": uuid.uuid4().hex})

    def _speak(self, session: Session, text: str) -> None:
        half = max(1, len(text) // 2)
        events: list[dict[str, Any]] = [{"type": "avatar_start_talking", "task_id": "t"}]
        if session.version == "v2":  # v1 had no transcript events (see the module docstring)
            events += [{"type": "avatar_talking_message", "message": p}
                       for p in (text[:half], text[half:])]
            events.append({"type": "avatar_end_message"})
        events.append({"type": "avatar_stop_talking", "task_id": "t", "duration_ms": 1000})
        self.viewer_messages.setdefault(session.id, []).extend(json.dumps(e) for e in events)

    async def _interrupt(self, request: web.Request) -> web.Response:
        session = self._session(body_of(request), "connected")
        if isinstance(session, web.Response):
            return session
        session.interrupts += 1
        return _ok(None)

    async def _keep_alive(self, request: web.Request) -> web.Response:
        session = self._session(body_of(request), "new", "connected")
        if isinstance(session, web.Response):
            return session
        session.keep_alives += 1
        return _ok(None)

    async def _stop(self, request: web.Request) -> web.Response:
        session = self._session(body_of(request), "new", "connected")
        if isinstance(session, web.Response):
            return session
        session.status = "closed"
        session.ended = time.monotonic()
        self.credits_used += 0.2 * max(30.0, session.ended - session.created) / 60
        return _ok(None, message="success")

    async def _list(self, request: web.Request) -> web.Response:
        return _ok({"sessions": [
            {"session_id": s.id, "status": s.status, "created_at": int(time.time())}
            for s in self.sessions.values() if s.status != "closed"
        ]})

    async def _avatar_list(self, request: web.Request) -> web.Response:
        return _ok(self.avatars)


def _ok(data: Any, message: str = "Success") -> web.Response:
    return web.json_response({"code": 100, "data": data, "message": message})


def _err(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)
