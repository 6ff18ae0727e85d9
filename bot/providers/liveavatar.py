"""LiveAvatar (``api.liveavatar.com``, HeyGen's successor), FULL mode: LiveKit media, vendor LLM.

Wire facts and their sources: ``docs/vendors/liveavatar.md``. In short: ``X-API-KEY`` on
server calls, a session token (``POST /v1/sessions/token``) that alone may start the session
(``POST /v1/sessions/start``, HTTP 201), envelope ``{code: 100, data, message}``. Knowledge
becomes a *context* (``POST /v1/contexts``); FULL mode without one streams but ignores what it
is told, so a short default persona is used when the session has no knowledge.

Commands: ``avatar.speak_text`` and ``avatar.speak_response`` are accepted only as LiveKit data
on topic ``agent-control`` (the session's ``ws_url`` speaks LiveAvatar's LITE protocol, where
only audio, interrupt and listening commands exist), so they are relayed by the viewer page.
Interrupt goes over ``ws_url`` (``agent.interrupt``) while our socket is open, and is relayed
as ``avatar.interrupt`` otherwise. Events (``avatar.transcription``, ``session.stopped`` ...)
arrive on topic ``agent-response`` through the viewer, and state changes over the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import aiohttp
import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from bot.core.errors import (
    InvalidRequest,
    ProviderError,
    ProviderRejected,
    ProviderSessionGone,
)
from bot.core.events import EventHub, Transcript, VendorEnded
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    Pricing,
    ProviderSession,
    StartRequest,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import ProviderBase
from bot.core.relay import RelayConfig, RelayItem
from bot.core.retry import RetryPolicy
from bot.providers._http import EchoFilter, VendorHTTP, auth_error, decode_json, message_of

log = logging.getLogger(__name__)

_V1 = "/v1"
CONTROL_TOPIC = "agent-control"  # commands to the avatar (LiveKit data)
# How the viewer page sends our commands: LiveKit reliable data on the control topic. A reliable
# data packet holds at most 15 KiB (docs/vendors/liveavatar.md); no vendor pace is documented.
RELAY = RelayConfig(max_message_bytes=15_000, bytes_per_second=0, topic=CONTROL_TOPIC)
KEEP_ALIVE_S = 60  # LiveAvatar ends a session after 5 minutes without activity
MAX_DURATION_S = 3600
WS_CONNECT_S = 5.0
DEFAULT_PERSONA = (
    "You are a friendly, concise assistant shown as a talking avatar in a chat thread. "
    "Answer in a few short spoken sentences."
)
_STOP_REASON = "USER_CLOSED"  # the documented default of StopSessionSchema.reason
_NOT_READY = {"INIT", "PROCESSING", "PENDING", "FAILED", "ERROR"}  # avatar statuses to hide
_PAGES = 10
# The one avatar sandbox sessions may use ("Wayne") [LA-docs sandbox-mode].
SANDBOX_AVATAR_ID = "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a"


class _Started(BaseModel):
    """``sessions/start`` answer ``data``."""

    model_config = ConfigDict(extra="ignore")

    session_id: str | None = None
    livekit_url: str
    livekit_client_token: str
    ws_url: str | None = None
    max_session_duration: int | None = None


class _Avatar(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str | None = None
    preview_url: str | None = None
    status: str | None = None
    is_expired: bool = False


class _Socket:
    """Our server's connection to a session's ``ws_url`` and the task reading it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.reader: asyncio.Task[None] | None = None


