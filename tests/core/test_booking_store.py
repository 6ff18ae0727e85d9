"""The bookings part of the store port (issue 16), on SQLite and on PostgreSQL (``store``).

What the service and the reaper rely on: an intent and its answer are kept, an intent in doubt
closes its session and bills the likely charge to the operator's ledger or to the tenant, a
grant is made once per platform request, a signed request is refused when replayed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.core.models import Mode, ProviderSession, SessionRecord, SessionState, ViewerInfo, utcnow

TENANT = "slack:T1"


def _record(sid: str, reserved: int = 30) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        id=sid, tenant=TENANT, provider="a2e", avatar_id="a", avatar_name="A", mode=Mode.ASK,
        state=SessionState.PENDING, requested_s=180, reserved=reserved, started_by="u1",
        created_at=now, last_activity_at=now,
    )


async def _opened(store: Any, sid: str) -> SessionRecord:
    await store.grant(TENANT, 100, "test")
    rec: SessionRecord = await store.open_session(_record(sid))
    await store.record_booking_intent(sid, "prod", "a2e", TENANT)
    return rec


async def test_an_answer_is_kept_with_its_vendor_id_for_this_deployment_only(store):
    await _opened(store, "s1")
    [intent] = await store.list_bookings(("intent",))
    assert (intent.session_id, intent.session_state) == ("s1", SessionState.PENDING)
    ps = ProviderSession(
        session_id="s1", provider="a2e", provider_session_id="room-9",
        viewer=ViewerInfo(transport="agora", channel="room-9"),
        expires_at=utcnow() + timedelta(minutes=3), handle={"channel": "room-9"},
    )
    await store.record_booking_answer("s1", ps)
    booking = await store.get_booking("s1")
    assert booking is not None and booking.state == "booked"
    assert booking.vendor_session_id == "room-9" and booking.handle["channel"] == "room-9"
    assert booking.requested_s == 180
    assert await store.deployment_vendor_ids("a2e", "prod") == {"room-9"}
    assert await store.deployment_vendor_ids("a2e", "staging") == set()
    await store.resolve_booking("s1", "released", "ended")
    assert await store.list_bookings(("intent", "booked")) == []
    assert await store.get_booking("nope") is None


async def test_in_doubt_billed_to_the_operator_releases_the_tenant(store):
    await _opened(store, "s2")
    await store.mark_booking_in_doubt("s2", 10, "operator", "no answer")
    await store.mark_booking_in_doubt("s2", 10, "operator", "no answer")  # once only
    assert (await store.get_session("s2")).state is SessionState.FAILED
    [booking] = await store.list_bookings(("in_doubt",))
    assert (booking.billed_to, booking.likely_charge) == ("operator", 10)
    assert await store.operator_charges() == 10
    balance = await store.balance(TENANT)
    assert (balance.settled, balance.pending, balance.available) == (0, 0, 100)
    assert await store.verify() == []


async def test_in_doubt_billed_to_the_tenant_settles_the_likely_charge(store):
    await _opened(store, "s3")
    await store.mark_booking_in_doubt("s3", 10, "tenant", "no answer")
    assert (await store.get_session("s3")).state is SessionState.ENDED
    assert (await store.balance(TENANT)).settled == 10
    assert await store.operator_charges() == 0
    assert await store.verify() == []


async def test_a_grant_is_made_once_per_request_id(store):
    first, granted = await store.grant_once("req-1", TENANT, 50, "admin")
    again, granted_again = await store.grant_once("req-1", TENANT, 50, "admin")
    assert (granted, granted_again) == (True, False)
    assert first.granted == again.granted == 50
    assert (await store.grant_once("req-2", TENANT, 5, "admin"))[0].granted == 55


async def test_a_signed_request_is_refused_when_replayed_within_the_window(store):
    assert await store.remember_request("sig-a", 300) is True
    assert await store.remember_request("sig-a", 300) is False
    assert await store.remember_request("sig-b", 300) is True
