"""Small services beside ``SessionService``: a tenant's settings and credits, and chat bindings.

The chat platforms and the web layer reach persistence only through ``SessionService`` and
these two, never through the store itself (``tests/core/test_architecture.py`` holds that).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bot.core.errors import InvalidRequest, NotAllowed
from bot.core.models import NUMERIC_LIMITS, Balance, ChatBinding, Limits, TenantId, limit_bounds
from bot.core.ports import SessionStore

TenantKey = TenantId | str
# Thread bindings remembered by ``ChatBindings`` (a live session has one thread per platform).
BINDINGS_REMEMBERED = 10_000


class CreditsReport(BaseModel):
    """What ``/avatar credits`` shows."""

    tenant: str
    balance: Balance
    used_today_by_user: int
    daily_user_credits: int


class AdminPolicy(BaseModel):
    """Who may mint credits and how far a tenant's admins may raise its limits (issue 16).

    The one rule set of every chat platform: only the operator (``OPERATOR_USER_IDS``, ids as
    ``discord:<user>``/``slack:<user>``) grants credits, since every tenant spends the
    operator's vendor accounts; a server or workspace admin sets limits only up to the
    operator's ceilings (``TENANT_*_CEILING``), the operator up to the limits' own bounds.
    """

    operators: frozenset[str] = frozenset()
    ceilings: dict[str, int] = {}

    def is_operator(self, actor: TenantKey) -> bool:
        """Whether ``actor`` (``platform:user``) is one of the operators."""
        return str(actor) in self.operators

    def check(self, actor: TenantKey, *, grant: int | None = None,
              limits: dict[str, Any] | None = None) -> None:
        """Raise ``NotAllowed``/``InvalidRequest`` unless ``actor`` may make these changes."""
        operator = self.is_operator(actor)
        if grant is not None and not operator:
            raise NotAllowed(
                "Only the bot's operator grants credits (every server spends the operator's "
                "vendor accounts). Ask the operator to add credits."
            )
        for key, value in (limits or {}).items():
            if key not in NUMERIC_LIMITS or value is None:
                continue
            low, high = limit_bounds(key)
            ceiling = high if operator else min(high, self.ceilings.get(key, high))
            if not low <= value <= ceiling:
                raise InvalidRequest(
                    f"{key} goes from {low} to {ceiling:,} here"
                    + ("" if operator else " (the ceiling the bot's operator set)") + "."
                )


class TenantService:
    """Admin settings and credits of a tenant (a Discord server, a Slack workspace, the playground).

    Args:
        store: persistence for tenants and the ledger.
    """

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def activate(self, tenant: TenantKey) -> None:
        """The platform says the bot is installed here: create the tenant if new, mark it active."""
        await self._store.ensure_tenant(str(tenant))
        await self._store.set_tenant_active(str(tenant), True)

    async def reactivate(self, tenant: TenantKey) -> None:
        """Mark a tenant seen before active again (an unknown tenant stays unknown)."""
        if await self._store.tenant_exists(str(tenant)):
            await self._store.set_tenant_active(str(tenant), True)

    async def deactivate(self, tenant: TenantKey) -> None:
        """Refuse new starts from now on (the bot was removed); an unknown tenant stays unknown."""
        if await self._store.tenant_exists(str(tenant)):
            await self._store.set_tenant_active(str(tenant), False)

    async def limits(self, tenant: TenantKey) -> Limits:
        """The tenant's limits, defaults filled in (the tenant is created if new)."""
        await self._store.ensure_tenant(str(tenant))
        return await self._store.get_limits(str(tenant))

    async def set_limits(self, tenant: TenantKey, **changes: Any) -> Limits:
        """Change some limits (``None`` restores a default); returns the limits now in force."""
        await self._store.ensure_tenant(str(tenant))
        return await self._store.set_limits(str(tenant), **changes)

    async def grant(self, tenant: TenantKey, amount: int, actor: TenantKey | str,
                    note: str | None = None) -> Balance:
        """Credit the tenant's account (``actor`` is who granted, for the ledger)."""
        return await self._store.grant(str(tenant), amount, str(actor), note)

    async def admin_grant(self, policy: AdminPolicy, tenant: TenantKey, amount: int,
                          actor: TenantKey, note: str | None, request_id: str) -> Balance:
        """A grant asked in chat: the operator only, once per platform request id."""
        policy.check(actor, grant=amount)
        balance, _ = await self._store.grant_once(request_id, str(tenant), amount, str(actor))
        return balance

    async def admin_set_limits(self, policy: AdminPolicy, tenant: TenantKey, actor: TenantKey,
                               **changes: Any) -> Limits:
        """Limits changed in chat: within the operator's ceilings unless the operator asks."""
        policy.check(actor, limits=changes)
        return await self.set_limits(tenant, **changes)

    async def credits(self, tenant: TenantKey, user: str) -> CreditsReport:
        """The tenant's balance and the user's use today."""
        key = str(tenant)
        limits = await self.limits(key)
        return CreditsReport(
            tenant=key, balance=await self._store.balance(key),
            used_today_by_user=await self._store.user_spent_today(key, user),
            daily_user_credits=limits.daily_user_credits,
        )


class ChatBindings:
    """Which chat thread belongs to which session.

    Args:
        store: persistence for the bindings.
    """

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        # Thread -> binding, for bindings found or made here (most recently used last).
        # A thread is bound once, when its session starts (both platforms open a new thread
        # per session), so a binding never goes stale: every message of a thread after the
        # first is routed with no store round trip (issue 15). Threads nobody bound are not
        # remembered: another worker may bind them.
        self._known: dict[tuple[str, str], ChatBinding] = {}

    async def bind(self, binding: ChatBinding) -> None:
        """Remember that a platform thread belongs to a session."""
        await self._store.bind_chat(binding)
        self._remember(binding)

    async def for_thread(self, platform: str, thread_id: str) -> ChatBinding | None:
        """The binding of a platform thread, if it is a session's."""
        key = (platform, thread_id)
        known = self._known.pop(key, None)
        if known is None:
            known = await self._store.binding_for_thread(platform, thread_id)
            if known is None:
                return None
        self._remember(known)
        return known

    def _remember(self, binding: ChatBinding) -> None:
        key = (binding.platform, binding.thread_id)
        self._known.pop(key, None)
        self._known[key] = binding
        while len(self._known) > BINDINGS_REMEMBERED:
            del self._known[next(iter(self._known))]

    async def for_session(self, session_id: str) -> list[ChatBinding]:
        """Every platform thread bound to a session."""
        return await self._store.bindings_for_session(session_id)
