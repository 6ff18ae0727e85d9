"""HeyGen Interactive Avatar (``/v1/streaming.*``), LEGACY: LiveKit (v2) media only.

HeyGen has moved interactive avatars to LiveAvatar (``bot/providers/liveavatar.py``); this
adapter stays for accounts that have not switched yet. Raw WebRTC (v1) ended on 2025-02-28 and is
no longer spoken here (the setting that selected it is refused with an explanation).

Wire facts (``docs/vendors/heygen.md``): base ``https://api.heygen.com``, ``X-Api-Key``
on server calls, envelope ``{code: 100, message, data}`` (``create_token`` answers
``{error: null, data}``), errors as HTTP 4xx/5xx with ``{code, message}``. A session dies after
120 s without activity unless ``streaming.keep_alive`` is called, and after
``session_duration_limit`` seconds, which we set to the session's requested length.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from bot.compat.cancel import cancel_and_wait
from bot.core.errors import (
    InvalidRequest,
    ProviderError,
    ProviderRejected,
    ProviderSessionGone,
)
from bot.core.events import EventHub, Transcript
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    Pricing,
    ProviderSession,
    StartRequest,
    VendorStatus,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import ProviderBase
from bot.core.retry import RetryPolicy
from bot.providers._http import EchoFilter, VendorHTTP, auth_error, decode_json, message_of

log = logging.getLogger(__name__)

_V1 = "/v1"
KEEP_ALIVE_S = 60  # well inside HeyGen's 120 s idle timeout
# How often the reaper asks ``streaming.list`` whether a live session is still open.
STATUS_INTERVAL_S = 30.0
# How long one ``streaming.list`` answer may serve the status polls of the account's sessions.
LISTING_REUSE_S = 5.0
_MAX_LINE_CHARS = 20_000
# What people see in the startup banner and ``doctor`` while a HeyGen key is configured.
LEGACY_NOTICE = (
    "LEGACY: HeyGen has moved interactive avatars to LiveAvatar and is retiring this API. "
    "A new key is needed (from app.liveavatar.com; HeyGen keys do not work there): set "
    "LIVEAVATAR_API_KEY, then unset HEYGEN_API_KEY"
)


class _NewSession(BaseModel):
    """``streaming.new`` answer ``data`` for v2 (LiveKit)."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    url: str | None = None
    access_token: str | None = None


class _Avatar(BaseModel):
    model_config = ConfigDict(extra="ignore")

    avatar_id: str
    pose_name: str | None = None
    normal_preview: str | None = None
    status: str | None = None


