"""Settings: the only module that reads the environment.

Values come from the process environment, then ``.env``, then the defaults below. Every key is
documented in ``.env.example`` (a test keeps the two in step). Secrets are ``SecretStr`` and are
unwrapped only where they are sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    AnyUrl,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.core.errors import ConfigError
from bot.core.models import Limits, Pricing, limit_bounds
from bot.core.tenants import AdminPolicy

IdList = Annotated[list[str], NoDecode]

# docs/vendors/heygen.md "Status": raw WebRTC (v1) ended on 2025-02-28.
HEYGEN_V1_REFUSED = (
    "HeyGen's raw WebRTC (v1) streaming is no longer offered (HeyGen ended it on 2025-02-28) and "
    "avatarbot no longer speaks it. Remove HEYGEN_TRANSPORT (LiveKit is the only HeyGen "
    "transport), or better, move to LiveAvatar, where HeyGen has moved interactive avatars: get a "
    "key at app.liveavatar.com (HeyGen keys do not work there), set LIVEAVATAR_API_KEY and unset "
    "HEYGEN_API_KEY."
)


_CONCURRENT = limit_bounds("max_concurrent")
_MINUTES = limit_bounds("max_minutes")
_DAILY = limit_bounds("daily_user_credits")


def parse_shard_ids(text: str) -> list[int] | None:
    """``0-1``, ``2,3`` or ``0-3,8``: the listed shard ids in order (None for an empty text).

    Raises ValueError naming what is wrong (a part that is no number or range, a range that
    runs backwards, a shard listed twice).
    """
    ids: list[int] = []
    parts = [p.strip() for p in text.split(",")]
    if parts == [""]:
        return None
    seen: set[int] = set()  # a set: a list would make 0-99999 quadratic at start-up
    for part in parts:
        m = re.fullmatch(r"(\d{1,6})(?:\s*-\s*(\d{1,6}))?", part)
        if m is None:
            raise ValueError(
                f"{part!r} is not a shard id or range; write ids and ranges like 0-1 or 2,3"
            )
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        if last < first:
            raise ValueError(f"{part!r}: the range runs backwards (write {last}-{first})")
        for i in range(first, last + 1):
            if i in seen:
                raise ValueError(f"shard {i} is listed twice")
            seen.add(i)
            ids.append(i)
    return ids


class Settings(BaseSettings):
    """Every setting of avatarbot; the field name upper-cased is the environment variable."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        env_ignore_empty=True,
    )

    # --- process, web, database
    database_path: Path = Path("avatarbot.db")
    # PostgreSQL instead of the SQLite file (several workers on one database); may hold a password.
    database_url: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: AnyHttpUrl | None = None
    secret_key: SecretStr | None = None
    # Fernet key(s) sealing stored credentials, comma-separated, the first one writes
    # (bot/storage/secrets.py); unset: a key file next to the database, made on first use.
    storage_key: SecretStr | None = None
    # Reverse proxies whose X-Forwarded-For/-Proto or Forwarded headers are believed (CIDRs).
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- vendors
    a2e_api_key: SecretStr | None = None
    a2e_base_url: AnyHttpUrl = AnyHttpUrl("https://video.a2e.ai")
    akool_api_key: SecretStr | None = None
    akool_base_url: AnyHttpUrl = AnyHttpUrl("https://openapi.akool.com")
    heygen_api_key: SecretStr | None = None
    heygen_base_url: AnyHttpUrl = AnyHttpUrl("https://api.heygen.com")
    heygen_transport: Literal["livekit", "webrtc"] = "livekit"
    liveavatar_api_key: SecretStr | None = None
    liveavatar_base_url: AnyHttpUrl = AnyHttpUrl("https://api.liveavatar.com")
    liveavatar_sandbox: bool = False
    vendor_timeout_s: float = Field(default=15.0, gt=0, le=120)

    # --- pricing: credits per minute, billing granularity and minimum, per provider
    a2e_credits_per_minute: int = Field(default=12, ge=0)
    a2e_billing_granularity_s: int = Field(default=5, ge=1)
    a2e_billing_minimum_s: int = Field(default=5, ge=0)
    akool_credits_per_minute: int = Field(default=10, ge=0)
    akool_billing_granularity_s: int = Field(default=60, ge=1)
    akool_billing_minimum_s: int = Field(default=60, ge=0)
    heygen_credits_per_minute: int = Field(default=2, ge=0)
    heygen_billing_granularity_s: int = Field(default=1, ge=1)
    heygen_billing_minimum_s: int = Field(default=30, ge=0)
    liveavatar_credits_per_minute: int = Field(default=2, ge=0)
    liveavatar_billing_granularity_s: int = Field(default=60, ge=1)
    liveavatar_billing_minimum_s: int = Field(default=60, ge=0)
    local_credits_per_minute: int = Field(default=1, ge=0)
    local_billing_granularity_s: int = Field(default=60, ge=1)
    local_billing_minimum_s: int = Field(default=60, ge=0)

    # --- default tenant limits (admins change them per tenant)
    # (the bounds are the limits' own: ``bot.core.models.Limits``)
    default_max_concurrent: int = Field(default=2, ge=_CONCURRENT[0], le=_CONCURRENT[1])
    default_max_minutes: int = Field(default=30, ge=_MINUTES[0], le=_MINUTES[1])
    default_daily_user_credits: int = Field(default=500, ge=_DAILY[0], le=_DAILY[1])
    default_session_minutes: int = Field(default=10, ge=1, le=240)

    # --- the web playground (tenant web:playground)
    playground_enabled: bool = True
    playground_credits: int = Field(default=100, ge=_DAILY[0], le=_DAILY[1])
    playground_max_minutes: int = Field(default=5, ge=_MINUTES[0], le=_MINUTES[1])
    playground_max_concurrent: int = Field(default=2, ge=_CONCURRENT[0], le=_CONCURRENT[1])
    # Each visitor (signed cookie) and each address may run this many sessions at once.
    playground_per_visitor: int = Field(default=1, ge=1)
    playground_per_address: int = Field(default=2, ge=1)
    # A playground session whose page has been gone this long ends (the tab was closed and its
    # beacon was lost); a page that said goodbye (its beacon) gets a short grace for a reload.
    playground_heartbeat_s: float = Field(default=30.0, gt=0)
    playground_leave_grace_s: float = Field(default=5.0, ge=0)

    # --- transcripts and the viewer page
    transcript_retention_h: float = Field(default=24.0, ge=0)
    # The viewer says why and offers Retry after this long without media.
    viewer_media_timeout_s: float = Field(default=15.0, gt=0, le=300)
    # How often the server checks whether another process (the CLI) changed sessions.
    store_watch_interval_s: float = Field(default=0.5, gt=0, le=10)

    # --- session reaper
    idle_timeout_s: int = Field(default=300, ge=30)
    warn_before_end_s: int = Field(default=120, ge=0)
    reaper_interval_s: float = Field(default=5.0, gt=0, le=60)
    stop_sessions_on_shutdown: bool = True
    # --- vendor bookings (issue 16; bot/core/bookings.py)
    # Written with every booking; the orphan sweep stops only what this deployment booked.
    # Unset: one is made once and kept in the database (meta table).
    deployment_id: str | None = Field(default=None, min_length=1, max_length=64)
    # Only for a vendor account no other deployment uses: stop vendor sessions nobody booked.
    sweep_unknown_vendor_sessions: bool = False
    # Who bears what an unanswered booking may have cost (A2E cannot be asked).
    in_doubt_billed_to: Literal["operator", "tenant"] = "operator"
    # How long a shutdown waits for starts in flight before cutting them.
    shutdown_start_wait_s: float = Field(default=30.0, ge=0, le=600)

    # how many sessions a shutdown ends at the same time (each waits for its vendor's stop)
    shutdown_parallelism: int = Field(default=32, ge=1, le=1000)

    # --- several workers (docs/scale-out.md): unset, nothing changes. Redis then carries the
    # events between workers, the session leases, Slack event dedupe and the web rate limits.
    redis_url: SecretStr | None = None  # redis://[:password@]host:port/db; may hold a password
    redis_prefix: str = Field(default="avatarbot:", min_length=1, max_length=64)
    # A dead worker's sessions are taken over within this plus one reaper tick.
    lease_ttl_s: float = Field(default=10.0, ge=1, le=120)
    # How the other workers reach this one (docs/scale-out.md, "Sessions with a home"): local
    # avatars and viewer-relayed vendors forward requests to the worker holding the session.
    worker_url: AnyHttpUrl | None = None

    # --- the viewer relay (vendors reached through the page's media room: AKool)
    relay_max_wait_s: int = Field(default=120, ge=5, le=3600)

    # --- the built-in local avatar
    local_video_width: int = Field(default=640, ge=64, le=1920)
    local_video_height: int = Field(default=480, ge=64, le=1080)
    local_video_fps: int = Field(default=15, ge=1, le=60)
    # NoDecode: ``_json_list`` parses it, so that bad JSON is a ConfigError, not a traceback.
    local_ice_servers: Annotated[list[dict[str, Any]], NoDecode] = Field(default_factory=list)
    local_allow_loopback: bool = False
    # caps per process and per session (defaults: bot/providers/local/provider.py)
    local_max_sessions: int = Field(default=8, ge=1, le=1000)
    local_max_viewers: int = Field(default=30, ge=1, le=10_000)
    local_max_viewers_per_session: int = Field(default=10, ge=1, le=10_000)
    local_speech_buffer_bytes: int = Field(default=960_000, ge=96_000, le=100_000_000)
    local_max_pending_says: int = Field(default=4, ge=1, le=100)
    # TURN for viewers with per-viewer credentials minted from a shared secret (coturn's
    # use-auth-secret; docs/browser.md). Static TURN credentials are never sent to browsers.
    turn_urls: IdList = Field(default_factory=list)
    turn_shared_secret: SecretStr | None = None
    turn_ttl_s: int = Field(default=3600, ge=60, le=86400)

    # --- Discord
    discord_token: SecretStr | None = None
    discord_application_id: str | None = None
    discord_api_base: AnyHttpUrl = AnyHttpUrl("https://discord.com/api/v10")
    discord_gateway_url: AnyUrl | None = None
    discord_guild_ids: IdList = Field(default_factory=list)
    # Sharding (docs/discord-sharding.md): how many shards the bot has in all, and which of them
    # this process holds (``0-1``, ``2,3``; default: all of them). Unset: one unsharded client.
    discord_shard_count: int | None = Field(default=None, ge=1, le=100_000)
    discord_shard_ids: Annotated[list[int] | None, NoDecode] = None

    # --- Slack
    slack_signing_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    slack_admin_user_ids: IdList = Field(default_factory=list)
    # The operator: the only people who grant credits from chat (``discord:<id>``,
    # ``slack:<id>``, comma separated). SLACK_ADMIN_USER_IDS count as Slack operators too.
    operator_user_ids: IdList = Field(default_factory=list)
    # How far a server's or workspace's admins may raise its limits (the operator: further).
    tenant_max_concurrent_ceiling: int = Field(default=5, ge=_CONCURRENT[0], le=_CONCURRENT[1])
    tenant_max_minutes_ceiling: int = Field(default=60, ge=_MINUTES[0], le=_MINUTES[1])
    tenant_daily_user_credits_ceiling: int = Field(default=2000, ge=_DAILY[0], le=_DAILY[1])

    # --- an OpenAI-compatible chat endpoint for the local avatar's answers
    llm_base_url: AnyHttpUrl | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None

    @field_validator("discord_guild_ids", "slack_admin_user_ids", "operator_user_ids",
                     "turn_urls", "trusted_proxies",
                     mode="before")
    @classmethod
    def _split_ids(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("discord_shard_ids", mode="before")
    @classmethod
    def _shard_ranges(cls, v: Any) -> Any:
        if isinstance(v, str):
            return parse_shard_ids(v)
        return v

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        ids, count = self.discord_shard_ids, self.discord_shard_count
        if ids is None:
            return self
        if count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the bot's total "
                             "number of shards)")
        outside = [i for i in ids if not 0 <= i < count]
        if outside:
            raise ValueError(
                f"DISCORD_SHARD_IDS: shard {outside[0]} does not exist; with "
                f"DISCORD_SHARD_COUNT={count} the shards are 0-{count - 1}"
            )
        if len(ids) < count and self.redis_url is None:
            raise ValueError(
                "DISCORD_SHARD_IDS holds only some of the shards; the others run in other "
                "workers, which needs REDIS_URL (and one DATABASE_URL) on every worker "
                "(README, 'Running several workers')"
            )
        return self

    def discord_shards(self) -> tuple[int, list[int]] | None:
        """``(shard count, this process's shard ids)``, or None for one unsharded client."""
        if self.discord_shard_count is None:
            return None
        ids = self.discord_shard_ids
        return self.discord_shard_count, ids if ids is not None else list(
            range(self.discord_shard_count))

    @field_validator("heygen_transport")
    @classmethod
    def _no_raw_webrtc(cls, v: str) -> str:
        if v == "webrtc":
            raise ValueError(HEYGEN_V1_REFUSED)
        return v

    @field_validator("public_url")
    @classmethod
    def _no_userinfo(cls, v: AnyHttpUrl | None) -> AnyHttpUrl | None:
        # Links built on it are posted in chat and shown to every visitor.
        if v is not None and (v.username or v.password):
            raise ValueError("must not hold a user name or password")
        return v

    @field_validator("turn_urls")
    @classmethod
    def _turn_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("turn:", "turns:")) or "@" in url:
                raise ValueError(f"{url!r}: each must be a turn: or turns: URL without user info")
        return v

    @model_validator(mode="after")
    def _turn_secret(self) -> Settings:
        if self.turn_urls and self.turn_shared_secret is None:
            raise ValueError("TURN_URLS needs TURN_SHARED_SECRET (coturn's static-auth-secret)")
        return self

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:5432/dbname); "
                "for a SQLite file leave it unset and set DATABASE_PATH"
            )
        return v

    @field_validator("local_ice_servers", mode="before")
    @classmethod
    def _json_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return json.loads(v) if v.strip() else []
        return v

    # --- derived views
    @property
    def base_url(self) -> str:
        """Absolute base for links, without a trailing slash."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def advertised_url(self) -> str:
        """How the other workers reach this one: ``WORKER_URL``, else ``http://HOST:PORT``.

        A wildcard ``HOST`` gives ``127.0.0.1`` (right for workers on one host only).
        """
        if self.worker_url is not None:
            return str(self.worker_url).rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def pricing(self, provider: str) -> Pricing:
        """The configured pricing of ``provider`` (a vendor's name or ``local``)."""
        return Pricing(
            credits_per_minute=getattr(self, f"{provider}_credits_per_minute"),
            granularity_s=getattr(self, f"{provider}_billing_granularity_s"),
            minimum_s=getattr(self, f"{provider}_billing_minimum_s"),
        )

    def admin_policy(self) -> AdminPolicy:
        """Who mints credits and the ceilings of admins' limits (``bot/core/tenants.py``)."""
        operators = {i.strip() for i in self.operator_user_ids if i.strip()}
        operators |= {f"slack:{i}" for i in self.slack_admin_user_ids}
        return AdminPolicy(operators=frozenset(operators), ceilings={
            "max_concurrent": self.tenant_max_concurrent_ceiling,
            "max_minutes": self.tenant_max_minutes_ceiling,
            "daily_user_credits": self.tenant_daily_user_credits_ceiling,
        })

    def default_limits(self) -> Limits:
        """Limits of a tenant that no admin has changed."""
        return Limits(
            max_concurrent=self.default_max_concurrent,
            max_minutes=self.default_max_minutes,
            daily_user_credits=self.default_daily_user_credits,
        )

    def playground_limits(self) -> Limits:
        """Limits of the web playground tenant."""
        return Limits(
            max_concurrent=self.playground_max_concurrent,
            max_minutes=self.playground_max_minutes,
            daily_user_credits=self.playground_credits,
        )

    @property
    def slack_enabled(self) -> bool:
        """Whether enough is configured to run the Slack app."""
        has_auth = self.slack_bot_token is not None or (
            self.slack_client_id is not None and self.slack_client_secret is not None
        )
        return self.slack_signing_secret is not None and has_auth

    def secrets(self) -> list[str]:
        """Every configured secret value (for tests and log redaction)."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
        return found


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; raise one ``ConfigError`` that lists every bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]).upper() or "(settings)"
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError("Invalid configuration:\n" + "\n".join(lines)) from None