class LiveAvatarProvider(ProviderBase):
    """LiveAvatar FULL-mode avatars over LiveKit."""

    name = "liveavatar"
    display_name = "LiveAvatar"

    def __init__(
        self,
        *,
        api_key: SecretStr,
        http: httpx.AsyncClient,
        events: EventHub,
        pricing: Pricing,
        base_url: str = "https://api.liveavatar.com",
        sandbox: bool = False,
        timeout_s: float = 15.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
    ) -> None:
        self.events = events
        self.sandbox = sandbox
        # say/ask travel through the viewer page; the reaper keeps sessions alive.
        self.capabilities = Capabilities(
            transport="livekit", control="viewer", set_context=False, pricing=pricing,
            keep_alive_interval_s=KEEP_ALIVE_S, lists_sessions=True,
            max_duration_s=MAX_DURATION_S,
        )
        self._api = VendorHTTP(
            provider=self.name, display_name=self.display_name, http=http, base_url=base_url,
            headers={"X-API-KEY": api_key.get_secret_value()},
            is_success=lambda body: body.get("code") in (100, 1000),
            error_for=_error_for, timeout_s=timeout_s, retry=retry,
        )
        self._ws_http: aiohttp.ClientSession | None = None
        self._sockets: dict[str, _Socket] = {}  # our session id -> open socket
        self._vendor_ended: set[str] = set()  # sessions whose vendor end was reported
        self.socket_end_grace_s = 1.5
        self._echo = EchoFilter()

    # ------------------------------------------------------------------ avatars
    async def list_avatars(self) -> list[AvatarInfo]:
        """The account's own avatars, then the public ones (first 100 of each).

        In sandbox mode only LiveAvatar's sandbox avatar can start, so it is the only one.
        """
        if self.sandbox:
            return [AvatarInfo(id=SANDBOX_AVATAR_ID, name="Wayne (sandbox)", provider=self.name,
                               description="LiveAvatar sandbox: free, about a minute long")]
        found: dict[str, AvatarInfo] = {}
        for path in (f"{_V1}/avatars", f"{_V1}/avatars/public"):
            body = await self._api.call("GET", path, params={"page": 1, "page_size": 100})
            for a in self._results(body, _Avatar):
                if a.is_expired or (a.status or "").upper() in _NOT_READY or a.id in found:
                    continue
                found[a.id] = AvatarInfo(id=a.id, name=a.name or a.id, provider=self.name,
                                         preview_url=a.preview_url)
        return list(found.values())

    def _results(self, body: dict[str, Any], model: type[BaseModel]) -> list[Any]:
        data = body.get("data")
        items = data.get("results") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise self._api.unreadable()
        try:
            return [model.model_validate(i) for i in items if isinstance(i, dict)]
        except ValueError:  # an item without its id
            raise self._api.unreadable() from None

    # ------------------------------------------------------------------ start
    async def start(self, request: StartRequest) -> ProviderSession:
        """Context, session token, then start; a failure after the token stops what was made."""
        if request.duration_s > MAX_DURATION_S:
            raise InvalidRequest(
                f"LiveAvatar sessions last at most {MAX_DURATION_S // 60} minutes.")
        context_id = await self._create_context(request)
        vendor_id: str | None = None
        try:
            token_answer = await self._api.call(
                "POST", f"{_V1}/sessions/token", json_body=self._token_body(request, context_id)
            )
            data = token_answer.get("data")
            if not isinstance(data, dict) or not data.get("session_id") or not data.get(
                    "session_token"):
                raise self._api.unreadable()
            vendor_id, token = str(data["session_id"]), str(data["session_token"])
            # A session token starts one session: the start itself is never retried.
            answer = await self._api.call(
                "POST", f"{_V1}/sessions/start", headers={"Authorization": f"Bearer {token}"},
                retry=False,
            )
            try:
                started = _Started.model_validate(answer.get("data"))
            except ValueError:
                raise self._api.unreadable() from None
        except BaseException:
            await self._cleanup_failed_start(vendor_id, context_id)
            raise
        session = ProviderSession(
            session_id=request.session_id, provider=self.name, provider_session_id=vendor_id,
            viewer=ViewerInfo(transport="livekit", url=started.livekit_url,
                              token=started.livekit_client_token),
            expires_at=utcnow() + timedelta(seconds=request.duration_s),
            # Ids only: the ws_url carries a session credential and is kept in memory.
            handle={"session_id": vendor_id, "context_id": context_id},
            raw=answer,
        )
        if started.ws_url:
            await self._open_socket(session, started.ws_url)
        return session

    async def _create_context(self, request: StartRequest) -> str:
        """A context holding the session's knowledge, or the default persona."""
        prompt = (request.knowledge or "").strip() or DEFAULT_PERSONA
        answer = await self._api.call("POST", f"{_V1}/contexts", json_body={
            "name": f"avatarbot {request.session_id}", "prompt": prompt, "opening_text": "",
        })
        data = answer.get("data")
        cid = data.get("id") if isinstance(data, dict) else None
        if not cid:
            raise self._api.unreadable()
        return str(cid)

    def _token_body(self, request: StartRequest, context_id: str) -> dict[str, Any]:
        persona: dict[str, Any] = {"context_id": context_id}
        if request.voice:
            persona["voice_id"] = request.voice
        if request.language:
            persona["language"] = request.language
        return {
            "mode": "FULL", "avatar_id": request.avatar_id, "avatar_persona": persona,
            "is_sandbox": self.sandbox, "max_session_duration": request.duration_s,
        }

    async def _cleanup_failed_start(self, vendor_id: str | None, context_id: str) -> None:
        with contextlib.suppress(ProviderError):
            if vendor_id is not None:
                await self._stop_vendor(vendor_id)
        await self._delete_context(context_id)

    # ------------------------------------------------------------------ commands
    async def say(self, session: ProviderSession, text: str) -> None:
        """``avatar.speak_text`` through the page; the words are the avatar's line at once."""
        sid = session.session_id
        self._echo.said(sid, text)

        def spoken() -> None:  # once the page has sent it into the room, the avatar speaks it
            self.events.publish(Transcript(session_id=sid, speaker="avatar", text=text))

        self._relay(session, "avatar.speak_text", text=text, on_sent=spoken)

    async def ask(self, session: ProviderSession, text: str) -> None:
        """``avatar.speak_response`` through the page; the answer comes back as a transcription."""
        self._relay(session, "avatar.speak_response", text=text)

    async def interrupt(self, session: ProviderSession) -> None:
        """``agent.interrupt`` over our socket when open, else ``avatar.interrupt`` relayed."""
        sock = self._sockets.get(session.session_id)
        if sock is not None and not sock.ws.closed:
            try:
                await sock.ws.send_json({"type": "agent.interrupt", "event_id": _event_id()})
                return
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                log.info("LiveAvatar socket send failed (%s); relaying", type(exc).__name__)
        self._relay(session, "avatar.interrupt")

    async def set_context(self, session: ProviderSession, text: str) -> None:
        """The context is bound to the session token, so knowledge is fixed at start."""
        raise InvalidRequest(
            "LiveAvatar avatars take knowledge only when the session starts; start a new "
            "session with the knowledge instead."
        )

    def _relay(self, session: ProviderSession, event_type: str, *,
               on_sent: Callable[[], None] | None = None, **fields: Any) -> None:
        """Queue one command in the session's relay outbox; the viewer page publishes it."""
        message = {"event_type": event_type, "event_id": _event_id(),
                   "session_id": _sid(session), **fields}
        self.events.relay.put(session.session_id, [RelayItem(message, on_sent=on_sent)],
                              label=str(fields.get("text") or event_type), config=RELAY)

    # ------------------------------------------------------------------ upkeep
    async def keep_alive(self, session: ProviderSession) -> None:
        """Reset LiveAvatar's idle timer."""
        await self._api.call("POST", f"{_V1}/sessions/keep-alive",
                             json_body={"session_id": _sid(session)})

    async def stop(self, session: ProviderSession) -> None:
        """Stop the session (one already ended counts as stopped) and delete its context."""
        await self._close_socket(session.session_id)
        await self._stop_vendor(_sid(session))
        context_id = session.handle.get("context_id")
        if context_id:
            await self._delete_context(str(context_id))
        self._echo.forget(session.session_id)
        self._vendor_ended.discard(session.session_id)

    async def _stop_vendor(self, vendor_id: str) -> None:
        try:
            await self._api.call("POST", f"{_V1}/sessions/stop",
                                 json_body={"session_id": vendor_id, "reason": _STOP_REASON})
        except ProviderSessionGone:
            pass  # LiveAvatar ended it already: stopped either way

    async def _delete_context(self, context_id: str) -> None:
        try:
            await self._api.call("DELETE", f"{_V1}/contexts/{context_id}", retry=False)
        except ProviderError as exc:  # a leftover context costs nothing; never block a stop
            log.info("could not delete a LiveAvatar context: %r", exc)

    async def list_open_sessions(self) -> list[str]:
        """Vendor ids of the account's active sessions (up to 10 pages of 100)."""
        found: list[str] = []
        for page in range(1, _PAGES + 1):
            body = await self._api.call("GET", f"{_V1}/sessions", params={
                "type": "active", "page": page, "page_size": 100})
            data = body.get("data")
            items = data.get("results") if isinstance(data, dict) else None
            if not isinstance(data, dict) or not isinstance(items, list):
                # The reaper lists sessions at startup: garbage must be a typed error.
                raise self._api.unreadable()
            found += [str(i["id"]) for i in items if isinstance(i, dict) and i.get("id")]
            if not data.get("next") or len(items) < 100:
                break
        return found

    async def transcript(self, session: ProviderSession) -> list[Transcript]:
        """The FULL-mode transcript LiveAvatar kept (every page), as transcript lines."""
        lines: list[Transcript] = []
        params: dict[str, Any] = {}
        for _ in range(_PAGES):
            body = await self._api.call(
                "GET", f"{_V1}/sessions/{_sid(session)}/transcript", params=params)
            data = body.get("data")
            items = data.get("transcript_data") if isinstance(data, dict) else None
            if not isinstance(data, dict) or not isinstance(items, list):
                raise self._api.unreadable()
            for item in items:
                text = item.get("transcript") if isinstance(item, dict) else None
                if isinstance(text, str) and text.strip():
                    speaker: Literal["user", "avatar"] = (
                        "user" if item.get("role") == "user" else "avatar"
                    )
                    lines.append(Transcript(session_id=session.session_id, speaker=speaker,
                                            text=text.strip()))
            nxt = data.get("next_timestamp")
            if not items or nxt is None:
                break
            params = {"start_timestamp": nxt}  # the next page starts after this one
        return lines

    async def aclose(self) -> None:
        """Close every socket and our WebSocket client."""
        for session_id in list(self._sockets):
            await self._close_socket(session_id)
        if self._ws_http is not None:
            await self._ws_http.close()
            self._ws_http = None

    # ------------------------------------------------------------------ events
    def decode_viewer_data(self, session: ProviderSession, payload: Any) -> list[Transcript]:
        """Turn an ``agent-response`` event the page received into transcript lines."""
        msg = decode_json(payload)
        if not isinstance(msg, dict):
            return []
        return self._on_event(session.session_id, msg)

    def _on_event(self, session_id: str, msg: dict[str, Any]) -> list[Transcript]:
        kind = msg.get("event_type")
        if kind == "session.stopped":
            self._vendor_ended.add(session_id)
            self.events.publish(VendorEnded(session_id=session_id,
                                            reason=end_reason_text(msg.get("end_reason"))))
            return []
        if kind not in ("avatar.transcription", "user.transcription"):
            return []  # chunks, speak started/ended: the whole line follows
        text = msg.get("text")
        if not isinstance(text, str) or not text.strip():
            return []
        text = text.strip()
        speaker: Literal["avatar", "user"] = (
            "avatar" if kind == "avatar.transcription" else "user"
        )
        if speaker == "avatar" and self._echo.is_echo(session_id, text):
            return []
        return [Transcript(session_id=session_id, speaker=speaker, text=text)]

    # ------------------------------------------------------------------ socket
    async def _open_socket(self, session: ProviderSession, ws_url: str) -> None:
        if self._ws_http is None:
            self._ws_http = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(
                self._ws_http.ws_connect(ws_url, heartbeat=30.0, max_msg_size=1 << 20),
                WS_CONNECT_S,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Commands still reach the avatar through the page; only the socket is missing.
            log.warning("could not open the LiveAvatar session socket: %s", type(exc).__name__)
            return
        sock = _Socket(ws)
        self._sockets[session.session_id] = sock
        sock.reader = asyncio.create_task(self._read(session.session_id, ws),
                                          name=f"liveavatar-ws-{session.session_id}")

    async def _read(self, session_id: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    msg = json.loads(frame.data)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    await self._on_socket_message(session_id, msg)
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.info("LiveAvatar session socket failed: %s", type(exc).__name__)

    async def _on_socket_message(self, session_id: str, msg: dict[str, Any]) -> None:
        if msg.get("type") == "session.state_updated" and msg.get("state") == "closed":
            # Our own stop closes the socket before stopping, so this is LiveAvatar's end. The
            # socket gives no reason; the page's ``session.stopped`` does, so it gets a moment
            # to arrive first.
            await asyncio.sleep(self.socket_end_grace_s)
            if session_id not in self._vendor_ended:
                self._vendor_ended.add(session_id)
                self.events.publish(VendorEnded(session_id=session_id,
                                                reason=end_reason_text(msg.get("reason"))))
            return
        if "event_type" in msg:  # FULL-mode events, should the socket carry them too
            for line in self._on_event(session_id, msg):
                self.events.publish(line)

    async def _close_socket(self, session_id: str) -> None:
        sock = self._sockets.pop(session_id, None)
        if sock is None:
            return
        if sock.reader is not None:
            sock.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sock.reader
        with contextlib.suppress(aiohttp.ClientError, OSError, RuntimeError):
            await sock.ws.close()


def _sid(session: ProviderSession) -> str:
    return str(session.handle.get("session_id") or session.provider_session_id)


def _event_id() -> str:
    return str(uuid.uuid4())


_REASONS = (
    ("CREDIT", "the LiveAvatar account ran out of credits"),
    ("IDLE", "LiveAvatar ended it after a while without activity"),
    ("INACTIV", "LiveAvatar ended it after a while without activity"),
    ("DURATION", "it reached LiveAvatar's time limit"),
    ("TIMEOUT", "it reached LiveAvatar's time limit"),
)


def end_reason_text(reason: Any) -> str:
    """Plain words for LiveAvatar's ``end_reason`` (its enum, never free vendor text)."""
    code = reason.upper() if isinstance(reason, str) else ""
    for key, text in _REASONS:
        if key in code:
            return text
    if re.fullmatch(r"[A-Z_]{1,40}", code):
        return f"LiveAvatar ended the session ({code.lower().replace('_', ' ')})"
    return "LiveAvatar ended the session"


_GONE = "That LiveAvatar session has already ended."


def _error_for(status: int, body: dict[str, Any]) -> ProviderError | None:
    code, msg = body.get("code"), message_of(body)
    if status in (401, 403):
        return auth_error("liveavatar", "LiveAvatar", status, code)
    if status == 429:
        return None  # the default: retryable, after the Retry-After the answer gave
    if status == 402 or "credit" in msg:
        return ProviderRejected(
            "liveavatar", "The LiveAvatar account is out of credits; an operator must top it up.",
            status_code=status, code=code,
        )
    if "concurrent" in msg:
        return ProviderRejected(
            "liveavatar", "LiveAvatar's limit of concurrent sessions is reached; end another "
            "session or try later.", status_code=status, code=code,
        )
    if "session" in msg and any(w in msg for w in ("not found", "ended", "closed", "inactive",
                                                   "not active", "stopped")):
        return ProviderSessionGone("liveavatar", _GONE, reason="LiveAvatar ended the session",
                                   status_code=status, code=code)
    if "sandbox" in msg:
        return ProviderRejected(
            "liveavatar", "LiveAvatar sandbox mode takes only its sandbox avatar (Wayne).",
            status_code=status, code=code,
        )
    if "avatar" in msg and ("not found" in msg or "not exist" in msg or "invalid" in msg):
        return ProviderRejected("liveavatar", "That avatar does not exist.", status_code=status,
                                code=code)
    if status == 404 and "session" in msg:
        return ProviderSessionGone("liveavatar", _GONE, reason="LiveAvatar ended the session",
                                   status_code=status, code=code)
    if status == 422:
        return ProviderRejected("liveavatar", "LiveAvatar refused the request's parameters.",
                                status_code=status, code=code)
    return None