class HeyGenProvider(ProviderBase):
    """HeyGen streaming avatars over LiveKit (legacy: LiveAvatar is the successor)."""

    name = "heygen"
    display_name = "HeyGen"

    def __init__(
        self,
        *,
        api_key: SecretStr,
        http: httpx.AsyncClient,
        events: EventHub,
        pricing: Pricing,
        base_url: str = "https://api.heygen.com",
        timeout_s: float = 15.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
        status_interval_s: float = STATUS_INTERVAL_S,
    ) -> None:
        self.events = events
        self.capabilities = Capabilities(
            transport="livekit", control="server", set_context=False, pricing=pricing,
            keep_alive_interval_s=KEEP_ALIVE_S, lists_sessions=True, max_duration_s=3600,
            max_text_chars=2000, max_knowledge_chars=20_000, status_interval_s=status_interval_s,
        )
        self._api = VendorHTTP(
            provider=self.name, display_name=self.display_name, http=http, base_url=base_url,
            headers={"X-Api-Key": api_key.get_secret_value()},
            is_success=_is_success, error_for=_error_for,
            timeout_s=timeout_s, retry=retry,
        )
        self._lines: dict[tuple[str, str], list[str]] = {}  # (session, speaker) -> pieces
        self._echo = EchoFilter()
        self._seen_open: dict[str, datetime] = {}  # session -> when HeyGen last had it open
        # One listing shared by the status polls of all of this account's sessions (each
        # provider instance is one API key): (asked at, monotonic; asked at, wall; the answer).
        self._listing: tuple[float, datetime, asyncio.Task[list[str]]] | None = None
        # Per session: a listing asked for before this (monotonic) cannot tell its status, since
        # the session started after it, or an earlier poll already had that listing's answer.
        self._listed_after: dict[str, float] = {}

    async def _post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self._api.call("POST", f"{_V1}/{path}", json_body=body, **kw)

    async def _session_call(self, session: ProviderSession, path: str,
                            body: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """A call about one session; HeyGen answering that it is closed means HeyGen ended it."""
        try:
            answer = await self._post(path, body, idempotent=idempotent)
        except ProviderSessionGone as exc:
            exc.ended_at = self._end_time(session)
            raise
        self._seen_open[session.session_id] = utcnow()
        return answer

    def _end_time(self, session: ProviderSession) -> datetime | None:
        """When HeyGen closed a session we found closed: the last time it still had it open.

        HeyGen does not say when (``None``: not known, so "now"). Its own end at
        ``session_duration_limit`` coincides with our expiry, which settlement is capped at.
        """
        return self._seen_open.get(session.session_id)

    async def list_avatars(self) -> list[AvatarInfo]:
        """Return the account's active streaming avatars."""
        body = await self._api.call("GET", f"{_V1}/streaming/avatar.list")
        try:
            items = [_Avatar.model_validate(i) for i in body.get("data") or []
                     if isinstance(i, dict)]
        except (TypeError, ValueError):  # ``data`` of the wrong shape, an item without its id
            raise self._api.unreadable() from None
        return [
            AvatarInfo(id=a.avatar_id, name=a.pose_name or a.avatar_id, provider=self.name,
                       preview_url=a.normal_preview)
            for a in items if (a.status or "ACTIVE").upper() == "ACTIVE"
        ]

    async def start(self, request: StartRequest) -> ProviderSession:
        """``create_token``, ``streaming.new`` (v2), then ``streaming.start``."""
        token_body = await self._post("streaming.create_token", {})
        data = token_body.get("data")
        token = str(data.get("token") or "") if isinstance(data, dict) else ""
        # streaming.new may be called once per session token, so it is never retried.
        answer = await self._post(
            "streaming.new", self._new_body(request), retry=False,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        try:
            new = _NewSession.model_validate(answer.get("data"))
        except ValueError:
            raise self._api.unreadable() from None
        session = self._to_session(request, new, answer)
        if not (new.url and new.access_token):
            await self._stop_quietly(session)
            raise self._api.unreadable()
        try:
            await self._post("streaming.start", {"session_id": new.session_id})
        except BaseException:
            await self._stop_quietly(session)
            raise
        self._seen_open[request.session_id] = utcnow()
        self._listed_after[request.session_id] = time.monotonic()
        return session

    def _new_body(self, request: StartRequest) -> dict[str, Any]:
        # The docs name the avatar ``avatar_id``, the SDK ``avatar_name``: send both.
        body: dict[str, Any] = {
            "avatar_id": request.avatar_id, "avatar_name": request.avatar_id,
            "quality": "medium", "activity_idle_timeout": 120, "version": "v2",
            # HeyGen ends the session itself after this many seconds, so an API session never
            # outlives (nor bills past) the window we reserved credits for.
            "session_duration_limit": request.duration_s,
        }
        if request.knowledge:
            body["knowledge_base"] = request.knowledge
        if request.voice:
            body["voice"] = {"voice_id": request.voice}
        if request.language:
            body["language"] = request.language
        return body

    def _to_session(
        self, request: StartRequest, new: _NewSession, answer: dict[str, Any]
    ) -> ProviderSession:
        handle: dict[str, Any] = {"session_id": new.session_id, "transport": "livekit"}
        return ProviderSession(
            session_id=request.session_id, provider=self.name,
            provider_session_id=new.session_id,
            viewer=ViewerInfo(transport="livekit", url=new.url, token=new.access_token),
            expires_at=utcnow() + timedelta(seconds=request.duration_s), handle=handle,
            raw=answer,
        )

    async def say(self, session: ProviderSession, text: str) -> None:
        """A ``repeat`` task: the avatar speaks ``text``, so it is the avatar's line too."""
        await self._task(session, text, "repeat")
        self._echo.said(session.session_id, text)
        self.events.publish(Transcript(session_id=session.session_id, speaker="avatar", text=text))

    async def ask(self, session: ProviderSession, text: str) -> None:
        """A ``chat`` task; the answer's words arrive only through the viewer's data channel."""
        await self._task(session, text, "chat")

    async def _task(self, session: ProviderSession, text: str, task_type: str) -> None:
        await self._session_call(session, "streaming.task", {
            "session_id": _sid(session), "text": text, "task_type": task_type,
            "task_mode": "async",
        }, idempotent=False)  # a task sent twice is spoken twice

    async def interrupt(self, session: ProviderSession) -> None:
        """Stop the current speech."""
        await self._session_call(session, "streaming.interrupt", {"session_id": _sid(session)})

    async def set_context(self, session: ProviderSession, text: str) -> None:
        """HeyGen takes its knowledge base only in ``streaming.new``."""
        raise InvalidRequest(
            "HeyGen avatars take knowledge only when the session starts; start a new session "
            "with the knowledge instead."
        )

    async def keep_alive(self, session: ProviderSession) -> None:
        """Reset HeyGen's idle timer."""
        await self._session_call(session, "streaming.keep_alive", {"session_id": _sid(session)})

    async def stop(self, session: ProviderSession) -> None:
        """End the session; one that is already closed or unknown counts as stopped."""
        try:
            await self._post("streaming.stop", {"session_id": _sid(session)})
        except ProviderRejected as exc:
            if not isinstance(exc, ProviderSessionGone) and exc.status_code != 404:
                raise
        self._forget(session.session_id)

    async def _stop_quietly(self, session: ProviderSession) -> None:
        try:
            await self.stop(session)
        except ProviderError as exc:
            log.warning("could not stop a half-started HeyGen session: %r", exc)

    def _forget(self, session_id: str) -> None:
        self._seen_open.pop(session_id, None)
        self._listed_after.pop(session_id, None)
        self._echo.forget(session_id)
        for key in [k for k in self._lines if k[0] == session_id]:
            del self._lines[key]

    async def status(self, session: ProviderSession) -> VendorStatus:
        """Open while ``streaming.list`` (active sessions only) lists it; else HeyGen closed it.

        HeyGen answers for one session only through the account's whole listing, so the polls
        of all its sessions share one: a listing asked for within ``LISTING_REUSE_S`` (or still
        in flight) answers every session that started before it was asked for and has not had
        its answer yet. N sessions polled together cost one request, not N.
        """
        asked_mono, asked_wall, listed = await self._shared_listing(
            self._listed_after.get(session.session_id, float("-inf"))
        )
        self._listed_after[session.session_id] = asked_mono
        if _sid(session) in listed:
            self._seen_open[session.session_id] = asked_wall
            return VendorStatus(open=True)
        return VendorStatus(open=False, reason=_CLOSED, ended_at=self._end_time(session))

    async def _shared_listing(self, after: float) -> tuple[float, datetime, list[str]]:
        """A listing asked for after ``after`` (monotonic), reused while recent, else a new one."""
        now = time.monotonic()
        shared = self._listing
        if shared is None or shared[0] <= after or now - shared[0] > LISTING_REUSE_S:
            task = asyncio.get_running_loop().create_task(self.list_open_sessions())
            # A failed listing is not kept (the next poll asks again); its error is retrieved.
            task.add_done_callback(self._drop_failed_listing)
            shared = self._listing = (now, utcnow(), task)
        asked_mono, asked_wall, task = shared
        # Shielded: one poller cancelled does not cancel the listing the others wait for.
        return asked_mono, asked_wall, await asyncio.shield(task)

    async def aclose(self) -> None:
        """Stop a listing still in flight (its pollers are gone with the reaper)."""
        if self._listing is not None:
            await cancel_and_wait(self._listing[2])
            self._listing = None

    def _drop_failed_listing(self, task: asyncio.Task[list[str]]) -> None:
        if task.cancelled() or task.exception() is not None:
            if self._listing is not None and self._listing[2] is task:
                self._listing = None

    async def list_open_sessions(self) -> list[str]:
        """Vendor ids of the account's active sessions (``streaming.list``)."""
        body = await self._api.call("GET", f"{_V1}/streaming.list")
        data = body.get("data") or {}
        sessions = (data.get("sessions") or []) if isinstance(data, dict) else None
        if not isinstance(sessions, list):
            # The reaper lists sessions at startup: garbage must be a typed error.
            raise self._api.unreadable()
        return [str(s["session_id"]) for s in sessions if isinstance(s, dict) and "session_id" in s]

    # ------------------------------------------------------------------ viewer data
    def decode_viewer_data(self, session: ProviderSession, payload: Any) -> list[Transcript]:
        """Turn ``avatar_talking_message``/``user_talking_message`` pieces into whole lines."""
        msg = decode_json(payload)
        if not isinstance(msg, dict):
            return []
        kind = str(msg.get("type") or msg.get("event_type") or "")
        speaker: Literal["avatar", "user"] = "avatar" if kind.startswith("avatar_") else "user"
        key = (session.session_id, speaker)
        if kind in ("avatar_talking_message", "user_talking_message"):
            piece = msg.get("message")
            parts = self._lines.setdefault(key, [])
            if isinstance(piece, str) and sum(map(len, parts)) < _MAX_LINE_CHARS:
                parts.append(piece)
            return []
        if kind not in ("avatar_end_message", "user_end_message"):
            return []
        text = "".join(self._lines.pop(key, [])).strip()
        if not text or (speaker == "avatar" and self._echo.is_echo(session.session_id, text)):
            return []
        return [Transcript(session_id=session.session_id, speaker=speaker, text=text)]


def _sid(session: ProviderSession) -> str:
    return str(session.handle.get("session_id") or session.provider_session_id)


def _is_success(body: dict[str, Any]) -> bool:
    if "code" in body:
        return body["code"] in (100, 1000)
    return body.get("error") is None  # create_token: {error: null, data: {...}}


_GONE = "That HeyGen session has already ended."
_CLOSED = "HeyGen closed the stream (idle timeout, credits or an error on HeyGen's side)"
_CODES: dict[int, tuple[type[ProviderError], str]] = {
    400112: (ProviderRejected, "HeyGen refused this avatar or voice for streaming; try another."),
    10013: (ProviderRejected, "That avatar does not exist."),
    10003: (ProviderRejected, "That HeyGen avatar is too old for streaming; pick another."),
    400014: (ProviderRejected, "That HeyGen avatar is too old for streaming; pick another."),
    40001: (ProviderRejected, "HeyGen refused the request's parameters."),
    400175: (ProviderRejected, "HeyGen refused the request's parameters."),
}


def _error_for(status: int, body: dict[str, Any]) -> ProviderError | None:
    code, msg = body.get("code"), message_of(body)
    if code in (40009, 400599) or status == 401:
        return auth_error("heygen", "HeyGen", status, code)
    if "concurrent" in msg:
        return ProviderRejected(
            "heygen", "HeyGen's limit of concurrent sessions is reached; end another session "
            "or try later.", status_code=status, code=code,
        )
    if "credit" in msg or "quota" in msg:
        return ProviderRejected(
            "heygen", "The HeyGen account is out of credits; an operator must top it up.",
            status_code=status, code=code,
        )
    # also "session state wrong: closed", what an idle-closed session answers
    if "session" in msg and ("closed" in msg or "not found" in msg or "not exist" in msg):
        return ProviderSessionGone("heygen", _GONE, reason=_CLOSED, status_code=status, code=code)
    if "state wrong" in msg:  # e.g. "session state wrong: new": no viewer has connected yet
        return ProviderRejected(
            "heygen", "The HeyGen avatar is not connected yet; open the viewer link first.",
            status_code=status, code=code,
        )
    if isinstance(code, int) and code in _CODES:
        cls, text = _CODES[code]
        return cls("heygen", text, status_code=status, code=code)
    return None
