"""A fake AKool live-avatar v4 API (``docs/vendors/akool.md``) and its Agora data channel.

REST: ``x-api-key`` (or ``Authorization: Bearer``) auth, envelope ``{code: 1000, msg, data}``,
business errors as HTTP 200 with another ``code``. Credits are pre-charged per started minute of
``duration`` (at most 3600 s) and unused whole minutes are refunded on close. ``close`` takes
``{"id"}`` or ``{"session_id"}``.

Data channel: ``fake.channel(session_id).send(raw_bytes, at=seconds)`` plays the avatar's side of
Agora stream messages. It enforces AKool/Agora's limits (1 KB per message, 6 KB in any 1 s
window) and records violations (a chunk or command received twice counts as one), reassembles
chunked chat, applies ``set-params`` and ``interrupt`` and queues the avatar's replies
(``{v:2,type:"chat",pld:{from:"bot",text}}`` and command acks, which carry the command's ``mid``
as the docs' receive table says) in ``channel.outbox``. ``chats`` records the mode the avatar
was in when each chat was complete; ``lose`` names commands to lose on the way, once each.
In browser tests ``tests/fakes/agora_fake.js`` hands every stream message the page sends to
this channel and plays the replies back to the page.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.vendor_base import FakeVendor, body_of

API = "/api/open/v4"
MAX_MESSAGE_BYTES = 1024
MAX_BYTES_PER_SECOND = 6000


@dataclass
class DataChannel:
    """The avatar's end of one session's Agora data stream."""

    mode: int
    echo_retelling: bool = False
    said: list[str] = field(default_factory=list)  # completed chats in retelling mode
    asked: list[str] = field(default_factory=list)  # completed chats in dialogue mode
    commands: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    outbox: list[str] = field(default_factory=list)
    chats: list[tuple[int, str]] = field(default_factory=list)  # (mode on arrival, text)
    lose: list[str] = field(default_factory=list)  # commands lost on the way, once each
    lost: list[dict[str, Any]] = field(default_factory=list)
    _sent: list[tuple[float, int]] = field(default_factory=list)
    _chunks: dict[str, dict[int, str]] = field(default_factory=dict)
    _seen: set[tuple[str, int | None]] = field(default_factory=set)

    def send(self, raw: bytes, *, at: float) -> None:
        """Receive one stream message sent at time ``at`` (seconds, any origin)."""
        if len(raw) > MAX_MESSAGE_BYTES:
            self.violations.append(f"message of {len(raw)} bytes")
        self._sent.append((at, len(raw)))
        window = sum(n for t, n in self._sent if at - 1.0 < t <= at)
        if window > MAX_BYTES_PER_SECOND:
            self.violations.append(f"{window} bytes within 1 s")
        msg = json.loads(raw.decode("utf-8"))
        pld = msg.get("pld") if isinstance(msg.get("pld"), dict) else {}
        if msg.get("type") == "command" and pld.get("cmd") in self.lose:
            self.lose.remove(pld["cmd"])
            self.lost.append(msg)
            return
        key = (str(msg.get("mid")), msg.get("idx") if msg.get("type") == "chat" else None)
        if key in self._seen:
            self.violations.append(f"received {key} twice")
            return
        self._seen.add(key)
        if msg.get("v") != 2:
            self.violations.append("message without v=2")
        elif msg.get("type") == "chat":
            self._on_chat(msg)
        elif msg.get("type") == "command":
            self._on_command(msg)

    def _on_chat(self, msg: dict[str, Any]) -> None:
        parts = self._chunks.setdefault(msg["mid"], {})
        parts[msg["idx"]] = msg["pld"]["text"]
        if not msg["fin"]:
            return
        del self._chunks[msg["mid"]]
        if sorted(parts) != list(range(len(parts))):
            self.violations.append(f"chunks of {msg['mid']} are not 0..n")
        text = "".join(parts[i] for i in sorted(parts))
        self.chats.append((self.mode, text))
        if self.mode == 1:
            self.said.append(text)
            if self.echo_retelling:
                self._reply(text, msg["mid"] + "-r")
        else:
            self.asked.append(text)
            self._reply(f"You asked: {text}.", msg["mid"] + "-r")

    def peak_window(self) -> int:
        """The most bytes received within any 1-s window."""
        return max((sum(n for t, n in self._sent if at - 1.0 < t <= at) for at, _ in self._sent),
                   default=0)

    def largest(self) -> int:
        """The largest message received, in bytes."""
        return max((n for _, n in self._sent), default=0)

    def _reply(self, text: str, mid: str) -> None:
        half = max(1, len(text) // 2)
        for idx, (piece, fin) in enumerate(((text[:half], False), (text[half:], True))):
            self.outbox.append(json.dumps({"v": 2, "type": "chat", "mid": mid, "idx": idx,
                                           "fin": fin, "pld": {"from": "bot", "text": piece}}))

    def _on_command(self, msg: dict[str, Any]) -> None:
        pld = msg.get("pld") or {}
        self.commands.append(pld)
        code = 1000
        if pld.get("cmd") == "set-params":
            mode = (pld.get("data") or {}).get("mode")
            if mode in (1, 2):
                self.mode = mode
            elif mode is not None:
                code = 1003
        elif pld.get("cmd") != "interrupt":
            code = 1003
        self.outbox.append(json.dumps({"v": 2, "type": "command", "mid": msg.get("mid"),
                                       "pld": {"cmd": pld.get("cmd"), "code": code,
                                               "msg": "OK" if code == 1000 else "bad command"}}))


@dataclass
class Session:
    """One live-avatar session."""

    id: str
    avatar_id: str
    duration: int
    mode_type: int
    knowledge_id: str | None
    charged: int
    token: str
    status: int = 2  # 1 queueing, 2 processing (live), 3 completed, 4 failed
    started: float = field(default_factory=time.monotonic)
    body: dict[str, Any] = field(default_factory=dict)


class FakeAKool(FakeVendor):
    """AKool on an ephemeral port; ``sessions`` keeps every session, ``credits`` the balance."""

    api_key = "akool-test-key-91b2"

    def __init__(self, *, credits: int = 1000, close_closed_code: int = 1219, **kw: Any) -> None:
        super().__init__(**kw)
        self.credits = credits
        self.close_closed_code = close_closed_code  # the docs allow 1000 or 1219 here
        self.avatars = [
            {"_id": "a1", "avatar_id": "dvp_Tristan_cloth2_1080P", "name": "Tristan",
             "thumbnailUrl": "https://x/t.png", "available": True, "type": 2, "from": 2},
            {"_id": "a2", "avatar_id": "dvp_Alinna", "name": "Alinna", "available": True},
            {"_id": "a3", "avatar_id": "dvp_Old", "name": "Old", "available": False},
        ]
        self.sessions: dict[str, Session] = {}
        self.knowledge: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, DataChannel] = {}

    def channel(self, session_id: str) -> DataChannel:
        """The data channel of a session (by vendor id)."""
        return self.channels[session_id]

    def channel_named(self, agora_channel: str) -> DataChannel:
        """The data channel of the session whose Agora channel is ``agora_channel``."""
        for sid in self.channels:
            if f"ch-{sid[:8]}" == agora_channel:
                return self.channels[sid]
        raise KeyError(agora_channel)

    def open_sessions(self) -> list[str]:
        """Vendor ids of sessions not closed."""
        return [s.id for s in self.sessions.values() if s.status in (1, 2)]

    def issued_tokens(self) -> list[str]:
        """Every Agora token handed out."""
        return [s.token for s in self.sessions.values()]

    def end_session(self, session_id: str, status: int = 3) -> None:
        """AKool ends a session on its own: its detail and list show ``status`` (3 completed,
        4 failed) from now on, and the unused credits come back as on close."""
        session = self.sessions[session_id]
        session.status = status
        used = math.ceil((time.monotonic() - session.started) / 60)
        self.credits += max(0, session.charged - used)

    def add_session(self, avatar_id: str = "dvp_Tristan_cloth2_1080P", duration: int = 600) -> str:
        """Start a session behind our back (an orphan); return its id."""
        return self._create(avatar_id, duration, 2, None).id

    def settings_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``load_settings`` that point the app at this fake."""
        return {"akool_api_key": self.api_key, "akool_base_url": self.url}

    # ------------------------------------------------------------------ wire
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{API}/liveAvatar/avatar/list", self._avatar_list)
        router.add_post(f"{API}/knowledge/create", self._knowledge_create)
        router.add_post(f"{API}/liveAvatar/session/create", self._session_create)
        router.add_get(f"{API}/liveAvatar/session/detail", self._session_detail)
        router.add_post(f"{API}/liveAvatar/session/close", self._session_close)
        router.add_get(f"{API}/liveAvatar/session/list", self._session_list)

    def authorized(self, request: web.Request) -> bool:
        # If both headers are present, Authorization wins [AK-auth].
        auth = request.headers.get("Authorization")
        if auth is not None:
            return auth == f"Bearer {self.api_key}"
        return request.headers.get("x-api-key") == self.api_key

    def unauthorized(self) -> web.Response:
        return _err(1101, "Invalid authorization or the request token has expired")

    def error_body(self, status: int) -> dict[str, Any]:
        return {"code": status, "msg": "server error"}

    def vendor_fault(self, kind: str) -> web.Response:
        texts = {"1005": "frequent operation", "1006": "insufficient quota",
                 "1104": "insufficient credit", "1215": "liveAvatar processing is busy",
                 "1216": "liveAvatar session does not exist", "1003": "parameter error"}
        if kind in texts:
            return _err(int(kind), texts[kind])
        return super().vendor_fault(kind)

    async def _avatar_list(self, request: web.Request) -> web.Response:
        page, size = int(request.query.get("page", 1)), int(request.query.get("size", 100))
        if not 1 <= size <= 100 or page < 1:
            return _err(1003, "parameter error")
        items = self.avatars[(page - 1) * size: page * size]
        return _ok({"count": len(self.avatars), "result": items})

    async def _knowledge_create(self, request: web.Request) -> web.Response:
        body = body_of(request)
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str) or len(prompt) > 10_000:
            return _err(1003, "prompt must be at most 10000 characters")
        kid = secrets.token_hex(12)
        self.knowledge[kid] = body
        return _ok({"_id": kid, **body})

    async def _session_create(self, request: web.Request) -> web.Response:
        body = body_of(request)
        avatar_id, duration = body.get("avatar_id"), body.get("duration", 600)
        if not isinstance(avatar_id, str) or not isinstance(duration, int) or duration <= 0:
            return _err(1003, "avatar_id is required")
        if duration > 3600:
            return _err(1003, "duration must be at most 3600")
        if avatar_id not in {a["avatar_id"] for a in self.avatars if a["available"]}:
            return _err(1008, "avatar does not exist")
        kid = body.get("knowledge_id")
        if kid is not None and kid not in self.knowledge:
            return _err(1008, "knowledge does not exist")
        if math.ceil(duration / 60) > self.credits:
            return _err(1104, "insufficient credit")
        session = self._create(avatar_id, duration, int(body.get("mode_type", 2)), kid)
        session.body = body
        return _ok(self._view(session, status=1))

    def _create(self, avatar_id: str, duration: int, mode: int, kid: str | None) -> Session:
        charge = math.ceil(duration / 60)
        self.credits -= charge
        sid = secrets.token_hex(12)
        session = Session(sid, avatar_id, duration, mode, kid, charge,
                          token="006akool" + secrets.token_urlsafe(24))
        self.sessions[sid] = session
        self.channels[sid] = DataChannel(mode=mode)
        return session

    def _view(self, s: Session, status: int | None = None) -> dict[str, Any]:
        return {"_id": s.id, "uid": 100010, "type": 1, "status": status or s.status,
                "stream_type": "agora",
                "credentials": {"agora_uid": 100000, "agora_app_id": "akool-agora-app",
                                "agora_channel": f"ch-{s.id[:8]}", "agora_token": s.token}}

    async def _session_detail(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.query.get("id", ""))
        if session is None:
            return _err(1216, "liveAvatar session does not exist")
        return _ok(self._view(session))

    async def _session_close(self, request: web.Request) -> web.Response:
        body = body_of(request)
        sid = body.get("id") or body.get("session_id")  # both forms are documented
        session = self.sessions.get(str(sid))
        if session is None:
            return _err(1216, "liveAvatar session does not exist")
        if session.status not in (1, 2):
            if self.close_closed_code != 1000:
                return _err(self.close_closed_code, "liveAvatar closed")
            return _ok(None)
        session.status = 3
        used = math.ceil((time.monotonic() - session.started) / 60)
        self.credits += max(0, session.charged - used)
        return _ok(None)

    async def _session_list(self, request: web.Request) -> web.Response:
        page, size = int(request.query.get("page", 1)), int(request.query.get("size", 100))
        status = request.query.get("status")
        rows = [s for s in self.sessions.values() if status is None or s.status == int(status)]
        items = [self._view(s) for s in rows[(page - 1) * size: page * size]]
        return _ok({"count": len(rows), "result": items})


def _ok(data: Any) -> web.Response:
    return web.json_response({"code": 1000, "msg": "OK", "data": data})


def _err(code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg})
