"""AKool live avatar (v4): REST sessions, Agora media, chat and commands over the data channel.

Wire facts (``docs/vendors/akool.md``): base ``https://openapi.akool.com``, ``x-api-key``
auth, envelope ``{code: 1000, msg, data}`` with business errors as HTTP 200 and another
``code``. Credits are pre-charged for ``duration`` (at most 3600 s) and refunded on close. Text
reaches the avatar only as Agora stream messages, at most 1 KB each and 6 KB/s, which the viewer
page sends for us (``Relay`` events).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bot.core.bookings import booked_nothing
from bot.core.errors import (
    InvalidRequest,
    ProviderError,
    ProviderRejected,
    ProviderSessionGone,
    ProviderUnavailable,
)
from bot.core.events import EventHub, Transcript
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    Mode,
    Pricing,
    ProviderSession,
    StartRequest,
    VendorStatus,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import ProviderBase
from bot.core.relay import DropLog, RelayItem
from bot.core.retry import RetryPolicy
from bot.providers._http import EchoFilter, VendorHTTP, auth_error, decode_json
from bot.providers.akool_wire import RELAY, ack_lines, chunk_chat, command, new_mid

log = logging.getLogger(__name__)

_API = "/api/open/v4"
MAX_DURATION_S = 3600
# How often the reaper reads a live session's detail to see whether AKool closed it: one GET per
# session per interval keeps well clear of AKool's "frequent operation" refusal (1005).
STATUS_INTERVAL_S = 30.0
MAX_KNOWLEDGE_CHARS = 10_000  # knowledge-base ``prompt`` limit [AK-kb]
_OPEN_STATUSES = {1, 2}  # 1 queueing, 2 processing; 3 completed, 4 failed
_MODE_TYPE = {Mode.SAY: 1, Mode.ASK: 2}  # 1 retelling (verbatim), 2 dialogue (LLM answers)
# Bounds on what a viewer page reports (a tab is not trusted to send only the vendor's words).
REPLY_WAIT_S = 120.0  # a question's reply is accepted for this long after it was sent
MAX_REPLY_CHARS = 8000
MAX_PARTS = 256
MAX_MID_CHARS = 100


class _Credentials(BaseModel):
    model_config = ConfigDict(extra="ignore")

    agora_uid: int | str
    agora_app_id: str
    agora_channel: str
    agora_token: str


class _Session(BaseModel):
    """``session/create`` and ``session/detail`` answer ``data``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")
    status: int | None = None
    credentials: _Credentials


