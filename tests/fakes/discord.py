"""A local fake Discord: REST (``/api/v10``) plus a gateway WebSocket, on an ephemeral port.

It serves what discord.py 2.7 calls during login, command sync, interactions, messages and
threads, and pushes gateway events (READY, GUILD_CREATE, INTERACTION_CREATE, MESSAGE_CREATE,
THREAD_UPDATE, THREAD_DELETE) so that tests drive the real ``discord.Client``.

Several guilds (``add_guild``) and sharding as Discord documents it (docs/discord-sharding.md):
IDENTIFY may carry ``shard: [shard_id, num_shards]`` (an id outside ``0..num_shards-1`` gets
close 4010, Invalid shard); a connection gets READY and GUILD_CREATE for, and every later event
of, only the guilds whose shard ``(guild_id >> 22) % num_shards`` is its own; events of no guild
go to shard 0. ``GET /gateway/bot`` answers ``url``, ``shards`` (``recommended_shards``) and
``session_start_limit``.

Discord facts it enforces: the 3-second interaction deadline (a late callback gets 404/10062),
``Content-Type: application/json`` exactly (discord.py only parses that), injected 429s with
``Retry-After``, and gateway close 4014 when the message-content intent is not allowed.
"""

from __future__ import annotations

import asyncio
import copy
import email.parser
import email.policy
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.serve import serve_local

