"""A fake A2E streaming-avatar API (``docs/vendors/a2e.md``).

Envelope ``{code: 0, data, trace_id}``; errors as HTTP 200 with a non-zero ``code`` and a
``msg``; bad keys get HTTP 401. Coins are charged for ``expire_seconds`` when a room is booked
(1 coin per 5 s) and the unused part is refunded on ``leave``. ``ask`` makes the avatar answer:
the answer's Agora data messages (``{type: "QA", message, pos}``) wait in ``viewer_messages``.

A2E "releases the resource" at ``expire_epoch_timestamp`` (the agora-token page). Ending a room on
A2E's side: ``grant_s`` books rooms for at most that many seconds whatever was asked (so A2E ends
them before we do), and ``release_room`` releases one at once. A released room answers
``ask``/``speak``/``set-qa-context`` like a room that was left ("channel not found").

A room is booked before the answer is sent, as a real vendor does: ``answer_delay_s`` and
``after_booking`` make the answer late, a 500 or a dropped connection after the room (and its
charge) exists.
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

from aiohttp import web

from tests.fakes.vendor_base import FakeVendor, body_of

API = "/api/v1/streaming-avatar"
COINS_PER_5S = 1


@dataclass
class Room:
    """One booked Agora room."""

    channel: str
    avatar_id: str
    expire_seconds: int
    token: str
    charged: int
    started: float = field(default_factory=time.monotonic)
    qa_context: str = ""
    left: bool = False
    expires_at: float = float("inf")  # time.time() at which A2E releases the room
    spoken: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)


class FakeA2E(FakeVendor):
    """A2E on an ephemeral port; ``rooms`` keeps every booked room, ``coins`` the balance."""

    api_key = "a2e-test-key-7f3c"

    def __init__(self, *, coins: int = 10_000, grant_s: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.coins = coins
        self.grant_s = grant_s  # book rooms for at most this long (A2E ends them on its own)
        # "Book before answer": the room is booked, then the answer waits this long, and is
        # then given, or replaced by a 500 ("error") or a dropped connection ("drop").
        self.answer_delay_s = 0.0
        self.after_booking: str | None = None
        self.avatars = [
            {"_id": "676e1f054c86ff839eae2cc3", "name": "Linda", "video_cover": "https://x/l.jpg"},
            {"_id": "676e1f054c86ff839eae2cc4", "name": "Tom"},
        ]
        self.rooms: dict[str, Room] = {}
        self.viewer_messages: dict[str, list[str]] = {}

    def open_rooms(self) -> list[str]:
        """Channels not yet left."""
        return [c for c, r in self.rooms.items() if not r.left]

    def issued_tokens(self) -> list[str]:
        """Every Agora token handed out."""
        return [r.token for r in self.rooms.values()]

    def release_room(self, channel: str) -> None:
        """A2E releases the room now, on its own."""
        self.rooms[channel].expires_at = time.time()

    def settings_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``load_settings`` that point the app at this fake."""
        return {"a2e_api_key": self.api_key, "a2e_base_url": self.url}

    # ------------------------------------------------------------------ wire
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{API}/all_avatars", self._all_avatars)
        router.add_post(f"{API}/agora-token", self._agora_token)
        router.add_post(f"{API}/set-qa-context", self._set_qa_context)
        router.add_post(f"{API}/ask", self._ask)
        router.add_post(f"{API}/speak", self._speak)
        router.add_post(f"{API}/leave", self._leave)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def unauthorized(self) -> web.Response:
        return web.json_response({"code": 401, "msg": "Unauthorized"}, status=401)

    def error_body(self, status: int) -> dict[str, Any]:
        return {"code": status, "msg": "Internal Server Error"}

    def vendor_fault(self, kind: str) -> web.Response:
        if kind == "occupied":
            return _err(1001, "All hosts are occupied, please try again later")
        if kind == "no_coins":
            return _err(1004, "Insufficient coins")
        return super().vendor_fault(kind)

    async def _all_avatars(self, request: web.Request) -> web.Response:
        return _ok(self.avatars)

    async def _agora_token(self, request: web.Request) -> web.Response:
        body = body_of(request)
        avatar_id, expire = body.get("avatar_id"), body.get("expire_seconds")
        if not isinstance(avatar_id, str) or not isinstance(expire, int) or expire <= 0:
            return _err(1003, "avatar_id and expire_seconds are required")
        if avatar_id not in {a["_id"] for a in self.avatars}:
            return _err(1002, "avatar not found")
        cost = math.ceil(expire / 5) * COINS_PER_5S
        if cost > self.coins:
            return _err(1004, "Insufficient coins")
        self.coins -= cost
        channel = secrets.token_hex(3)
        room = Room(channel, avatar_id, expire, "007eJx" + secrets.token_urlsafe(24), cost)
        room.expires_at = time.time() + min(expire, self.grant_s or expire)
        self.rooms[channel] = room
        # Booked (and charged) before answering: a slow, failed or lost answer leaves the room
        # open all the same (issue 16: a late vendor booked a room per retry).
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        if self.after_booking == "error":
            return web.json_response(self.error_body(500), status=500)
        if self.after_booking == "drop":
            raise ConnectionResetError  # aiohttp closes the connection without an answer
        return _ok({
            "token": room.token, "appId": "013a409abcdb4ce083d01ff3cb1c78ec", "channel": channel,
            "expire_epoch_timestamp": room.expires_at,
            "expire_date_UTC": "2030-01-01 00:00:00", "uid": 360923290,
        })

    def _room(self, body: dict[str, Any]) -> Room | web.Response:
        room = self.rooms.get(str(body.get("channel")))
        if room is None or room.left or time.time() >= room.expires_at:
            return _err(1002, "channel not found or already left")
        return room

    async def _set_qa_context(self, request: web.Request) -> web.Response:
        body = body_of(request)
        text = body.get("text")
        if not isinstance(text, str) or not text:
            return _err(1003, "text is required")
        if len(text) > 5000:
            return _err(1003, "text must be at most 5000 characters")
        room = self._room(body)
        if isinstance(room, web.Response):
            return room
        room.qa_context = text
        return _ok({})

    async def _ask(self, request: web.Request) -> web.Response:
        body = body_of(request)
        room = self._room(body)
        if isinstance(room, web.Response):
            return room
        question = str(body.get("text") or "")
        room.asked.append(question)
        answer = answer_for(question, room.qa_context)
        third = max(1, len(answer) // 3)
        pieces = [answer[:third], answer[third:2 * third], answer[2 * third:]]
        self.viewer_messages.setdefault(room.channel, []).extend(
            json.dumps({"type": "QA", "message": p, "pos": pos})
            for p, pos in zip(pieces, ("start", "middle", "end"), strict=True)
        )
        return _ok({})

    async def _speak(self, request: web.Request) -> web.Response:
        body = body_of(request)
        room = self._room(body)
        if isinstance(room, web.Response):
            return room
        room.spoken.append(str(body.get("text") or ""))
        return _ok({})

    async def _leave(self, request: web.Request) -> web.Response:
        room = self.rooms.get(str(body_of(request).get("channel")))
        if room is None:
            return _err(1002, "channel not found")
        if not room.left:  # leaving twice is fine and refunds once
            room.left = True
            used = math.ceil((time.monotonic() - room.started) / 5) * COINS_PER_5S
            self.coins += max(0, room.charged - used)
        return _ok({})


def answer_for(question: str, context: str) -> str:
    """The fake avatar's answer: it quotes the question and the start of its context."""
    hint = f" From what I know: {context[:40]}" if context else ""
    return f"You asked: {question}.{hint}"


def _ok(data: Any) -> web.Response:
    return web.json_response({"code": 0, "data": data, "trace_id": str(uuid.uuid4())})


def _err(code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "trace_id": str(uuid.uuid4())})
