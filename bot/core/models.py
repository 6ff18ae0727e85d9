"""Domain models shared by every layer: tenants, sessions, viewer info, pricing, limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.errors import InvalidRequest

PLATFORMS = ("discord", "slack", "web")


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class TenantId(BaseModel):
    """A Discord guild, a Slack team or the web playground, written ``platform:id``."""

    model_config = ConfigDict(frozen=True)

    platform: Literal["discord", "slack", "web"]
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")

    @classmethod
    def parse(cls, text: str) -> TenantId:
        """Parse ``discord:<guild id>``, ``slack:<team id>`` or ``web:playground``."""
        platform, sep, ident = text.strip().partition(":")
        if not sep or platform not in PLATFORMS or not ident:
            raise InvalidRequest(
                f"Bad tenant {text!r}: write discord:<guild id>, slack:<team id> or web:playground."
            )
        try:
            return cls(platform=platform, id=ident)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InvalidRequest(f"Bad tenant id in {text!r}.") from exc

    def __str__(self) -> str:
        return f"{self.platform}:{self.id}"


PLAYGROUND = TenantId(platform="web", id="playground")


class SessionState(StrEnum):
    """Where a session is in its life: pending -> live -> ending -> ended, or failed."""

    PENDING = "pending"
    LIVE = "live"
    ENDING = "ending"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        """Whether the session still holds a reservation or a vendor session."""
        return self in (SessionState.PENDING, SessionState.LIVE, SessionState.ENDING)


class Mode(StrEnum):
    """What a message in the session's thread does."""

    ASK = "ask"
    SAY = "say"

    @classmethod
    def parse(cls, text: str) -> Mode:
        """Parse ``ask`` or ``say`` (any case)."""
        try:
            return cls(text.strip().lower())
        except ValueError as exc:
            raise InvalidRequest(f"Mode must be ask or say, not {text!r}.") from exc


class Pricing(BaseModel):
    """How a provider's use turns into credits.

    Use is rounded up to ``granularity_s``, never below ``minimum_s``, then charged at
    ``credits_per_minute`` and rounded up to a whole credit.
    """

    model_config = ConfigDict(frozen=True)

    credits_per_minute: int = Field(ge=0)
    granularity_s: int = Field(default=1, ge=1)
    minimum_s: int = Field(default=0, ge=0)

    def billed_seconds(self, used_s: float) -> int:
        """Seconds billed for ``used_s`` seconds of use."""
        used = max(0.0, used_s)
        rounded = math.ceil(used / self.granularity_s - 1e-9) * self.granularity_s
        return max(rounded, self.minimum_s)

    def cost(self, used_s: float) -> int:
        """Credits owed for ``used_s`` seconds of use."""
        return math.ceil(self.billed_seconds(used_s) * self.credits_per_minute / 60 - 1e-9)


class Capabilities(BaseModel):
    """What a provider supports and how its sessions are watched and billed."""

    model_config = ConfigDict(frozen=True)

    say: bool = True
    ask: bool = True
    interrupt: bool = True
    set_context: bool = True
    keep_alive_interval_s: int | None = None
    transport: Literal["webrtc", "agora", "livekit"]
    # "server": we call the vendor; "viewer": commands travel through the page's RTC data channel.
    control: Literal["server", "viewer"] = "server"
    max_duration_s: int = 3600
    multi_viewer: bool = False
    lists_sessions: bool = False
    # Whether a live session outlives a restart of our process (vendor sessions do; the
    # local avatar, which runs inside the process, does not).
    survives_restart: bool = True
    # How often the reaper may ask the vendor whether a live session is still open (the
    # ``SessionStatusSource`` capability); ``None``: the vendor is not asked.
    status_interval_s: float | None = None
    pricing: Pricing
    # The longest text one say/ask may carry, and the longest knowledge text, in characters.
    # The service refuses longer text for this provider; the chat options and pages read these.
    max_text_chars: int = Field(default=2000, ge=1)
    max_knowledge_chars: int = Field(default=20_000, ge=0)


class VendorStatus(BaseModel):
    """What a vendor says about one of its sessions.

    ``ended_at`` is when the vendor ended it (credits settle there); ``None`` means "when we
    asked". ``reason`` is plain words for the thread.
    """

    model_config = ConfigDict(frozen=True)

    open: bool
    reason: str | None = None
    ended_at: datetime | None = None


class AvatarInfo(BaseModel):
    """One avatar a provider offers."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    provider: str
    preview_url: str | None = None
    description: str = ""


class ViewerInfo(BaseModel):
    """What a viewer page needs to join the media. Never a vendor API key."""

    transport: Literal["webrtc", "agora", "livekit"]
    # agora
    app_id: str | None = None
    channel: str | None = None
    token: str | None = None
    uid: int | str | None = None
    # livekit
    url: str | None = None
    # webrtc: the offer comes from our signalling endpoint; ICE servers for the browser.
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)

    def __repr__(self) -> str:
        return f"ViewerInfo(transport={self.transport!r}, channel={self.channel!r})"


class StartRequest(BaseModel):
    """What the session service asks a provider to start."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    avatar_id: str
    duration_s: int = Field(gt=0)
    mode: Mode = Mode.ASK
    knowledge: str | None = None
    language: str | None = None
    voice: str | None = None


