"""What the core and the adapters need from persistence.

Implemented in ``bot/storage``: ``SqliteStore`` and ``SqliteSlackInstallStore`` (the default),
``PostgresStore`` and ``PostgresSlackInstallStore`` (``DATABASE_URL``); SQL lives only there.
The composition root (``bot/app.py``) picks one; ``tests/core/test_sql_layer.py`` fails while a
method here is missing from either backend. ``SecretsStore`` (the sealed credentials of
docs/secrets.md) is implemented by both session stores, so the key check, the sealing of old plain
rows, the link secret and rotation work the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from bot.core.bookings import BilledTo, Booking, BookingState
from bot.core.models import (
    Balance,
    ChatBinding,
    LedgerEntry,
    Limits,
    ProviderSession,
    SessionRecord,
    SessionState,
    TranscriptLine,
)


class SessionStore(Protocol):
    """Tenants, the ledger, sessions and chat bindings; each call is one transaction.

    SQL lives only in ``bot/storage``; nothing else runs statements or holds a connection. A
    second backend is an added module there implementing this protocol (and
    ``SlackInstallStore``), wired in ``bot/app.py``. The 48 methods, plus
    ``note_activity`` (not awaited):

    Tenants and limits
        - ``ensure_tenant``: create the tenant if new.
        - ``tenant_exists``: whether the tenant has been seen.
        - ``tenant_active``: whether the tenant may start sessions (not removed or uninstalled).
        - ``get_limits``: the tenant's limits, defaults filled in.
        - ``set_limits``: change some limits (``None`` restores a default).
        - ``set_tenant_active``: activate or deactivate a tenant (uninstalled workspace).
        - ``default_avatar``: the tenant's chosen default avatar, if any.
        - ``set_default_avatar``: choose or forget the default avatar.

    Ledger
        - ``grant``: credit the tenant (creating it if new).
        - ``grant_once``: ``grant`` at most once per platform request id (replays grant nothing).
        - ``balance``: granted, settled and pending credits.
        - ``history``: the newest ledger entries first.
        - ``user_spent_today``: credits one person reserved or used today (UTC).

    Sessions
        - ``open_session``: check the start rules, insert a pending session, reserve its cost.
        - ``mark_live``: pending -> live with the vendor's session.
        - ``fail_session``: open -> failed, releasing the whole reservation.
        - ``begin_end``: pending/live -> ending.
        - ``finish_session``: ending -> ended, settling and releasing.
        - ``schedule_stop_retry``: count a failed vendor stop and when to retry.
        - ``update_session``: set plain fields (mode, knowledge, activity, avatar name).
        - ``set_session_fields``: the same without reading the row back.
        - ``note_activity``: remember people used a session (stored in batches, read at once).
        - ``flush_activity``: store the noted activity times now.
        - ``get_session``: one session or ``SessionNotFound``.
        - ``list_sessions``: sessions newest first, by tenant and state.
        - ``open_sessions``: every pending, live or ending session (of one tenant).
        - ``open_sessions_in``: a tenant's open sessions bound to one platform channel.
        - ``open_states``: the state of every open session, by id.
        - ``open_session_ids``: open sessions' ids in id order, a page at a time.

    Chat bindings
        - ``bind_chat``: bind a platform thread to a session.
        - ``binding_for_thread``: the binding of a thread.
        - ``bindings_for_session``: every thread bound to a session.

    Transcripts (kept ``TRANSCRIPT_RETENTION_H`` hours)
        - ``add_transcript_line``: keep one final line of a session.
        - ``add_transcript_lines``: keep several lines in one transaction (the service's batches).
        - ``transcript``: a session's kept lines, oldest first.
        - ``prune_transcripts``: forget lines older than a time.

    Vendor bookings (``bot/core/bookings.py``)
        - ``record_booking_intent``: write the intent to book, before the vendor call.
        - ``record_booking_answer``: write the vendor's answer the moment it arrives.
        - ``resolve_booking``: an intent refused, or what it booked released.
        - ``mark_booking_in_doubt``: no answer and no way to ask: close the session, bill the
          likely charge to the operator's ledger or to the tenant.
        - ``get_booking``: the booking of a session.
        - ``list_bookings``: bookings by state, oldest first.
        - ``deployment_vendor_ids``: vendor ids one deployment booked at a provider.
        - ``operator_charges``: the sum of the operator's ledger.

    Process state and checks
        - ``data_version``: a number that changes when another process commits.
        - ``ping``: raise unless the store answers a trivial statement.
        - ``remember_request``: record a signed request; False when it is a replay.
        - ``get_or_set_meta``: a stored value, set first if missing (the playground top-up, the
          deployment id).
        - ``verify``: every mismatch between the ledger entries and the cached balances.

    Both backends' stores also implement ``SecretsStore`` (the sealed credentials).
    """

    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if new."""
        ...

    async def tenant_exists(self, tenant: str) -> bool:
        """Whether the tenant exists."""
        ...

    async def tenant_active(self, tenant: str) -> bool:
        """Whether the tenant may start sessions (an unknown tenant may)."""
        ...

    async def get_limits(self, tenant: str) -> Limits:
        """The tenant's limits."""
        ...

    async def set_limits(self, tenant: str, **changes: Any) -> Limits:
        """Change some limits."""
        ...

    async def set_tenant_active(self, tenant: str, active: bool) -> None:
        """Activate or deactivate a tenant."""
        ...

    async def default_avatar(self, tenant: str) -> str | None:
        """The tenant's chosen default avatar, if any."""
        ...

    async def set_default_avatar(self, tenant: str, avatar: str | None) -> None:
        """Choose or forget the tenant's default avatar."""
        ...

    async def grant(self, tenant: str, amount: int, actor: str, note: str | None = None) -> Balance:
        """Credit the tenant."""
        ...

    async def grant_once(
        self, request_id: str, tenant: str, amount: int, actor: str
    ) -> tuple[Balance, bool]:
        """Grant once per request id; ``(balance, granted_now)``."""
        ...

    async def balance(self, tenant: str) -> Balance:
        """The tenant's balance."""
        ...

    async def history(self, tenant: str, limit: int = 50) -> list[LedgerEntry]:
        """Newest ledger entries first."""
        ...

    async def user_spent_today(self, tenant: str, user: str) -> int:
        """Credits a user reserved or used today."""
        ...

    async def open_session(self, record: SessionRecord, roles: Iterable[str] = ()) -> SessionRecord:
        """Insert a pending session with its reservation, or raise a typed refusal."""
        ...

    async def mark_live(self, session_id: str, ps: ProviderSession) -> SessionRecord:
        """Pending -> live."""
        ...

    async def fail_session(
        self, session_id: str, reason: str, *, pending_only: bool = False
    ) -> SessionRecord:
        """Open (or, with ``pending_only``, only pending) -> failed, releasing the reservation."""
        ...

    async def begin_end(self, session_id: str, reason: str, at: datetime) -> SessionRecord:
        """Pending/live -> ending."""
        ...

    async def finish_session(self, session_id: str, settle: int) -> SessionRecord:
        """Ending -> ended: settle and release."""
        ...

    async def schedule_stop_retry(self, session_id: str, next_at: datetime) -> SessionRecord:
        """Record a failed vendor stop."""
        ...

    async def update_session(self, session_id: str, **fields: Any) -> SessionRecord:
        """Set plain fields."""
        ...

    async def set_session_fields(self, session_id: str, **fields: Any) -> None:
        """Set plain fields; nothing is read back."""
        ...

    def note_activity(self, session_id: str, at: datetime) -> None:
        """Remember activity; every read sees it at once, the write comes batched."""
        ...

    async def flush_activity(self) -> None:
        """Store the noted activity times now."""
        ...

    async def get_session(self, session_id: str) -> SessionRecord:
        """One session or ``SessionNotFound``."""
        ...

    async def list_sessions(
        self,
        tenant: str | None = None,
        states: Iterable[SessionState] | None = None,
        limit: int = 50,
    ) -> list[SessionRecord]:
        """Sessions, newest first."""
        ...

    async def open_sessions(self, tenant: str | None = None) -> list[SessionRecord]:
        """Every pending, live or ending session (of one tenant)."""
        ...

    async def open_sessions_in(
        self, tenant: str, platform: str, channel_id: str
    ) -> list[SessionRecord]:
        """A tenant's open sessions bound to one platform channel, newest first."""
        ...

    async def open_states(self) -> dict[str, SessionState]:
        """Every open session's state by id."""
        ...

    async def open_session_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` open sessions' ids greater than ``after``, in id order.

        A page at a time, so reading every open session never holds the event loop for long.
        """
        ...

    async def ping(self) -> None:
        """Raise unless the store answers."""
        ...

    async def bind_chat(self, binding: ChatBinding) -> None:
        """Bind a platform thread to a session."""
        ...

    async def binding_for_thread(self, platform: str, thread_id: str) -> ChatBinding | None:
        """The binding of a thread."""
        ...

    async def bindings_for_session(self, session_id: str) -> list[ChatBinding]:
        """The bindings of a session."""
        ...

    async def add_transcript_line(self, line: TranscriptLine) -> None:
        """Keep one final transcript line."""
        ...

    async def add_transcript_lines(self, lines: Sequence[TranscriptLine]) -> None:
        """Keep several final transcript lines in one transaction, in order."""
        ...

    async def transcript(self, session_id: str, limit: int = 1000) -> list[TranscriptLine]:
        """A session's kept lines, oldest first."""
        ...

    async def prune_transcripts(self, before: float) -> int:
        """Forget lines older than ``before`` (epoch seconds); how many went."""
        ...

    async def record_booking_intent(
        self, session_id: str, deployment_id: str, provider: str, tenant: str
    ) -> None:
        """Write the intent to book."""
        ...

    async def record_booking_answer(self, session_id: str, ps: ProviderSession) -> None:
        """Write the vendor's answer."""
        ...

    async def resolve_booking(self, session_id: str, state: BookingState, note: str) -> None:
        """Mark a booking refused or released."""
        ...

    async def mark_booking_in_doubt(
        self, session_id: str, charge: int, billed_to: BilledTo, note: str
    ) -> None:
        """Record an unanswered booking as in doubt."""
        ...

    async def get_booking(self, session_id: str) -> Booking | None:
        """The booking of a session."""
        ...

    async def list_bookings(self, states: tuple[BookingState, ...]) -> list[Booking]:
        """Bookings by state."""
        ...

    async def deployment_vendor_ids(self, provider: str, deployment_id: str) -> set[str]:
        """Vendor ids one deployment booked."""
        ...

    async def operator_charges(self) -> int:
        """The operator's ledger sum."""
        ...

    async def remember_request(self, key: str, window_s: float) -> bool:
        """Record a signed request; False when seen within ``window_s``."""
        ...

    async def data_version(self) -> int:
        """Changes when another process commits to the store."""
        ...

    async def get_or_set_meta(self, key: str, value: str) -> str:
        """A meta value, set first if missing."""
        ...

    async def verify(self) -> list[str]:
        """Every ledger mismatch."""
        ...


class SlackInstallStore(Protocol):
    """Slack's OAuth installations, OAuth ``state`` values and handled Events API ids.

    Rows are kept per Slack app (``client_id``) and workspace key (``enterprise_id``,
    ``team_id``, ``user_id``; an absent id is stored as ``''``). ``data`` is slack-sdk's own
    ``Installation``/``Bot`` fields as a JSON object, so the SDK's types stay in the platform
    adapter. Each call is one transaction.
    """

    async def save_installation(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        data: dict[str, Any],
        installed_at: float,
        activate_tenant: str | None = None,
    ) -> None:
        """Insert or replace one user's installation; create and (re)activate a tenant with it."""
        ...

    async def save_bot(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        data: dict[str, Any],
        installed_at: float,
    ) -> None:
        """Insert or replace the workspace's bot installation."""
        ...

    async def find_bot(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool = False,
    ) -> dict[str, Any] | None:
        """The bot row's data (an org-wide install is looked up with team ``''``)."""
        ...

    async def find_installation(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool = False,
    ) -> dict[str, Any] | None:
        """The user's installation data, or the workspace's newest when ``user_id`` is None."""
        ...

    async def delete_bot(
        self, client_id: str, *, enterprise_id: str | None, team_id: str | None
    ) -> None:
        """Forget the workspace's bot installation."""
        ...

    async def delete_installations(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
    ) -> None:
        """Forget one user's installation, or all of the workspace's when ``user_id`` is None."""
        ...

    async def issue_oauth_state(self, state: str, expires_in_s: float) -> None:
        """Record a new OAuth state valid for ``expires_in_s`` (expired ones are dropped)."""
        ...

    async def consume_oauth_state(self, state: str) -> bool:
        """Whether the state was issued and has not expired; it is used up either way."""
        ...

    async def remember_event(self, event_id: str, team_id: str | None) -> bool:
        """Record an Events API delivery; False when this event id was seen before."""
        ...

    async def aclose(self) -> None:
        """Store what is still held in memory (seen event ids); called before the store closes."""
        ...


class CredentialBox(Protocol):
    """What a store needs of the key that seals stored credentials.

    That is ``SecretBox`` (``bot/storage/secrets.py``): a sealed value is ``fernet:<token>``; an
    older plain one passes through ``open`` as it is.
    """

    #: how the key is named in messages (``STORAGE_KEY`` or the key file's path), never the key
    source: str

    def has_key(self) -> bool:
        """Whether a key exists yet (without making one)."""
        ...

    def seal(self, plain: str) -> str:
        """``plain`` sealed with the current key (making the key file on first use)."""
        ...

    def open(self, stored: str) -> str:
        """The plain value of a stored one; ``WrongStorageKey`` when no key opens it."""
        ...

    def reseal(self, stored: str) -> str:
        """``stored`` (sealed or plain) sealed again with the current key."""
        ...


class SecretsStore(Protocol):
    """The credentials a store keeps sealed (docs/secrets.md), whichever database holds them.

    Sealed: the Slack installation and bot rows' ``data`` (their tokens) and the generated
    viewer-link secret; a known check value sealed with the key finds a wrong key at startup.
    Each call is one transaction. The 4 methods:

    - ``check_storage_key``: open the check value (``WrongStorageKey`` if the key is not the
      one the database was sealed with); write it if a key exists and there is none yet.
    - ``seal_plain_secrets``: seal the credential rows still in plain text; how many.
    - ``link_secret``: the stored viewer-link secret, storing ``fresh`` (sealed) if there is none.
    - ``reseal_secrets``: seal every stored credential again with the box's current key; how many.
    """

    async def check_storage_key(self, box: CredentialBox) -> None:
        """Open (or first write) the check value; ``WrongStorageKey`` for a wrong key."""
        ...

    async def seal_plain_secrets(self, box: CredentialBox) -> int:
        """Seal credentials stored in plain text (from before encryption); how many."""
        ...

    async def link_secret(self, box: CredentialBox, fresh: str) -> str:
        """The stored link secret (plain), storing ``fresh`` sealed if there is none."""
        ...

    async def reseal_secrets(self, box: CredentialBox) -> int:
        """Seal every stored credential again with the current key; how many."""
        ...
