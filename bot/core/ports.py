"""What the core needs from persistence (implemented by ``bot.storage.SqliteStore``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from bot.core.models import (
    Balance,
    ChatBinding,
    LedgerEntry,
    Limits,
    ProviderSession,
    SessionRecord,
    SessionState,
)


class SessionStore(Protocol):
    """Tenants, the ledger, sessions and chat bindings; each call is one transaction."""

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

    async def open_sessions(self) -> list[SessionRecord]:
        """Every pending, live or ending session."""
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

    async def get_or_set_meta(self, key: str, value: str) -> str:
        """A meta value, set first if missing."""
        ...

    async def verify(self) -> list[str]:
        """Every ledger mismatch."""
        ...
