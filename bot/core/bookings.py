"""Vendor bookings: a paid vendor session is never lost (issue 16; ``docs/bookings.md``).

The intent to book is written before the vendor call and the vendor's answer the moment it
arrives (``SessionService`` through ``BookingKeeper``). What an interrupted call may have booked
is resolved here, in the running process and after a crash (``SessionReaper.reconcile``):

- an answer that arrives after its start was given up is recorded, then ended at once;
- a refusal means nothing was booked;
- no answer at all (timeout, cancel, crash): a vendor whose sessions end with our process
  (the local avatar) holds nothing; a vendor that lists its sessions is swept (when
  ``SWEEP_UNKNOWN_VENDOR_SESSIONS`` allows it: no vendor lets a session carry our name);
  otherwise, and always for a vendor that cannot list (A2E), the booking is recorded **in
  doubt** with its likely charge (A2E charges the whole booked window up front), billed to the
  operator by default (``IN_DOUBT_BILLED_TO``): the tenant's reservation is released and the
  charge is one row of the operator's own ledger, apart from every tenant's balance.

Booking calls are never retried blindly: a retry first accounts for what the previous attempt
may have booked. A definite refusal in a readable answer (A2E's "all hosts are occupied", a 4xx)
booked nothing, so it may be retried (``booked_nothing``); after a timeout, a dropped connection,
a 5xx or an unreadable answer the vendor may have booked, and since no vendor lets us ask (no
idempotency key, no name on a session) the call is not repeated: the booking stays recorded and
is resolved as above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from bot.core.errors import ProviderError, ProviderUnavailable
from bot.core.models import ProviderSession, SessionRecord, SessionState, ViewerInfo, utcnow
from bot.core.provider import AvatarProvider

if TYPE_CHECKING:  # ports imports this module's models
    from bot.core.ports import SessionStore

log = logging.getLogger(__name__)

BookingState = Literal["intent", "booked", "refused", "released", "in_doubt"]
BilledTo = Literal["operator", "tenant"]


class Booking(BaseModel):
    """One vendor booking as the store keeps it."""

    session_id: str
    deployment_id: str
    provider: str
    tenant: str
    state: BookingState
    vendor_session_id: str | None = None
    handle: dict[str, Any] = Field(default_factory=dict)
    likely_charge: int = 0
    billed_to: BilledTo | None = None
    note: str | None = None
    created_at: datetime
    updated_at: datetime
    session_state: SessionState | None = None
    requested_s: int | None = None

    def provider_session(self) -> ProviderSession | None:
        """What the adapter needs to stop the booked vendor session, if it answered."""
        if self.vendor_session_id is None:
            return None
        handle = dict(self.handle)
        expires = handle.pop("expires_at", None)
        transport = handle.pop("transport", "agora")
        return ProviderSession(
            session_id=self.session_id, provider=self.provider,
            provider_session_id=self.vendor_session_id,
            viewer=ViewerInfo(transport=transport),
            expires_at=datetime.fromisoformat(expires) if expires else utcnow(),
            handle=handle,
        )


def is_ambiguous(exc: BaseException) -> bool:
    """Whether a failed booking call may still have booked (no definite refusal came back)."""
    if isinstance(exc, ProviderUnavailable):
        # No answer (a timeout, a dropped connection), an answer we could not read, or a server
        # error: the vendor may have booked. A vendor's refusal in a readable answer (A2E's
        # "all hosts are occupied" comes with HTTP 200) or a 4xx (429 included) is not.
        status = exc.status_code
        return status is None or status >= 500
    return not isinstance(exc, ProviderError)  # cancelled, timed out, or a bug of ours


def booked_nothing(exc: ProviderError) -> bool:
    """Whether a failed booking call certainly booked nothing.

    The only failure after which a booking call is retried (``VendorHTTP.call(retry_if=...)``).
    """
    return not is_ambiguous(exc)


class BookingKeeper:
    """Writes and resolves the bookings of one deployment.

    Args:
        store: where bookings are kept.
        deployment_id: this deployment's id (``DEPLOYMENT_ID``), written with every booking.
        billed_to: who bears an in-doubt booking's likely charge.
        stop_timeout_s: how long a vendor may take to stop a session.
        sweep_unknown: whether the orphan sweep may stop vendor sessions no booking of this
            deployment names (``SWEEP_UNKNOWN_VENDOR_SESSIONS``: only for a vendor account
            that no other deployment uses). No vendor lets us put a name or metadata on a
            session (docs/vendors/*.md), so without it an unanswered booking at a vendor that
            lists its sessions is in doubt too.
    """

    def __init__(
        self, store: SessionStore, *, deployment_id: str = "default",
        billed_to: BilledTo = "operator", stop_timeout_s: float = 20.0,
        sweep_unknown: bool = False,
    ) -> None:
        self.store = store
        self.deployment_id = deployment_id
        self.billed_to: BilledTo = billed_to
        self.stop_timeout_s = stop_timeout_s
        self.sweep_unknown = sweep_unknown

    def can_sweep(self, prov: AvatarProvider) -> bool:
        """Whether an unanswered booking at ``prov`` is found by the orphan sweep."""
        return prov.capabilities.lists_sessions and self.sweep_unknown

    async def in_doubt_bookings(self) -> list[Booking]:
        """Bookings in doubt, oldest first (``/metrics``, ``sessions list``, ``doctor``)."""
        return await self.store.list_bookings(("in_doubt",))

    async def intent(self, record: SessionRecord) -> None:
        """Write the intent to book, before the vendor is called."""
        await self.store.record_booking_intent(
            record.id, self.deployment_id, record.provider, record.tenant
        )

    async def answered(self, session_id: str, ps: ProviderSession) -> None:
        """Write the vendor's answer (its session id and handle) the moment it arrives."""
        await self.store.record_booking_answer(session_id, ps)

    async def released(self, session_id: str, note: str) -> None:
        """What was booked is ended at the vendor (or was never made)."""
        await self.store.resolve_booking(session_id, "released", note)

    async def failed(self, record: SessionRecord, prov: AvatarProvider, exc: BaseException) -> None:
        """Resolve a booking call that raised ``exc``, as far as can be known now."""
        if not is_ambiguous(exc):
            await self.store.resolve_booking(record.id, "refused", f"refused: {exc!r}"[:200])
        elif _in_process(prov):
            await self.released(record.id, "nothing outlives a failed in-process start")
        elif not self.can_sweep(prov):
            await self.in_doubt(record.id, record.reserved, f"no answer from the vendor: {exc!r}")
        # A vendor that lists its sessions: the intent stays until the sweep has looked.

    async def in_doubt(self, session_id: str, charge: int, note: str) -> None:
        """Record that the vendor may have booked and cannot be asked."""
        log.warning("booking of session %s is in doubt (likely charge %d, billed to %s)",
                    session_id, charge, self.billed_to)
        await self.store.mark_booking_in_doubt(session_id, charge, self.billed_to, note)

    async def stop_and_release(
        self, prov: AvatarProvider, booking: Booking, note: str
    ) -> bool:
        """Stop what ``booking`` booked (stop is idempotent) and mark it released."""
        ps = booking.provider_session()
        if ps is not None:
            try:
                await asyncio.wait_for(prov.stop(ps), self.stop_timeout_s)
            except (ProviderError, TimeoutError) as exc:
                log.warning("could not end the booking of session %s: %r", booking.session_id, exc)
                return False
        await self.released(booking.session_id, note)
        return True

    async def resolve_after_crash(
        self, providers: dict[str, AvatarProvider], skip: Collection[str] = ()
    ) -> list[str]:
        """Resolve every booking a crash or a shutdown left; return the providers to sweep.

        A booked session whose row never went live (or has closed) is ended at its vendor; an
        unanswered intent is resolved by what its vendor can tell (see the module docstring).
        Intents at vendors that list their sessions are left to the caller's orphan sweep; it
        then calls ``released_after_sweep``. Sessions in ``skip`` (held by another live worker)
        are left to that worker.
        """
        to_sweep: set[str] = set()
        for booking in await self.store.list_bookings(("intent", "booked")):
            if booking.deployment_id != self.deployment_id or booking.session_id in skip:
                continue
            prov = providers.get(booking.provider)
            if prov is None:
                continue
            try:
                await self._resolve_one(prov, booking, to_sweep)
            except Exception:
                log.exception("could not resolve the booking of session %s", booking.session_id)
        return sorted(to_sweep)

    async def _resolve_one(
        self, prov: AvatarProvider, booking: Booking, to_sweep: set[str]
    ) -> None:
        state = booking.session_state
        if booking.state == "booked":
            if state in (SessionState.LIVE, SessionState.ENDING):
                return  # the session row owns it: the reaper ends or keeps it
            await self.stop_and_release(prov, booking, "ended after a restart")
            return
        if _in_process(prov):
            await self.released(booking.session_id, "ended with the process")
        elif self.can_sweep(prov):
            to_sweep.add(booking.provider)
        else:
            charge = _likely_charge(prov, booking)
            await self.in_doubt(booking.session_id, charge, "the server stopped during the booking")

    async def released_after_sweep(self, provider: str, before: datetime) -> None:
        """Release intents at ``provider`` written before a completed sweep.

        Whatever they booked was listed by the vendor and stopped by the sweep.
        """
        for booking in await self.store.list_bookings(("intent",)):
            if (booking.provider == provider and booking.deployment_id == self.deployment_id
                    and booking.created_at <= before):
                await self.released(booking.session_id, "ended by the orphan sweep")


def _in_process(prov: AvatarProvider) -> bool:
    """Whether ``prov``'s sessions live inside our process (the local avatar).

    Nothing is booked anywhere else, and a crash ends them.
    """
    caps = prov.capabilities
    return not caps.survives_restart and not caps.lists_sessions


def _likely_charge(prov: AvatarProvider, booking: Booking) -> int:
    seconds = booking.requested_s or 0
    return prov.capabilities.pricing.cost(seconds) if seconds else 0