class ProviderSession(BaseModel):
    """A vendor session as the core sees it.

    ``handle`` holds what the adapter needs to act on the session later (vendor ids, not keys);
    it is persisted so that a restarted process can still stop the session. ``raw`` is the
    vendor's answer, kept for debugging but never dumped or logged.
    """

    session_id: str
    provider: str
    provider_session_id: str
    viewer: ViewerInfo
    expires_at: datetime
    handle: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)


class Limits(BaseModel):
    """A tenant's limits. ``None`` in a stored row means "the default from settings".

    The numeric fields carry their bounds; ``limit_bounds`` reads them for the chat platforms'
    option ranges and argument checks, so every surface refuses the same values.
    """

    max_concurrent: int = Field(default=2, ge=0, le=50)
    max_minutes: int = Field(default=30, ge=1, le=240)
    daily_user_credits: int = Field(default=500, ge=0, le=1_000_000)
    allowed_roles: list[str] = Field(default_factory=list)
    allowed_users: list[str] = Field(default_factory=list)

    @field_validator("allowed_roles", "allowed_users")
    @classmethod
    def _strip(cls, v: list[str]) -> list[str]:
        return sorted({s.strip() for s in v if s.strip()})


NUMERIC_LIMITS = ("max_concurrent", "max_minutes", "daily_user_credits")


def limit_bounds(name: str) -> tuple[int, int]:
    """The ``(lowest, highest)`` value a numeric limit may take, from ``Limits``' fields."""
    low, high = None, None
    for rule in Limits.model_fields[name].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    if low is None or high is None:
        raise KeyError(f"{name} is not a bounded limit")
    return int(low), int(high)


class Balance(BaseModel):
    """A tenant's account, derived from its ledger entries."""

    granted: int = 0
    settled: int = 0
    pending: int = 0

    @property
    def available(self) -> int:
        """Credits that a new reservation may use."""
        return self.granted - self.settled - self.pending


class LedgerEntry(BaseModel):
    """One append-only ledger row."""

    id: int
    tenant: str
    kind: Literal["grant", "reserve", "settle", "release"]
    amount: int
    session_id: str | None
    actor: str | None
    note: str | None
    created_at: datetime


class SessionRecord(BaseModel):
    """A persisted session row."""

    id: str
    tenant: str
    provider: str
    avatar_id: str
    avatar_name: str
    mode: Mode
    state: SessionState
    requested_s: int
    reserved: int
    started_by: str
    created_at: datetime
    started_at: datetime | None = None
    expires_at: datetime | None = None
    ending_at: datetime | None = None
    ended_at: datetime | None = None
    last_activity_at: datetime
    provider_session_id: str | None = None
    handle: dict[str, Any] = Field(default_factory=dict)
    viewer: ViewerInfo | None = None
    knowledge: str | None = None
    settled: int | None = None
    end_reason: str | None = None
    failure_reason: str | None = None
    stop_attempts: int = 0
    next_stop_at: datetime | None = None

    @property
    def vendor_stopped(self) -> bool:
        """Whether the vendor confirmed the stop (a session ends only once it has)."""
        return self.state is SessionState.ENDED

    def provider_session(self) -> ProviderSession | None:
        """Rebuild the provider's view of this session, when the vendor started it."""
        if self.provider_session_id is None or self.viewer is None or self.expires_at is None:
            return None
        return ProviderSession(
            session_id=self.id,
            provider=self.provider,
            provider_session_id=self.provider_session_id,
            viewer=self.viewer,
            expires_at=self.expires_at,
            handle=self.handle,
        )

    def seconds_left(self, now: datetime | None = None) -> int:
        """Whole seconds until expiry (0 when not live)."""
        if self.expires_at is None or self.state is not SessionState.LIVE:
            return 0
        return max(0, int((self.expires_at - (now or utcnow())).total_seconds()))


class SessionSummary(BaseModel):
    """What is told when a session ends."""

    session_id: str
    tenant: str
    provider: str
    avatar_name: str
    state: SessionState
    duration_s: int
    reserved: int
    settled: int
    released: int
    reason: str


class TranscriptLine(BaseModel):
    """One kept line of a session's transcript (kept for ``TRANSCRIPT_RETENTION_H``)."""

    session_id: str
    at: float
    speaker: Literal["user", "avatar", "system"]
    text: str
    author: str | None = None
    intent: str | None = None


class ChatBinding(BaseModel):
    """Where a session lives in a chat platform: the channel and thread its messages use."""

    session_id: str
    platform: Literal["discord", "slack", "web"]
    channel_id: str
    thread_id: str
    message_id: str | None = None
    # Slack Enterprise Grid: the org the thread's workspace belongs to (its token is stored under
    # (enterprise id, team id)); None elsewhere.
    enterprise_id: str | None = None


class ComponentStatus(BaseModel):
    """Whether a platform or provider is on, and why (for the startup banner and home page)."""

    name: str
    kind: Literal["platform", "provider", "web"]
    enabled: bool
    detail: str
