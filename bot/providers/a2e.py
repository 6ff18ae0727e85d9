"""A2E streaming avatars: REST control, Agora media, answers as Agora data messages.

Wire facts (``docs/vendors/a2e.md``): base ``https://video.a2e.ai``, ``Authorization:
Bearer <key>``, envelope ``{code: 0, data, trace_id}`` and errors as a non-zero ``code`` with a
``msg`` (often HTTP 200). Coins are pre-charged for ``expire_seconds`` and refunded on ``leave``,
so ``leave`` must always be called. A2E documents no interrupt and no session listing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
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
    Pricing,
    ProviderSession,
    StartRequest,
    VendorStatus,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import ProviderBase
from bot.core.retry import RetryPolicy
from bot.providers._http import VendorHTTP, auth_error, decode_json, message_of

log = logging.getLogger(__name__)

_API = "/api/v1/streaming-avatar"
MAX_KNOWLEDGE_CHARS = 5000  # set-qa-context refuses longer text [A2E-qa]
# The room is "released after" the token's expiry [A2E-tok]; an expiry this much before our
# own end of the session means A2E gave a shorter window than we asked for.
EXPIRY_SLACK_S = 5.0
_MAX_ANSWER_CHARS = 20_000


class _Token(BaseModel):
    """``agora-token`` answer ``data``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    token: str
    app_id: str = Field(alias="appId")
    channel: str
    uid: int | str
    # A number in the docs' sample [A2E-tok]; anything else is ignored, not a failed start.
    expire_epoch_timestamp: Any = None


class _Avatar(BaseModel):
    """One ``all_avatars`` item; only ``_id`` and ``name`` are known fields."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str = Field(alias="_id")
    name: str = ""
    video_cover: str | None = None


class A2EProvider(ProviderBase):
    """A2E avatars over Agora; say/ask/knowledge go over REST keyed by the Agora channel."""

    name = "a2e"
    display_name = "A2E"

    def __init__(
        self,
        *,
        api_key: SecretStr,
        http: httpx.AsyncClient,
        events: EventHub,
        pricing: Pricing,
        base_url: str = "https://video.a2e.ai",
        timeout_s: float = 15.0,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
    ) -> None:
        self.events = events
        self.capabilities = Capabilities(
            transport="agora", control="server", interrupt=False, pricing=pricing,
            max_duration_s=3600, max_text_chars=2000, max_knowledge_chars=MAX_KNOWLEDGE_CHARS,
        )
        self._api = VendorHTTP(
            provider=self.name, display_name=self.display_name, http=http, base_url=base_url,
            headers={"Authorization": f"Bearer {api_key.get_secret_value()}"},
            is_success=lambda body: body.get("code") == 0,
            error_for=_error_for, timeout_s=timeout_s, retry=retry,
        )
        # A QA answer arrives in pieces (pos start/middle/end); pieces wait here per session.
        self._answers: dict[str, list[str]] = {}

    async def list_avatars(self) -> list[AvatarInfo]:
        """Return the account's streaming avatars."""
        body = await self._api.call("GET", f"{_API}/all_avatars")
        try:
            items = body.get("data") or []
            avatars = [_Avatar.model_validate(item) for item in items if isinstance(item, dict)]
        except (TypeError, ValueError):  # ``data`` of the wrong shape, an item without ``_id``
            raise self._api.unreadable() from None
        return [
            AvatarInfo(id=a.id, name=a.name or a.id, provider=self.name, preview_url=a.video_cover)
            for a in avatars
        ]

    async def start(self, request: StartRequest) -> ProviderSession:
        """Book an Agora room for ``duration_s`` (A2E charges the whole window up front)."""
        _check_knowledge(request.knowledge or "")
        body = await self._api.call(
            "POST", f"{_API}/agora-token",
            json_body={"avatar_id": request.avatar_id, "expire_seconds": request.duration_s},
            # Retried only after a definite refusal: A2E books (and charges) the room before it
            # answers and offers no way to ask whether an attempt booked one, so a retry after a
            # timeout or a 5xx could book a second room (bot/core/bookings.py).
            retry_if=booked_nothing,
        )
        try:
            tok = _Token.model_validate(body.get("data"))
        except ValueError:
            raise self._api.unreadable() from None
        session = ProviderSession(
            session_id=request.session_id, provider=self.name, provider_session_id=tok.channel,
            viewer=ViewerInfo(
                transport="agora", app_id=tok.app_id, channel=tok.channel, token=tok.token,
                uid=tok.uid,
            ),
            expires_at=utcnow() + timedelta(seconds=request.duration_s),
            handle={"channel": tok.channel, "expire_epoch": _epoch(tok.expire_epoch_timestamp)},
            raw=body,
        )
        if request.knowledge:
            await self._knowledge_or_leave(session, request.knowledge)
        return session

    async def _knowledge_or_leave(self, session: ProviderSession, text: str) -> None:
        try:
            await self.set_context(session, text)
        except BaseException:
            await self._leave_quietly(session)
            raise

    async def say(self, session: ProviderSession, text: str) -> None:
        """Speak ``text`` verbatim; the words are known, so they go out as the avatar's line."""
        await self._post("speak", session, text)
        self.events.publish(Transcript(session_id=session.session_id, speaker="avatar", text=text))

    async def ask(self, session: ProviderSession, text: str) -> None:
        """Ask a question; the answer text arrives through the viewer (``decode_viewer_data``)."""
        await self._post("ask", session, text)

    async def interrupt(self, session: ProviderSession) -> None:
        """A2E has no interrupt endpoint."""
        raise InvalidRequest("A2E avatars cannot be interrupted: A2E offers no way to stop speech.")

    async def set_context(self, session: ProviderSession, text: str) -> None:
        """Replace the QA context (at most 5,000 characters)."""
        _check_knowledge(text)
        await self._post("set-qa-context", session, text)

    async def stop(self, session: ProviderSession) -> None:
        """Leave the room, which ends billing. Leaving a closed or unknown room succeeds."""
        try:
            await self._api.call(
                "POST", f"{_API}/leave", json_body={"channel": _channel(session)}
            )
        except ProviderRejected as exc:
            if not _is_gone(exc):
                raise
        self._answers.pop(session.session_id, None)

    async def _leave_quietly(self, session: ProviderSession) -> None:
        try:
            await self.stop(session)
        except ProviderError as exc:
            log.warning("could not leave A2E room after a failed start: %r", exc)

    async def _post(self, action: str, session: ProviderSession, text: str) -> None:
        try:
            await self._api.call(
                "POST", f"{_API}/{action}", json_body={"channel": _channel(session), "text": text},
                # speak/ask make the avatar talk: never sent twice (set-qa-context replaces)
                idempotent=action == "set-qa-context",
            )
        except ProviderSessionGone as exc:
            # A2E released the room: at its token's expiry if that has passed, else just now.
            expiry = _vendor_expiry(session)
            if expiry is not None and expiry <= utcnow():
                exc.ended_at, exc.reason = expiry, _EXPIRED
            raise

    def planned_end(self, session: ProviderSession) -> VendorStatus | None:
        """The room's release at the token's expiry, if A2E set it before our own end.

        A2E releases the room at ``expire_epoch_timestamp`` [A2E-tok] and has no call that says
        whether a room is still open; a room gone earlier shows on the next ``ask``/``speak``.
        Known from the start, so the reaper files it in its index and asks nothing before.
        """
        expiry = _vendor_expiry(session)
        if expiry is None or expiry >= session.expires_at - timedelta(seconds=EXPIRY_SLACK_S):
            return None  # no end of A2E's own, or ours comes first: "time is up"
        return VendorStatus(open=False, reason=_EXPIRED, ended_at=expiry)

    def decode_viewer_data(self, session: ProviderSession, payload: Any) -> list[Transcript]:
        """Turn Agora ``{type: "QA", message, pos}`` messages into the avatar's answer lines.

        Pieces marked ``start``/``middle`` give a growing, non-final line; ``end`` (or no ``pos``)
        completes it.
        """
        msg = decode_json(payload)
        if not isinstance(msg, dict) or msg.get("type") != "QA":
            return []
        piece = msg.get("message")
        if not isinstance(piece, str):
            return []
        parts = self._answers.setdefault(session.session_id, [])
        if sum(map(len, parts)) < _MAX_ANSWER_CHARS:
            parts.append(piece)
        text = "".join(parts)
        final = msg.get("pos") not in ("start", "middle")
        if final:
            del self._answers[session.session_id]
        if not text.strip():
            return []
        return [Transcript(session_id=session.session_id, speaker="avatar", text=text, final=final)]


