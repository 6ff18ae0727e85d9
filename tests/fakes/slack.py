"""A fake Slack Web API (and response_url endpoint) on an ephemeral port, for offline tests.

It speaks the wire format slack-sdk uses: ``POST /api/<method>`` with a bearer token (JSON or
form body), JSON answers with ``ok``/``error``, HTTP 429 with ``Retry-After``. It keeps just
enough state to behave like Slack where the bot depends on it: which tokens belong to which
workspace, which channels the bot is in, posted messages and their ``ts``, users' admin flags,
OAuth codes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.serve import serve_local

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slack"


def fixture(name: str) -> dict[str, Any]:
    """A published Slack payload from ``tests/fixtures/slack`` (sources in its README)."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass
class ApiCall:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)
    result: dict[str, Any] | None = None


@dataclass
class Workspace:
    """A workspace the fake knows, with its bot.

    ``enterprise_id`` is the Enterprise Grid org; an org-wide install has no ``team_id`` of its
    own (``None``) and its token serves every workspace of the org.
    """

    team_id: str | None
    token: str
    bot_user_id: str
    bot_id: str
    channels: set[str] = field(default_factory=set)
    enterprise_id: str | None = None


class FakeSlack:
    """The fake server: ``start()``, give ``api_url`` as ``SLACK_API_URL``, then ``close()``."""

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.responses: list[tuple[str, dict[str, Any]]] = []
        self.workspaces: dict[str, Workspace] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        self.client_credentials: tuple[str, str] | None = None
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.revoked: set[str] = set()
        # Files (the files.uploadV2 flow): id -> {filename, length, data, channel, thread_ts ...}
        self.files: dict[str, dict[str, Any]] = {}
        self._file_ids = itertools.count(1)
        self.scopeless: set[str] = set()  # team ids installed without files:write
        self._failures: dict[str, list[tuple[int, dict[str, str], dict[str, Any]]]] = {}
        self._ts = itertools.count(1)
        self._changed = asyncio.Event()
        # A Slack that takes its time: a call of a method listed here is recorded on arrival and
        # answered only once its event is set.
        self.stalled: dict[str, asyncio.Event] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""
        # Socket Mode: app-level tokens, the connected socket, and the acks it sent back
        self.app_tokens: set[str] = set()
        self.socket: web.WebSocketResponse | None = None
        self.socket_acks: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeSlack:
        """Listen on 127.0.0.1, on a free port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        self._runner, port = await serve_local(app)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        """Stop listening (stalled calls are released first)."""
        for stalled in self.stalled.values():
            stalled.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        """The Web API base to give slack-sdk."""
        return f"{self.url}/api/"

    def response_url(self, key: str = "r1") -> str:
        """A ``response_url`` for a command or action payload."""
        return f"{self.url}/response/{key}"

    # ------------------------------------------------------------------ set-up
    def add_workspace(self, team_id: str | None, token: str, *, channels: tuple[str, ...] = (),
                      bot_user_id: str = "UBOT", bot_id: str = "BBOT",
                      enterprise_id: str | None = None) -> Workspace:
        """Register a workspace whose bot token is ``token`` and that is in ``channels``."""
        ws = Workspace(team_id, token, bot_user_id, bot_id, set(channels), enterprise_id)
        self.workspaces[token] = ws
        return ws

    def add_user(self, user_id: str, *, admin: bool = False, owner: bool = False,
                 display_name: str = "", real_name: str = "") -> None:
        """Register a person; ``admin``/``owner`` and the names are what ``users.info`` reports.

        The ``user`` object's fields are those of the example response at
        https://docs.slack.dev/reference/methods/users.info (``name`` is the handle,
        ``profile.display_name`` may be empty, ``real_name`` is repeated in ``profile``).
        """
        self.users[user_id] = {
            "id": user_id, "name": user_id.lower(), "deleted": False, "real_name": real_name,
            "profile": {"real_name": real_name, "display_name": display_name},
            "is_admin": admin, "is_owner": owner, "is_primary_owner": False, "is_bot": False,
        }

    def add_oauth_code(self, code: str, team_id: str | None, token: str, installer: str, *,
                       enterprise_id: str | None = None) -> None:
        """Make ``oauth.v2.access`` turn ``code`` into an install with ``token``.

        ``team_id`` alone: a plain workspace; with ``enterprise_id``: a workspace of that Grid
        org; ``team_id=None`` with ``enterprise_id``: an org-wide install.
        """
        self.oauth_codes[code] = {"team_id": team_id, "token": token, "installer": installer,
                                  "enterprise_id": enterprise_id}

    def fail_next(self, method: str, *, status: int = 429, retry_after: int = 1,
                  times: int = 1, error: str = "ratelimited") -> None:
        """Answer the next ``times`` calls of ``method`` with an error (a 429 by default)."""
        headers = {"Retry-After": str(retry_after)} if status == 429 else {}
        body = {"ok": False, "error": error}
        self._failures.setdefault(method, []).extend([(status, headers, body)] * times)

    # ------------------------------------------------------------------ inspection
    def called(self, method: str) -> list[ApiCall]:
        """Every call of ``method`` so far."""
        return [c for c in self.calls if c.method == method]

    def in_thread(self, ts: str) -> list[ApiCall]:
        """Every ``chat.postMessage`` into the thread of ``ts`` so far."""
        return [c for c in self.called("chat.postMessage") if c.params.get("thread_ts") == ts]

    async def wait_for(self, method: str, count: int = 1, within: float = 5.0) -> list[ApiCall]:
        """Wait until ``method`` has been called ``count`` times; return those calls."""
        async with asyncio.timeout(within):
            while len(self.called(method)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.called(method)

    async def wait_for_response(self, count: int = 1, within: float = 5.0) -> list[dict]:
        """Wait until ``count`` bodies were posted to response URLs; return them."""
        async with asyncio.timeout(within):
            while len(self.responses) < count:
                self._changed.clear()
                await self._changed.wait()
        return [body for _, body in self.responses]

    async def socket_request(self, envelope: dict[str, Any], within: float = 5.0) -> dict:
        """Push a Socket Mode envelope to the connected app; return its ack."""
        async with asyncio.timeout(within):
            while self.socket is None:
                self._changed.clear()
                await self._changed.wait()
            await self.socket.send_str(json.dumps(envelope))
            while True:
                for ack in self.socket_acks:
                    if ack.get("envelope_id") == envelope["envelope_id"]:
                        return ack
                self._changed.clear()
                await self._changed.wait()

    # ------------------------------------------------------------------ handlers
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1,
                                      "connection_info": {"app_id": "A0AVATAR"}}))
        self.socket = ws
        self._changed.set()
        async for msg in ws:
            if msg.type.name == "TEXT":
                self.socket_acks.append(json.loads(msg.data))
                self._changed.set()
        self.socket = None
        return ws

    async def _response_url(self, request: web.Request) -> web.Response:
        self.responses.append((request.match_info["key"], await request.json()))
        self._changed.set()
        return web.Response(text="ok")

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.can_read_body:
            params.update(dict(await request.post()))
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else params.get("token")
        call = ApiCall(method, params, token)
        self.calls.append(call)
        self._changed.set()
        if method in self.stalled:
            await self.stalled[method].wait()
        failures = self._failures.get(method)
        if failures:
            status, headers, call.result = failures.pop(0)
            return web.json_response(call.result, status=status, headers=headers)
        call.result = self._answer(method, params, token, auth)
        return web.json_response(call.result)

    def _answer(self, method: str, params: dict[str, Any], token: str | None,
                auth: str) -> dict[str, Any]:
        if method == "oauth.v2.access":
            return self._oauth(params, auth)
        if method == "apps.connections.open":
            if token not in self.app_tokens:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": self.url.replace("http", "ws", 1) + "/socket"}
        ws = self.workspaces.get(token or "")
        if ws is None or token in self.revoked:
            return {"ok": False, "error": "token_revoked" if token in self.revoked
                    else "invalid_auth"}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        return handler(ws, params)

    # ------------------------------------------------------------------ methods
    def _auth_test(self, ws: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        # The published example (auth_test_ok.json) with this bot's ids, plus the fields
        # https://docs.slack.dev/reference/methods/auth.test lists for bot tokens and Grid
        # (bot_id, enterprise_id, is_enterprise_install); slack-bolt's OAuth flow reads bot_id.
        answer = fixture("auth_test_ok.json") | {
            "team": ws.team_id or "", "team_id": ws.team_id or "", "user": "avatarbot",
            "user_id": ws.bot_user_id, "bot_id": ws.bot_id,
            "is_enterprise_install": ws.team_id is None,
        }
        answer["url"] = f"https://{(ws.team_id or ws.enterprise_id or 'x').lower()}.slack.com/"
        if ws.enterprise_id is not None:
            answer["enterprise_id"] = ws.enterprise_id
        return answer

    def _member_error(self, ws: Workspace, channel: str) -> dict[str, Any] | None:
        if channel in ws.channels:
            return None
        return {"ok": False, "error": "not_in_channel" if channel.startswith("C")
                else "channel_not_found"}

    def _chat_postMessage(self, ws: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel", "")
        error = self._member_error(ws, channel)
        if error:
            return error
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = f"{1_700_000_000 + next(self._ts)}.000100"
        message = {"ts": ts, "text": params.get("text"), "blocks": params.get("blocks"),
                   "thread_ts": params.get("thread_ts"), "bot_id": ws.bot_id}
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, ws: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        key = (params.get("channel", ""), params.get("ts", ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key].update(text=params.get("text"), blocks=params.get("blocks"))
        return {"ok": True, "channel": key[0], "ts": key[1], "text": params.get("text")}

    def _chat_postEphemeral(self, ws: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        error = self._member_error(ws, params.get("channel", ""))
        if error:
            return error
        return {"ok": True, "message_ts": f"{1_700_000_000 + next(self._ts)}.000200"}

    def _conversations_join(self, ws: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel", "")
        if not channel.startswith("C"):
            return {"ok": False, "error": "method_not_supported_for_channel_type"}
        ws.channels.add(channel)
        return {"ok": True, "channel": {"id": channel, "is_member": True}}

    def _users_info(self, ws: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(params.get("user", ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    # files.uploadV2 as slack-sdk runs it (``files_upload_v2``), per Slack's reference pages:
    # files.getUploadURLExternal (filename, length) -> upload_url + file_id; POST the bytes to
    # upload_url (answers 200 "OK - <length>"); files.completeUploadExternal (files: JSON list of
    # {id, title}; channel_id, thread_ts, initial_comment) shares them and answers "files".
    def _files_getUploadURLExternal(self, ws: Workspace, params: dict[str, Any]
                                    ) -> dict[str, Any]:
        if ws.team_id in self.scopeless:
            return {"ok": False, "error": "missing_scope", "needed": "files:write",
                    "provided": "commands,chat:write"}
        if not params.get("filename") or not str(params.get("length", "")).isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._file_ids):09d}"
        self.files[file_id] = {"id": file_id, "filename": params["filename"],
                               "length": int(params["length"]), "data": None, "team": ws.team_id}
        return {"ok": True, "upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        entry = self.files.get(request.match_info["file_id"])
        if entry is None:
            return web.Response(status=404, text="not found")
        entry["data"] = await request.read()
        self._changed.set()
        return web.Response(text=f"OK - {len(entry['data'])}")

    def _files_completeUploadExternal(self, ws: Workspace, params: dict[str, Any]
                                      ) -> dict[str, Any]:
        try:
            listed = json.loads(params.get("files", ""))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        channel = params.get("channel_id")
        if channel:
            error = self._member_error(ws, channel)
            if error:
                return error
        shared = []
        for item in listed:
            entry = self.files.get(item.get("id", ""))
            if entry is None or entry["data"] is None or entry["team"] != ws.team_id:
                return {"ok": False, "error": "file_not_found"}
            if len(entry["data"]) != entry["length"]:
                return {"ok": False, "error": "file_upload_size_mismatch"}
            entry.update(title=item.get("title"), channel=channel,
                         thread_ts=params.get("thread_ts"),
                         initial_comment=params.get("initial_comment"))
            shared.append({"id": entry["id"], "name": entry["filename"],
                           "title": entry["title"], "size": entry["length"]})
        return {"ok": True, "files": shared}

    def _reactions_add(self, ws: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        if not (params.get("channel") and params.get("timestamp") and params.get("name")):
            return {"ok": False, "error": "no_item_specified"}
        return {"ok": True}

    def _oauth(self, params: dict[str, Any], auth: str) -> dict[str, Any]:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if self.client_credentials != (client_id, client_secret):
            return {"ok": False, "error": "invalid_client_id"}
        grant = self.oauth_codes.pop(params.get("code", ""), None)
        if grant is None:
            return {"ok": False, "error": "invalid_code"}
        team, enterprise = grant["team_id"], grant["enterprise_id"]
        name = team or enterprise
        self.add_workspace(team, grant["token"], bot_user_id=f"UB{name}", bot_id=f"BB{name}",
                           enterprise_id=enterprise)
        # The three published shapes (tests/fixtures/README.md): plain workspace, workspace of a
        # Grid org (enterprise and team set), org-wide install (team null,
        # is_enterprise_install true); only ids, token and installer are this grant's.
        if team is None:
            answer = fixture("oauth_v2_access_org_install.json")
        elif enterprise is not None:
            answer = fixture("oauth_v2_access_grid_workspace.json")
        else:
            answer = fixture("oauth_v2_access_workspace.json")
        answer |= {"app_id": "A0AVATAR", "access_token": grant["token"],
                   "bot_user_id": f"UB{name}", "scope": "commands,chat:write"}
        answer["authed_user"] = {"id": grant["installer"]}
        if team is not None:
            answer["team"] = {"id": team, "name": f"Team {team}"}
        if enterprise is not None:
            answer["enterprise"] = {"id": enterprise, "name": f"Org {enterprise}"}
        return answer


def dumps(obj: Any) -> str:
    """Compact JSON, as Slack sends it."""
    return json.dumps(obj, separators=(",", ":"))