class _Avatar(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    avatar_id: str
    name: str = ""
    thumbnailUrl: str | None = None  # noqa: N815 - vendor field name
    available: bool = True


class AKoolProvider(ProviderBase):
    """AKool avatars over Agora; chat and commands travel through the viewer's data channel."""

    name = "akool"
    display_name = "AKool"
    # Whether the avatar echoes a retold text as ``bot`` chat. AKool's docs describe no echo, so
    # a ``say`` is shown once the page has sent it; with an echo it would be shown on the echo.
    say_echo = False

    def __init__(
        self,
        *,
        api_key: SecretStr,
        http: httpx.AsyncClient,
        events: EventHub,
        pricing: Pricing,
        base_url: str = "https://openapi.akool.com",
        timeout_s: float = 15.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
        status_interval_s: float = STATUS_INTERVAL_S,
    ) -> None:
        self.events = events
        self.capabilities = Capabilities(
            transport="agora", control="viewer", set_context=False, pricing=pricing,
            max_duration_s=MAX_DURATION_S, lists_sessions=True, max_text_chars=2000,
            max_knowledge_chars=MAX_KNOWLEDGE_CHARS, status_interval_s=status_interval_s,
        )
        self._api = VendorHTTP(
            provider=self.name, display_name=self.display_name, http=http, base_url=base_url,
            headers={"x-api-key": api_key.get_secret_value()},
            is_success=lambda body: body.get("code") == 1000,
            error_for=_error_for, timeout_s=timeout_s, retry=retry,
        )
        self._modes: dict[str, int] = {}  # the mode_type the vendor last confirmed, by session
        # Commands sent and not acknowledged yet: session -> mid -> (cmd, mode for set-params).
        self._commands: dict[str, dict[str, tuple[str, int | None]]] = {}
        self._asks: dict[str, list[float]] = {}  # questions sent, by when their reply is due
        self._drops = DropLog(log)
        self._replies: dict[tuple[str, str, str], list[str]] = {}  # (session, from, mid) -> text
        self._echo = EchoFilter()
        self._seen_open: dict[str, datetime] = {}  # session -> when AKool last said it was open

    async def list_avatars(self) -> list[AvatarInfo]:
        """Return the available streaming avatars (first 100)."""
        body = await self._api.call(
            "GET", f"{_API}/liveAvatar/avatar/list", params={"platform": "open", "page": 1,
                                                              "size": 100},
        )
        try:
            items = (body.get("data") or {}).get("result") or []
            avatars = [_Avatar.model_validate(i) for i in items if isinstance(i, dict)]
        except (AttributeError, TypeError, ValueError):  # ``data`` of the wrong shape
            raise self._api.unreadable() from None
        return [
            AvatarInfo(id=a.avatar_id, name=a.name or a.avatar_id, provider=self.name,
                       preview_url=a.thumbnailUrl)
            for a in avatars if a.available
        ]

    async def start(self, request: StartRequest) -> ProviderSession:
        """Create a session; knowledge text becomes a knowledge base first."""
        if request.duration_s > MAX_DURATION_S:
            raise InvalidRequest(f"AKool sessions last at most {MAX_DURATION_S // 60} minutes.")
        mode_type = _MODE_TYPE[request.mode]
        body: dict[str, Any] = {
            "avatar_id": request.avatar_id, "duration": request.duration_s,
            "mode_type": mode_type, "stream_type": "agora",
        }
        if request.knowledge:
            body["knowledge_id"] = await self._knowledge_base(request)
        if request.voice:
            body["voice_id"] = request.voice
        if request.language:
            body["language"] = request.language
        # Retried only after a definite refusal: a timed-out create may have booked a session
        # (bot/core/bookings.py).
        answer = await self._api.call("POST", f"{_API}/liveAvatar/session/create", json_body=body,
                                      retry_if=booked_nothing)
        session = self._to_session(request, answer)
        self._modes[request.session_id] = mode_type
        self._seen_open[request.session_id] = utcnow()
        if answer["data"].get("status") == 4:
            await self._close_quietly(session)
            raise ProviderUnavailable(self.name, "AKool could not start the avatar; try again.")
        return session

    async def _knowledge_base(self, request: StartRequest) -> str:
        text = request.knowledge or ""
        if len(text) > MAX_KNOWLEDGE_CHARS:
            raise InvalidRequest(
                f"AKool takes at most {MAX_KNOWLEDGE_CHARS:,} characters of knowledge; "
                f"this text has {len(text):,}."
            )
        answer = await self._api.call(
            "POST", f"{_API}/knowledge/create",
            json_body={"name": f"avatarbot {request.session_id}", "prompt": text},
        )
        data = answer.get("data")
        kid = data.get("_id") if isinstance(data, dict) else None
        if not kid:
            raise self._api.unreadable()
        return str(kid)

    def _to_session(self, request: StartRequest, answer: dict[str, Any]) -> ProviderSession:
        try:
            data = _Session.model_validate(answer.get("data"))
        except ValueError:
            raise self._api.unreadable() from None
        cred = data.credentials
        return ProviderSession(
            session_id=request.session_id, provider=self.name, provider_session_id=data.id,
            viewer=ViewerInfo(transport="agora", app_id=cred.agora_app_id,
                              channel=cred.agora_channel, token=cred.agora_token,
                              uid=cred.agora_uid),
            expires_at=utcnow() + timedelta(seconds=request.duration_s),
            handle={"id": data.id, "mode_type": _MODE_TYPE[request.mode]}, raw=answer,
        )

    async def say(self, session: ProviderSession, text: str) -> None:
        """Queue ``text`` for the page in retelling mode (spoken verbatim).

        The thread sees it as the avatar's line once the page has sent its last chunk into the
        room, after the vendor confirmed retelling mode, or, with ``say_echo``, once the avatar
        echoed it. An echo must match what was sent, and is never shown twice.
        """
        sid = session.session_id
        chunks = [RelayItem(c) for c in chunk_chat(text, new_mid())]

        def spoken() -> None:
            self.events.publish(Transcript(session_id=sid, speaker="avatar", text=text))

        if not self.say_echo:
            chunks[-1].on_sent = spoken
        self._queue(session, self._mode_switch(session, 1), chunks, f"say: {text}")
        self._echo.said(sid, text)

    async def ask(self, session: ProviderSession, text: str) -> None:
        """Queue ``text`` in dialogue mode; the reply comes back as ``bot`` chat."""
        sid = session.session_id
        chunks = [RelayItem(c) for c in chunk_chat(text, new_mid())]

        def asked() -> None:
            # From now on one reply is expected (and accepted) from the avatar.
            self._asks.setdefault(sid, []).append(time.monotonic() + REPLY_WAIT_S)

        chunks[-1].on_sent = asked
        self._queue(session, self._mode_switch(session, 2), chunks, f"ask: {text}")

    async def interrupt(self, session: ProviderSession) -> None:
        """Queue the ``interrupt`` command."""
        mid = new_mid()
        self._queue(session, [], [RelayItem(command("interrupt", mid))], "stop speaking",
                    commands={mid: ("interrupt", None)})

    async def set_context(self, session: ProviderSession, text: str) -> None:
        """AKool binds a knowledge base only when a session is created."""
        raise InvalidRequest(
            "AKool avatars take knowledge only when the session starts; start a new session "
            "with the knowledge instead."
        )

    def confirmed_mode(self, session_id: str) -> int | None:
        """The ``mode_type`` AKool last confirmed for a session (``None`` when unknown)."""
        return self._modes.get(session_id)

    def _mode_switch(self, session: ProviderSession, mode_type: int) -> list[RelayItem]:
        """A ``set-params`` barrier when the mode the vendor will be in differs from ``mode_type``.

        That mode is the last one queued, else the last one the vendor confirmed; after a
        restart it is unknown, so it is set again before the next chat.
        """
        expected = self._modes.get(session.session_id)
        for payload in self.events.relay.queued(session.session_id):
            pld = payload.get("pld") or {}
            if payload.get("type") == "command" and pld.get("cmd") == "set-params":
                expected = (pld.get("data") or {}).get("mode")
        if expected == mode_type:
            return []
        mid = new_mid()
        return [RelayItem(command("set-params", mid, {"mode": mode_type}), barrier=True, key=mid)]

    def _queue(self, session: ProviderSession, switch: list[RelayItem], items: list[RelayItem],
               label: str, commands: dict[str, tuple[str, int | None]] | None = None) -> None:
        """Put one user message into the session's relay outbox (all of it or, when full, none)."""
        sid = session.session_id
        self.events.relay.put(sid, switch + items, label=label, config=RELAY)
        sent = self._commands.setdefault(sid, {})
        for item in switch:
            sent[str(item.key)] = ("set-params", item.payload["pld"]["data"]["mode"])
        sent.update(commands or {})
        while len(sent) > 64:  # old commands the vendor never answered
            del sent[next(iter(sent))]

    async def stop(self, session: ProviderSession) -> None:
        """Close the session (refunds unused credits); an already closed one counts as closed."""
        vendor_id = str(session.handle.get("id") or session.provider_session_id)
        try:
            await self._api.call(
                "POST", f"{_API}/liveAvatar/session/close", json_body={"id": vendor_id}
            )
        except ProviderSessionGone:
            pass  # 1216 does not exist / 1219 already closed: stopped either way
        sid = session.session_id
        self._modes.pop(sid, None)
        self._seen_open.pop(sid, None)
        self._commands.pop(sid, None)
        self._asks.pop(sid, None)
        self.events.relay.forget(sid)
        self._drops.forget(sid)
        self._echo.forget(sid)
        self._replies = {k: v for k, v in self._replies.items() if k[0] != sid}

    async def _close_quietly(self, session: ProviderSession) -> None:
        try:
            await self.stop(session)
        except ProviderError as exc:
            log.warning("could not close a failed AKool session: %r", exc)

    async def status(self, session: ProviderSession) -> VendorStatus:
        """Read the session's detail: ``status`` 3 (completed) or 4 (failed) means AKool closed it.

        The detail carries no end time [AK-oas], so the end is taken as the last time AKool
        still said the session was open (at most one status interval before it closed).
        """
        vendor_id = str(session.handle.get("id") or session.provider_session_id)
        body = await self._api.call(
            "GET", f"{_API}/liveAvatar/session/detail", params={"id": vendor_id}
        )
        data = body.get("data")
        state = data.get("status") if isinstance(data, dict) else None
        if not isinstance(state, int) or isinstance(state, bool):
            raise self._api.unreadable()
        if state in _OPEN_STATUSES:
            self._seen_open[session.session_id] = utcnow()
            return VendorStatus(open=True)
        reason = _FAILED if state == 4 else _COMPLETED
        return VendorStatus(open=False, reason=reason,
                            ended_at=self._seen_open.get(session.session_id))

    async def list_open_sessions(self) -> list[str]:
        """Vendor ids of sessions still queueing or running (up to 10 pages of 100)."""
        found: list[str] = []
        for page in range(1, 11):
            body = await self._api.call(
                "GET", f"{_API}/liveAvatar/session/list", params={"page": page, "size": 100}
            )
            data = body.get("data") or {}
            # The docs show both ``result`` (OpenAPI) and ``data`` (an older page).
            items = ((data.get("result") or data.get("data") or [])
                     if isinstance(data, dict) else None)
            if not isinstance(items, list):
                # The reaper lists sessions at startup: garbage must be a typed error.
                raise self._api.unreadable()
            found += [str(i["_id"]) for i in items
                      if isinstance(i, dict) and "_id" in i and i.get("status") in _OPEN_STATUSES]
            if len(items) < 100:
                break
        return found

    def decode_viewer_data(self, session: ProviderSession, payload: Any) -> list[Transcript]:
        """Check and decode what the page received on the data stream.

        Only AKool's own shapes pass (``docs/vendors/akool.md``): a ``bot`` reply only while a
        question is outstanding (or as the echo of a retold text, which is not shown again), a
        command acknowledgement only for a command we sent. Anything else is dropped and logged
        once per kind, never shown.
        """
        sid = session.session_id
        msg = decode_json(payload)
        if not isinstance(msg, dict) or msg.get("v") != 2 or not isinstance(msg.get("pld"), dict):
            return self._drop(sid, "not an AKool v2 message")
        kind = msg.get("type")
        if kind == "chat":
            return self._on_chat(session, msg)
        if kind == "command":
            return self._on_ack(session, msg)
        if kind == "event":  # audio_start / audio_end, seen in AKool's demo: nothing to show
            return []
        return self._drop(sid, "unknown AKool message type")

    def _drop(self, session_id: str, reason: str) -> list[Transcript]:
        self._drops.drop(session_id, reason)
        return []

    def _on_chat(self, session: ProviderSession, msg: dict[str, Any]) -> list[Transcript]:
        sid = session.session_id
        pld, mid, idx, fin = msg["pld"], msg.get("mid"), msg.get("idx"), msg.get("fin")
        sender, piece = pld.get("from"), pld.get("text")
        if (sender not in ("bot", "user") or not isinstance(piece, str)
                or not isinstance(mid, str) or not 0 < len(mid) <= MAX_MID_CHARS
                or not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < MAX_PARTS
                or not isinstance(fin, bool)):
            return self._drop(sid, "chat of the wrong shape")
        key = (sid, sender, mid)
        parts = self._replies.setdefault(key, [])
        parts.append(piece)
        if sum(len(p) for p in parts) > MAX_REPLY_CHARS or len(parts) > MAX_PARTS:
            del self._replies[key]
            return self._drop(sid, "oversized chat")
        while len(self._replies) > 32:  # pieces whose last part never came
            del self._replies[next(iter(self._replies))]
        if not fin:
            return []
        text = "".join(self._replies.pop(key)).strip()
        if not text:
            return []
        if sender == "user":
            return [Transcript(session_id=sid, speaker="user", text=text)]
        if self._echo.is_echo(sid, text):
            # A retold text coming back as it was sent: the proof it was spoken, or, when the
            # line was shown on sending, a repeat.
            if not self.say_echo:
                return []
            return [Transcript(session_id=sid, speaker="avatar", text=text)]
        now = time.monotonic()
        asks = [t for t in self._asks.get(sid, []) if t > now]
        if not asks:
            self._asks.pop(sid, None)
            return self._drop(sid, "avatar line with no question outstanding")
        self._asks[sid] = asks[1:]
        return [Transcript(session_id=sid, speaker="avatar", text=text)]

    def _on_ack(self, session: ProviderSession, msg: dict[str, Any]) -> list[Transcript]:
        sid = session.session_id
        pld, mid = msg["pld"], msg.get("mid")
        cmd, code = pld.get("cmd"), pld.get("code")
        sent = self._commands.get(sid, {})
        if not isinstance(mid, str) or mid not in sent:
            # The docs' ack carries the command's mid; without one, the oldest of that command.
            mid = next((m for m, (c, _) in sent.items() if c == cmd), None) if mid is None else None
        if mid is None or sent[mid][0] != cmd or not isinstance(code, int):
            return self._drop(sid, "acknowledgement of no command we sent")
        _, mode = sent.pop(mid)
        if cmd == "set-params":
            if code == 1000:
                self._modes[sid] = int(mode or 0)  # the vendor's mode changes here, and only here
                self.events.relay.confirm(sid, mid)
            else:
                self.events.relay.fail(sid, mid, f"AKool refused to switch the avatar's mode "
                                                 f"(code {code}).")
            return []
        return ack_lines(sid, {"cmd": cmd, "code": code})


_ERRORS: dict[int, tuple[type[ProviderError], str]] = {
    1003: (ProviderRejected, "AKool refused the request's parameters."),
    1005: (ProviderUnavailable, "AKool says we are going too fast; try again in a minute."),
    1006: (ProviderRejected, "The AKool account is out of quota; an operator must top it up."),
    1008: (ProviderRejected, "That avatar does not exist."),
    1103: (ProviderRejected, "The AKool account is unpaid or overdue; an operator must fix it."),
    1104: (ProviderRejected, "The AKool account is out of credits; an operator must top it up."),
    1213: (ProviderRejected, "The AKool account needs a subscription for live avatars."),
    1214: (ProviderUnavailable, "The AKool avatar is still being prepared; try again soon."),
    1215: (ProviderUnavailable, "AKool has no free capacity right now; try again in a minute."),
    1216: (ProviderSessionGone, "That AKool session does not exist any more."),
    1218: (ProviderUnavailable, "AKool failed to process the request; try again soon."),
    1219: (ProviderSessionGone, "That AKool session is already closed."),
    1221: (ProviderRejected, "The AKool account is not subscribed to live avatars."),
}
_AUTH_CODES = {1009, 1101, 1102, 1200}
_COMPLETED = "AKool closed the session (its time ran out or it was ended on AKool's side)"
_FAILED = "AKool reported that the avatar session failed"


def _error_for(status: int, body: dict[str, Any]) -> ProviderError | None:
    code = body.get("code")
    if not isinstance(code, int) or code == 1000:
        return None
    if code in _AUTH_CODES:
        return auth_error("akool", "AKool", status, code)
    if code in (1216, 1219):  # the session does not exist / is closed: AKool ended it
        return ProviderSessionGone("akool", _ERRORS[code][1], reason=_COMPLETED,
                                   status_code=status, code=code)
    if code in _ERRORS:
        cls, text = _ERRORS[code]
        return cls("akool", text, status_code=status, code=code)
    return None