def _check_knowledge(text: str) -> None:
    if len(text) > MAX_KNOWLEDGE_CHARS:
        raise InvalidRequest(
            f"A2E takes at most {MAX_KNOWLEDGE_CHARS:,} characters of knowledge; "
            f"this text has {len(text):,}. Shorten it and try again."
        )


def _channel(session: ProviderSession) -> str:
    # The handle may be empty (an orphan rebuilt from the vendor id alone).
    return str(session.handle.get("channel") or session.provider_session_id)


_GONE = "That A2E session has already ended."
_EXPIRED = "A2E released the avatar's room: its booked time ran out"
_CLOSED = "A2E closed the avatar's room"


def _epoch(value: Any) -> float | None:
    """A plausible epoch timestamp (seconds) or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        epoch = float(value)
        datetime.fromtimestamp(epoch, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return epoch if epoch > 0 else None


def _vendor_expiry(session: ProviderSession) -> datetime | None:
    epoch = _epoch(session.handle.get("expire_epoch"))
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


def _is_gone(exc: ProviderError) -> bool:
    return isinstance(exc, ProviderSessionGone) or exc.status_code == 404


def _error_for(status: int, body: dict[str, Any]) -> ProviderError | None:
    code = body.get("code")
    msg = message_of(body)
    if not body or code == 0:
        return None
    if status in (401, 403) or ("token" in msg and ("invalid" in msg or "expired" in msg)):
        return auth_error("a2e", "A2E", status, code)
    if "occupied" in msg or "busy" in msg:
        return ProviderUnavailable(
            "a2e", "A2E has no free capacity right now; try again in a minute.",
            status_code=status, code=code,
        )
    if "coin" in msg or "credit" in msg or "balance" in msg:
        return ProviderRejected(
            "a2e", "The A2E account is out of coins; an operator must top it up.",
            status_code=status, code=code,
        )
    if "avatar" in msg and ("not" in msg or "invalid" in msg):
        return ProviderRejected("a2e", "That avatar does not exist.", status_code=status, code=code)
    if "channel" in msg and ("not" in msg or "left" in msg or "closed" in msg):
        return ProviderSessionGone("a2e", _GONE, reason=_CLOSED, status_code=status, code=code)
    return None