DISCORD_EPOCH_MS = 1420070400000
# Discord's published MESSAGE_CREATE shapes (every message type the bot must tell apart); where
# each comes from is in tests/fixtures/README.md.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "discord"
MESSAGE_CONTENT = 1 << 15
ADMIN_PERMS = (1 << 5) | (1 << 3)  # manage guild + administrator
MEMBER_PERMS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 6) | (1 << 35) | (1 << 38)
BOT_PERMS = MEMBER_PERMS | (1 << 13) | (1 << 16)  # + manage messages, read message history
CREATE_PUBLIC_THREADS = 1 << 35


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Call:
    """One REST call the fake received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


CALL_KEY = web.RequestKey("call", Call)


@dataclass
class PendingInteraction:
    """An interaction the fake dispatched and is waiting to be answered."""

    id: str
    token: str
    sent_at: float
    callback: asyncio.Future[dict[str, Any]]
    original: dict[str, Any] | None = None
    channel_id: str = ""


class FakeDiscord:
    """The fake server: ``await fake.start()``, then use ``api_base`` and ``gateway_url``."""

    def __init__(self, *, guild_id: int = 111, channel_id: int = 222) -> None:
        self._ids = itertools.count(1)
        self.app_id = self.snowflake()
        self.bot_user = self.user("avatarbot", bot=True)
        self.guild_id = str(guild_id)
        self.channel_id = str(channel_id)
        self.everyone_role = self.guild_id
        self.roles: list[dict[str, Any]] = [self._role(self.everyone_role, "@everyone", 0)]
        # guild id -> its roles; the first guild's list is ``roles``
        self.guilds: dict[str, list[dict[str, Any]]] = {self.guild_id: self.roles}
        self.recommended_shards = 1  # GET /gateway/bot "shards"
        self.max_concurrency = 1  # GET /gateway/bot "session_start_limit.max_concurrency"
        self.invalid_shards: list[list[int]] = []  # IDENTIFY shard values closed with 4010
        self.members: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {
            self.channel_id: {
                "id": self.channel_id, "type": 0, "guild_id": self.guild_id, "name": "general",
                "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None,
            },
        }
        self.messages: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}  # attachment id -> the uploaded bytes
        self.calls: list[Call] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.interactions: dict[str, PendingInteraction] = {}
        self.deadline_s = 3.0
        self.reject_message_content = False
        # When set, REST calls must carry ``Authorization: Bot <token>``; others get Discord's 401
        # body (Discord docs, topics/opcodes-and-status-codes: 401 UNAUTHORIZED, code 0).
        self.token: str | None = None
        self.hide_threads = False  # leave threads out of GUILD_CREATE (an uncached thread)
        self.identifies: list[dict[str, Any]] = []
        self.identified_at: list[float] = []  # time.monotonic() of each IDENTIFY
        self.rate_limits: list[tuple[str, str, float]] = []  # (method, path regex, retry_after)
        self.limited: list[Call] = []
        self.faults: list[tuple[str, str, int, int]] = []  # (method, path regex, status, code)
        self.failed: list[Call] = []
        self._sockets: set[web.WebSocketResponse] = set()
        self._seq: dict[web.WebSocketResponse, int] = {}
        self._shard: dict[web.WebSocketResponse, tuple[int, int]] = {}
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.add_member(self.bot_user, [], BOT_PERMS)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeDiscord:
        """Serve on an ephemeral port of 127.0.0.1."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner, self.port = await serve_local(app, handle_signals=False)
        return self

    async def close(self) -> None:
        """Close every gateway socket and stop the server."""
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        """REST base (what ``DISCORD_API_BASE`` points at)."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Gateway WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ model helpers
    def snowflake(self) -> str:
        """A fresh, time-ordered snowflake id."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._ids) & 0x3FFFFF))

    def user(self, name: str, *, bot: bool = False, uid: str | None = None) -> dict[str, Any]:
        """A user object."""
        return {
            "id": uid or self.snowflake(), "username": name, "discriminator": "0",
            "global_name": name, "avatar": None, "bot": bot,
        }

    @staticmethod
    def _role(rid: str, name: str, perms: int) -> dict[str, Any]:
        return {
            "id": rid, "name": name, "permissions": str(perms), "position": 0, "color": 0,
            "hoist": False, "managed": False, "mentionable": False, "flags": 0,
        }

    async def add_role(self, name: str, perms: int = 0, *, rid: str | None = None,
                       announce: bool = True) -> str:
        """Create a guild role (GUILD_ROLE_CREATE to connected clients); returns its id.

        ``announce=False`` leaves the event out, as for a role made while the bot was away:
        the client then knows it only through ``GET /guilds/{id}/roles``.
        """
        rid = rid or self.snowflake()
        role = self._role(rid, name, perms)
        self.roles.append(role)
        if announce:
            await self.dispatch("GUILD_ROLE_CREATE", {"guild_id": self.guild_id, "role": role})
        return rid

    def add_guild(self, guild_id: int, channel_id: int) -> str:
        """Another guild the bot is in, with one text channel; returns the guild id.

        Members are shared with the first guild; its roles are only ``@everyone``.
        """
        gid, cid = str(guild_id), str(channel_id)
        self.guilds[gid] = [self._role(gid, "@everyone", 0)]
        self.channels[cid] = {
            "id": cid, "type": 0, "guild_id": gid, "name": "general", "position": 0,
            "permission_overwrites": [], "nsfw": False, "parent_id": None,
        }
        return gid

    def guild_of(self, channel_id: str) -> str:
        """The guild a channel or thread belongs to."""
        channel = self.channels.get(channel_id)
        return channel["guild_id"] if channel is not None else self.guild_id

    def add_member(
        self, user: dict[str, Any], roles: list[str], perms: int = MEMBER_PERMS
    ) -> dict[str, Any]:
        """Add a guild member (``perms`` are their resolved channel permissions)."""
        member = {
            "user": user, "roles": roles, "joined_at": _now_iso(), "deaf": False, "mute": False,
            "nick": None, "flags": 0, "permissions": str(perms),
        }
        self.members[user["id"]] = member
        return member

    def message(
        self, channel_id: str, author: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        """Store and return a message object."""
        msg = {
            "id": self.snowflake(), "channel_id": channel_id,
            "guild_id": self.guild_of(channel_id),
            "author": author, "content": body.get("content") or "", "timestamp": _now_iso(),
            "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": body.get("mentions", []), "mention_roles": [],
            "attachments": self._attachments(channel_id, body.get("_files", [])),
            "embeds": body.get("embeds") or [], "pinned": False, "type": 0,
            "components": body.get("components") or [], "flags": body.get("flags", 0),
            "allowed_mentions": body.get("allowed_mentions"), "reactions": [],
        }
        self.messages[msg["id"]] = msg
        return msg

    def _attachments(self, channel_id: str, files: list[tuple[str, str, str, bytes]]
                     ) -> list[dict[str, Any]]:
        """Discord's attachment objects (id, filename, size, url ...) for uploaded files."""
        out = []
        for _, filename, content_type, data in files:
            aid = self.snowflake()
            self.files[aid] = data
            url = f"https://cdn.discordapp.com/attachments/{channel_id}/{aid}/{filename}"
            out.append({"id": aid, "filename": filename, "size": len(data), "url": url,
                        "proxy_url": url, "content_type": content_type})
        return out

    def channel_messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Messages of a channel or thread, oldest first."""
        return [m for m in self.messages.values() if m["channel_id"] == channel_id]

    def threads(self) -> list[dict[str, Any]]:
        """Every thread channel."""
        return [c for c in self.channels.values() if c["type"] in (10, 11, 12)]

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        """Recorded calls whose path matches ``pattern`` (a regex)."""
        return [c for c in self.calls if c.method == method and re.search(pattern, c.path)]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        """Wait until ``predicate()`` is truthy (re-checked on every change); return its value."""
        async def loop() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(loop(), timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ REST
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            raw = await request.read()
            body: Any = None
            if raw and request.content_type == "application/json":
                body = json.loads(raw)
            elif raw and request.content_type.startswith("multipart/"):
                body = self._multipart_json(request.headers["Content-Type"], raw)
            call = Call(request.method, request.path[len("/api/v10"):], dict(request.query), body)
            if self.token is not None and request.headers.get("Authorization") != \
                    f"Bot {self.token}":
                return _json({"message": "401: Unauthorized", "code": 0}, status=401)
            for i, (method, pattern, retry_after) in enumerate(self.rate_limits):
                if method == request.method and re.search(pattern, call.path):
                    del self.rate_limits[i]
                    self.limited.append(call)
                    await self._notify()
                    return _json(
                        {"message": "You are being rate limited.", "retry_after": retry_after,
                         "global": False, "code": 0},
                        status=429,
                        # discord.py treats a 429 without ``Via`` as a Cloudflare ban (no retry).
                        headers={"Retry-After": str(retry_after), "X-RateLimit-Scope": "user",
                                 "Via": "1.1 google",
                                 "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "5",
                                 "X-RateLimit-Reset-After": str(retry_after),
                                 "X-RateLimit-Bucket": "fake"},
                    )
            for i, (method, pattern, status, code) in enumerate(self.faults):
                if method == request.method and re.search(pattern, call.path):
                    del self.faults[i]
                    self.failed.append(call)
                    return _json({"message": "fake fault", "code": code}, status=status)
            request[CALL_KEY] = call
            self.calls.append(call)
            try:
                return await handler(request)
            finally:
                await self._notify()
        return await handler(request)

    @staticmethod
    def _multipart_json(content_type: str, raw: bytes) -> Any:
        """A message with files: ``payload_json`` plus ``files[n]`` parts.

        The shape of Discord's "Uploading Files" reference (multipart/form-data; the JSON body in
        ``payload_json``, file n in ``files[n]``, named in ``attachments[].filename``), which
        discord.py 2.7 sends (``http.py`` ``handle_message_parameters``). The files come back
        under ``_files`` as ``(field name, file name, content type, bytes)``.
        """
        parser = email.parser.BytesParser(policy=email.policy.default)
        msg = parser.parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        body: dict[str, Any] = {}
        files = []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            if name == "payload_json":
                body.update(json.loads(data))
            elif isinstance(name, str) and name.startswith("files["):
                files.append((name, part.get_filename(), part.get_content_type(), data))
        body["_files"] = files
        return body

    async def _rest(self, request: web.Request) -> web.Response:
        call = request[CALL_KEY]
        for method, pattern, handler in self._routes():
            m = re.fullmatch(pattern, call.path)
            if m and method == request.method:
                return await handler(call, **m.groupdict())
        return _json({"message": f"fake: no route {request.method} {call.path}", "code": 0}, 404)

    def _routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", r"/users/@me", self._me),
            ("GET", r"/oauth2/applications/@me", self._app_info),
            ("GET", r"/gateway(/bot)?", self._gateway_info),
            ("PUT", _COMMANDS, self._put_cmds),
            ("GET", _COMMANDS, self._get_cmds),
            ("POST", r"/interactions/(?P<iid>\d+)/(?P<tok>[^/]+)/callback", self._callback),
            ("PATCH", r"/webhooks/(?P<app>\d+)/(?P<tok>[^/]+)/messages/@original", self._edit_orig),
            ("GET", r"/webhooks/(?P<app>\d+)/(?P<tok>[^/]+)/messages/@original", self._get_orig),
            ("POST", r"/webhooks/(?P<app>\d+)/(?P<tok>[^/]+)", self._followup),
            ("POST", r"/channels/(?P<cid>\d+)/messages", self._post_message),
            ("PATCH", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)", self._edit_message),
            ("POST", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/threads", self._thread),
            ("PUT", r"/channels/(?P<cid>\d+)/messages/(?P<mid>\d+)/reactions/(?P<e>[^/]+)/@me",
             self._react),
            ("GET", r"/channels/(?P<cid>\d+)", self._get_channel),
            ("PATCH", r"/channels/(?P<cid>\d+)", self._patch_channel),
            ("GET", r"/guilds/(?P<gid>\d+)/members/(?P<uid>\d+)", self._get_member),
            ("GET", r"/guilds/(?P<gid>\d+)/roles", self._get_roles),
        ]

    async def _me(self, call: Call) -> web.Response:
        return _json(self.bot_user)

    async def _app_info(self, call: Call) -> web.Response:
        return _json({
            "id": self.app_id, "name": "avatarbot", "description": "", "icon": None,
            "bot_public": True, "bot_require_code_grant": False, "verify_key": "00" * 32,
            "owner": self.user("owner"), "summary": "",
            # GATEWAY_MESSAGE_CONTENT_LIMITED (1 << 19): the intent switched on in the portal
            # (Discord docs, resources/application "Application Flags").
            "flags": 0 if self.reject_message_content else 1 << 19,
        })

    async def _gateway_info(self, call: Call) -> web.Response:
        # Discord docs, "Get Gateway Bot": url, recommended shards, session_start_limit.
        return _json({"url": self.gateway_url, "shards": self.recommended_shards,
                      "session_start_limit": {"total": 1000, "remaining": 999,
                                              "reset_after": 0,
                                              "max_concurrency": self.max_concurrency}})

    async def _put_cmds(self, call: Call, app: str, guild: str | None) -> web.Response:
        out = [{**cmd, "id": self.snowflake(), "application_id": app, "version": "1",
                "guild_id": guild} for cmd in call.body]
        self.commands[guild or "global"] = out
        return _json(out)

    async def _get_cmds(self, call: Call, app: str, guild: str | None) -> web.Response:
        return _json(self.commands.get(guild or "global", []))

    async def _callback(self, call: Call, iid: str, tok: str) -> web.Response:
        pending = self.interactions.get(iid)
        if pending is None or pending.token != tok:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        if pending.callback.done():
            return _json({"message": "Interaction has already been acknowledged.",
                          "code": 40060}, 400)
        late = time.monotonic() - pending.sent_at > self.deadline_s
        if late:
            pending.callback.set_exception(TimeoutError("callback after the 3-second deadline"))
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        body = call.body or {}
        pending.callback.set_result(body)
        resource: dict[str, Any] = {"type": body.get("type")}
        if body.get("type") in (4, 5):
            data = body.get("data") or {}
            msg = self.message(pending.channel_id, self.bot_user, data)
            msg["interaction_token"] = tok
            pending.original = msg
            resource["message"] = msg
        return _json({
            "interaction": {
                "id": iid, "type": 2,
                "response_message_id": pending.original["id"] if pending.original else None,
                "response_message_loading": body.get("type") == 5,
                "response_message_ephemeral": bool((body.get("data") or {}).get("flags", 0) & 64),
            },
            "resource": resource,
        })

    def _pending_by_token(self, tok: str) -> PendingInteraction | None:
        return next((p for p in self.interactions.values() if p.token == tok), None)

    async def _edit_orig(self, call: Call, app: str, tok: str) -> web.Response:
        pending = self._pending_by_token(tok)
        if pending is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        if pending.original is None:  # deferred update of a component's message
            pending.original = self.message(pending.channel_id, self.bot_user, {})
        pending.original.update({k: v for k, v in (call.body or {}).items()
                                 if k in ("content", "embeds", "components", "flags")})
        pending.original["edited_timestamp"] = _now_iso()
        return _json(pending.original)

    async def _get_orig(self, call: Call, app: str, tok: str) -> web.Response:
        pending = self._pending_by_token(tok)
        if pending is None or pending.original is None:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        return _json(pending.original)

    async def _followup(self, call: Call, app: str, tok: str) -> web.Response:
        pending = self._pending_by_token(tok)
        if pending is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        msg = self.message(pending.channel_id, self.bot_user, call.body or {})
        msg["interaction_token"] = tok
        return _json(msg)

    async def _post_message(self, call: Call, cid: str) -> web.Response:
        channel = self.channels.get(cid)
        if channel is None:
            return _json({"message": "Unknown Channel", "code": 10003}, 404)
        meta = channel.get("thread_metadata")
        if meta and meta.get("locked"):
            return _json({"message": "Thread is locked", "code": 50083}, 403)
        if meta and meta.get("archived"):
            meta["archived"] = False  # Discord unarchives a thread when the bot posts in it
        msg = self.message(cid, self.bot_user, call.body or {})
        # Discord echoes the bot's own messages on the gateway too; the bot must ignore them.
        await self.dispatch("MESSAGE_CREATE", msg)
        return _json(msg)

    async def _edit_message(self, call: Call, cid: str, mid: str) -> web.Response:
        msg = self.messages.get(mid)
        if msg is None or msg["channel_id"] != cid:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        msg.update({k: v for k, v in (call.body or {}).items()
                    if k in ("content", "embeds", "components", "flags")})
        msg["edited_timestamp"] = _now_iso()
        return _json(msg)

    async def _thread(self, call: Call, cid: str, mid: str) -> web.Response:
        if mid not in self.messages:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        body = call.body or {}
        thread = {
            "id": mid, "type": 11, "guild_id": self.guild_of(cid), "parent_id": cid,
            "name": body.get("name", "thread"), "owner_id": self.bot_user["id"],
            "last_message_id": None, "rate_limit_per_user": body.get("rate_limit_per_user", 0),
            "message_count": 0, "member_count": 1, "flags": 0,
            "thread_metadata": {
                "archived": False, "auto_archive_duration": body.get("auto_archive_duration", 60),
                "archive_timestamp": _now_iso(), "locked": False,
            },
        }
        self.channels[mid] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json(thread, 201)

    async def _react(self, call: Call, cid: str, mid: str, e: str) -> web.Response:
        msg = self.messages.get(mid)
        if msg is None:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        msg["reactions"].append(e)
        return web.Response(status=204)

    async def _get_channel(self, call: Call, cid: str) -> web.Response:
        channel = self.channels.get(cid)
        return _json(channel) if channel else _json({"message": "Unknown Channel",
                                                     "code": 10003}, 404)

    async def _patch_channel(self, call: Call, cid: str) -> web.Response:
        channel = self.channels.get(cid)
        if channel is None:
            return _json({"message": "Unknown Channel", "code": 10003}, 404)
        meta = channel.get("thread_metadata")
        for key in ("archived", "locked"):
            if meta is not None and key in (call.body or {}):
                meta[key] = call.body[key]
        return _json(channel)

    async def _get_member(self, call: Call, gid: str, uid: str) -> web.Response:
        member = self.members.get(uid)
        return _json(member) if member else _json({"message": "Unknown Member",
                                                   "code": 10007}, 404)

    async def _get_roles(self, call: Call, gid: str) -> web.Response:
        # GET /guilds/{guild.id}/roles: an array of role objects (Discord docs, resources/guild)
        if gid not in self.guilds:
            return _json({"message": "Unknown Guild", "code": 10004}, 404)
        return _json(self.guilds[gid])

    # ------------------------------------------------------------------ gateway
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                break
            msg = json.loads(frame.data)
            op = msg.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                self.identifies.append(msg["d"])
                self.identified_at.append(time.monotonic())
                await self._notify()
                if self.reject_message_content and msg["d"].get("intents", 0) & MESSAGE_CONTENT:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                shard = msg["d"].get("shard", [0, 1])
                if not (isinstance(shard, list) and len(shard) == 2 and shard[1] >= 1
                        and 0 <= shard[0] < shard[1]):
                    self.invalid_shards.append(shard)
                    await self._notify()
                    await ws.close(code=4010, message=b"Invalid shard.")
                    break
                self._shard[ws] = (shard[0], shard[1])
                self._sockets.add(ws)
                await self._send_ready(ws)
            elif op == 6:  # RESUME: tell the client to identify again
                await ws.send_str(json.dumps({"op": 9, "d": False}))
        self._sockets.discard(ws)
        self._shard.pop(ws, None)
        self._seq.pop(ws, None)
        return ws

    @staticmethod
    def shard_of(guild_id: str | int, num_shards: int) -> int:
        """Discord's formula: the shard that gets a guild's events."""
        return (int(guild_id) >> 22) % num_shards

    def shard_guilds(self, shard: tuple[int, int]) -> list[str]:
        """The guilds whose events go to ``(shard_id, num_shards)``."""
        return [g for g in self.guilds if self.shard_of(g, shard[1]) == shard[0]]

    def connected_shards(self) -> list[tuple[int, int]]:
        """``(shard_id, num_shards)`` of every identified connection."""
        return sorted(self._shard[ws] for ws in self._sockets if ws in self._shard)

    async def _send_ready(self, ws: web.WebSocketResponse) -> None:
        shard = self._shard[ws]
        guilds = self.shard_guilds(shard)
        await self._send(ws, "READY", {
            "v": 10, "user": self.bot_user,
            "guilds": [{"id": g, "unavailable": True} for g in guilds],
            "session_id": f"sess-{self.snowflake()}", "resume_gateway_url": self.gateway_url,
            "application": {"id": self.app_id, "flags": 0}, "private_channels": [],
            "relationships": [], "shard": list(shard),
        })
        for guild_id in guilds:
            await self._send(ws, "GUILD_CREATE", self.guild_payload(guild_id))
        self._ready.set()

    def guild_payload(self, guild_id: str | None = None) -> dict[str, Any]:
        """The GUILD_CREATE payload of a guild (the first one by default)."""
        gid = guild_id or self.guild_id
        return {
            "id": gid, "name": "Fake Guild" if gid == self.guild_id else f"Guild {gid}",
            "icon": None, "owner_id": "1",
            "roles": self.guilds[gid], "emojis": [], "stickers": [], "features": [],
            "member_count": len(self.members), "members": list(self.members.values()),
            "channels": [c for c in self.channels.values()
                         if c["type"] == 0 and c["guild_id"] == gid],
            "threads": [] if self.hide_threads else [
                t for t in self.threads()
                if not t["thread_metadata"]["archived"] and t["guild_id"] == gid],
            "presences": [], "voice_states": [], "large": False, "unavailable": False,
            "joined_at": _now_iso(), "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0, "premium_tier": 0,
            "preferred_locale": "en-US", "system_channel_id": None, "afk_channel_id": None,
            "afk_timeout": 300, "stage_instances": [], "guild_scheduled_events": [],
        }

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        self._seq[ws] = seq = self._seq.get(ws, 0) + 1
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": seq, "d": data}))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event to every connected client whose shard holds its guild."""
        guild = data.get("guild_id") or (data.get("id") if event.startswith("GUILD_") else None)
        for ws in list(self._sockets):
            shard = self._shard.get(ws)
            if ws.closed or shard is None:
                continue
            if self.shard_of(guild or 0, shard[1]) == shard[0]:
                await self._send(ws, event, data)

    async def wait_ready(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until a client identified and got READY + GUILD_CREATE."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    def reset_ready(self) -> None:
        """Forget the last READY (before starting another client)."""
        self._ready = asyncio.Event()

    # ------------------------------------------------------------------ interactions
    def _interaction_base(self, member: dict[str, Any], channel_id: str | None,
                          app_perms: int) -> dict[str, Any]:
        iid = self.snowflake()
        cid = channel_id or self.channel_id
        gid = self.guild_of(cid)
        return {
            "id": iid, "application_id": self.app_id, "token": f"itok-{iid}", "version": 1,
            "guild_id": gid, "channel_id": cid, "channel": self.channels[cid],
            "member": member, "app_permissions": str(app_perms), "locale": "en-US",
            "guild_locale": "en-US", "entitlements": [], "authorizing_integration_owners": {
                "0": gid}, "context": 0, "attachment_size_limit": 8 * 1024 * 1024,
        }

    async def _send_interaction(self, payload: dict[str, Any]) -> PendingInteraction:
        pending = PendingInteraction(
            id=payload["id"], token=payload["token"], sent_at=time.monotonic(),
            callback=asyncio.get_running_loop().create_future(),
            channel_id=payload["channel_id"],
        )
        pending.callback.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self.interactions[pending.id] = pending
        await self.dispatch("INTERACTION_CREATE", payload)
        return pending

    async def slash(
        self, member: dict[str, Any], sub: str, *, group: str | None = None,
        channel_id: str | None = None, app_perms: int = BOT_PERMS, resolved: dict | None = None,
        **options: Any,
    ) -> PendingInteraction:
        """Invoke ``/avatar [group] sub option=value ...`` as ``member``."""
        opts = [_option(k, v) for k, v in options.items()]
        inner = [{"name": sub, "type": 1, "options": opts}]
        if group:
            inner = [{"name": group, "type": 2, "options": inner}]
        payload = self._interaction_base(member, channel_id, app_perms)
        payload.update(type=2, data={"id": self.snowflake(), "name": "avatar", "type": 1,
                                     "options": inner, "guild_id": payload["guild_id"],
                                     "resolved": resolved or {}})
        return await self._send_interaction(payload)

    async def autocomplete(self, member: dict[str, Any], sub: str, focused: str,
                           **options: Any) -> PendingInteraction:
        """Send an autocomplete interaction for ``focused`` of ``/avatar sub``."""
        opts = [{"name": k, "type": 3, "value": v, **({"focused": True} if k == focused else {})}
                for k, v in options.items()]
        payload = self._interaction_base(member, None, BOT_PERMS)
        payload.update(type=4, data={"id": self.snowflake(), "name": "avatar", "type": 1,
                                     "options": [{"name": sub, "type": 1, "options": opts}]})
        return await self._send_interaction(payload)

    async def click(self, member: dict[str, Any], message: dict[str, Any],
                    custom_id: str) -> PendingInteraction:
        """Click the button ``custom_id`` on ``message``."""
        payload = self._interaction_base(member, message["channel_id"], BOT_PERMS)
        payload.update(type=3, message=message,
                       data={"custom_id": custom_id, "component_type": 2})
        pending = await self._send_interaction(payload)
        pending.original = message
        return pending

    # ------------------------------------------------------------------ channel events
    def fail(self, method: str, pattern: str, status: int = 403, code: int = 50013) -> None:
        """Answer the next ``method`` call whose path matches ``pattern`` with an error."""
        self.faults.append((method, pattern, status, code))

    async def user_message(self, member: dict[str, Any], channel_id: str, content: str,
                           *, mentions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A person posts ``content`` in ``channel_id`` (MESSAGE_CREATE)."""
        msg = self.message(channel_id, member["user"], {"content": content,
                                                        "mentions": mentions or []})
        member_part = {k: v for k, v in member.items() if k not in ("user", "permissions")}
        await self.dispatch("MESSAGE_CREATE", {**msg, "member": member_part})
        return msg

    async def fixture_message(
        self, name: str, channel_id: str, member: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Dispatch the published MESSAGE_CREATE ``name`` (tests/fixtures/discord) in a channel.

        The message keeps its published type, content and shape (attachments, stickers, a
        forward's snapshots, a pin's reference); it gets a fresh id, this guild and channel, and
        ``member`` as its author when given (else the fixture's own author, Mason). ``overrides``
        replace top-level fields (e.g. ``content``). It is stored like every message, so
        reactions and replies to it can be checked.
        """
        envelope = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
        assert envelope["t"] == "MESSAGE_CREATE", name
        msg: dict[str, Any] = copy.deepcopy(envelope["d"])
        msg.update(id=self.snowflake(), channel_id=channel_id,
                   guild_id=self.guild_of(channel_id),
                   timestamp=_now_iso(), **overrides)
        if member is not None:
            msg["author"] = member["user"]
            msg["member"] = {k: v for k, v in member.items() if k not in ("user", "permissions")}
        msg.setdefault("reactions", [])
        self.messages[msg["id"]] = msg
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    async def archive_thread(self, thread_id: str, *, locked: bool = False) -> None:
        """Archive (or lock) a thread (THREAD_UPDATE)."""
        thread = self.channels[thread_id]
        thread["thread_metadata"].update(archived=True, locked=locked)
        await self.dispatch("THREAD_UPDATE", thread)

    async def delete_thread(self, thread_id: str) -> None:
        """Delete a thread (THREAD_DELETE)."""
        thread = self.channels.pop(thread_id)
        await self.dispatch("THREAD_DELETE", {
            "id": thread_id, "guild_id": thread["guild_id"], "parent_id": thread["parent_id"],
            "type": thread["type"]})


_COMMANDS = r"/applications/(?P<app>\d+)(/guilds/(?P<guild>\d+))?/commands"


def _option(name: str, value: Any) -> dict[str, Any]:
    """An option; ``(type, value)`` tuples give the type (8 = role), else it is inferred."""
    if isinstance(value, tuple):
        kind, value = value
    elif isinstance(value, bool):
        kind = 5
    elif isinstance(value, int):
        kind = 4
    else:
        kind = 3
    return {"name": name, "type": kind, "value": value}


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly application/json.
    return web.Response(body=json.dumps(obj).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})
