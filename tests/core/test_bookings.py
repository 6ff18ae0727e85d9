"""A vendor booking is never lost (issue 16): intent before the call, answer when it arrives.

Against the A2E fake, which books (and charges) a room before it answers, and the real A2E
adapter and service, on both stores (the crash tests: SQLite files shared with a worker).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.core.bookings import BookingKeeper
from bot.core.errors import ProviderUnavailable, ServiceClosing
from bot.core.events import EventHub
from bot.core.models import Pricing, SessionState
from bot.core.reaper import SessionReaper
from bot.core.retry import RetryPolicy
from bot.core.service import SessionService, StartCommand
from bot.providers.a2e import A2EProvider
from bot.storage import SqliteStore
from tests.fakes.a2e import FakeA2E
from tests.fakes.vendor_http import FakeVendorServer, HttpFakeProvider

TENANT = "discord:77"
ROOT = Path(__file__).resolve().parents[2]
PRICING = Pricing(credits_per_minute=10, granularity_s=60, minimum_s=60)
# The policy the product uses for other calls: 3 attempts. The booking call must not use it.
RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, total_s=10)


@pytest.fixture
async def a2e() -> AsyncIterator[FakeA2E]:
    async with FakeA2E(hang_s=5.0) as fake:
        yield fake


@pytest.fixture
async def world(store: Any, a2e: FakeA2E) -> AsyncIterator[dict[str, Any]]:
    """The real A2E adapter and service over the ``store`` fixture (SQLite, then PostgreSQL)."""
    async with httpx.AsyncClient() as http:
        events = EventHub()
        prov = A2EProvider(api_key=SecretStr(a2e.api_key), http=http, events=events,
                           pricing=PRICING, base_url=a2e.url, timeout_s=0.5, retry=RETRY)
        service = SessionService(
            store=store, providers={"a2e": prov}, events=events, start_timeout_s=0.15,
            stop_timeout_s=2.0, bookings=BookingKeeper(store, deployment_id="prod"),
        )
        await store.grant(TENANT, 1000, "test")
        yield {"store": store, "service": service, "prov": prov}


def start(minutes: int = 5) -> StartCommand:
    return StartCommand(tenant=TENANT, user="u1", provider="a2e", minutes=minutes)


async def test_a_failed_booking_answer_books_one_room_not_three_and_is_in_doubt(world, a2e):
    a2e.after_booking = "error"  # the room is booked, then the answer is a 500
    with pytest.raises(ProviderUnavailable):
        await world["service"].start(start())
    await world["service"].drain_starts(5)
    assert len(a2e.rooms) == 1  # sent once: a retry would have booked a second, paid room

    store = world["store"]
    [record] = await store.list_sessions(TENANT)
    booking = await store.get_booking(record.id)
    assert booking is not None and booking.state == "in_doubt"
    assert booking.likely_charge == 50 and booking.billed_to == "operator"
    assert await store.operator_charges() == 50
    assert (await store.balance(TENANT)).available == 1000  # the tenant pays nothing
    assert await store.verify() == []


async def test_a_late_answer_is_recorded_and_its_room_left(world, a2e):
    a2e.answer_delay_s = 0.3  # longer than the start waits (0.15 s), within the HTTP timeout
    with pytest.raises(ProviderUnavailable):
        await world["service"].start(start())
    assert a2e.open_rooms() != []  # booked while we were no longer waiting
    assert await world["service"].drain_starts(5) == 0
    assert a2e.open_rooms() == []  # the answer arrived, was recorded, and the room was left

    store = world["store"]
    [record] = await store.list_sessions(TENANT)
    assert record.state is SessionState.FAILED
    booking = await store.get_booking(record.id)
    assert booking is not None and booking.state == "released"
    assert booking.vendor_session_id == next(iter(a2e.rooms))
    assert (await store.balance(TENANT)).available == 1000
    assert await store.verify() == []


async def test_shutdown_refuses_new_starts_and_waits_for_the_one_in_flight(world, a2e):
    service: SessionService = world["service"]
    service.start_timeout_s = 5.0
    a2e.answer_delay_s = 0.3
    in_flight = asyncio.create_task(service.start(start()))
    await asyncio.sleep(0.1)
    service.stop_accepting()
    with pytest.raises(ServiceClosing) as refused:
        await service.start(start())
    assert "restarting" in refused.value.user_message
    assert await service.drain_starts(5) == 0
    record = await in_flight
    assert record.state is SessionState.LIVE  # it finished and was recorded
    await service.stop_all("the server shut down")
    assert a2e.open_rooms() == []
    assert len(a2e.rooms) == 1


async def test_shutdown_cuts_a_start_that_outlasts_the_wait_and_records_it_in_doubt(world, a2e):
    service: SessionService = world["service"]
    service.start_timeout_s = 5.0
    a2e.answer_delay_s = 3.0
    in_flight = asyncio.create_task(service.start(start()))
    await asyncio.sleep(0.1)
    service.stop_accepting()
    assert await service.drain_starts(0.2) == 1
    with pytest.raises(asyncio.CancelledError):
        await in_flight
    store = world["store"]
    [record] = await store.list_sessions(TENANT)
    assert record.state is SessionState.FAILED
    booking = await store.get_booking(record.id)
    assert booking is not None and booking.state == "in_doubt"
    assert await store.verify() == []


async def _kill_during_booking(db: Any, a2e: FakeA2E) -> None:
    """Run the worker until A2E has booked its room but not answered, then SIGKILL it."""
    a2e.answer_delay_s = 30.0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.core.booking_worker", str(db), a2e.url, a2e.api_key,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(300):
            if a2e.rooms:
                break
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert len(a2e.open_rooms()) == 1  # booked, paid, and we never learned its channel
    a2e.answer_delay_s = 0.0


async def _restart(db: Any, a2e: FakeA2E, billed_to: str) -> SqliteStore:
    store = await SqliteStore.open(db)
    async with httpx.AsyncClient() as http:
        prov = A2EProvider(api_key=SecretStr(a2e.api_key), http=http, events=EventHub(),
                           pricing=PRICING, base_url=a2e.url, timeout_s=0.5, retry=RETRY)
        keeper = BookingKeeper(store, deployment_id="prod", billed_to=billed_to)  # type: ignore[arg-type]
        service = SessionService(store=store, providers={"a2e": prov}, events=EventHub(),
                                 bookings=keeper)
        await SessionReaper(service).reconcile()
    return store


async def test_sigkill_during_an_a2e_booking_is_in_doubt_billed_to_the_operator(tmp_path, a2e):
    db = tmp_path / "k.db"
    await _kill_during_booking(db, a2e)
    store = await _restart(db, a2e, "operator")
    try:
        [record] = await store.list_sessions("discord:99")
        assert record.state is SessionState.FAILED
        [booking] = await store.list_bookings(("in_doubt",))
        assert booking.session_id == record.id and booking.billed_to == "operator"
        assert booking.likely_charge == 10  # one minute at 10 credits a minute
        assert await store.operator_charges() == 10
        balance = await store.balance("discord:99")
        assert (balance.settled, balance.pending) == (0, 0)
        assert await store.verify() == []
    finally:
        await store.close()


async def test_in_doubt_billed_to_the_tenant_settles_the_reservation(tmp_path, a2e):
    db = tmp_path / "t.db"
    await _kill_during_booking(db, a2e)
    store = await _restart(db, a2e, "tenant")
    try:
        [booking] = await store.list_bookings(("in_doubt",))
        assert booking.billed_to == "tenant"
        assert (await store.balance("discord:99")).settled == 10
        assert await store.operator_charges() == 0
        assert await store.verify() == []
    finally:
        await store.close()


async def _deployment(db: Any, url: str, name: str) -> tuple[SqliteStore, SessionService]:
    store = await SqliteStore.open(db)
    prov = HttpFakeProvider(url, survives_restart=True)
    service = SessionService(store=store, providers={prov.name: prov}, events=EventHub(),
                             bookings=BookingKeeper(store, deployment_id=name))
    await store.grant(TENANT, 1000, "test")
    return store, service


async def test_the_sweep_leaves_another_deployments_session_on_the_same_account(tmp_path):
    async with FakeVendorServer() as vendor:
        prod_store, prod = await _deployment(tmp_path / "prod.db", vendor.url, "prod")
        staging_store, staging = await _deployment(tmp_path / "staging.db", vendor.url, "staging")
        try:
            live = await prod.start(StartCommand(tenant=TENANT, user="u", provider="fakehttp"))
            ours = await staging.start(StartCommand(tenant=TENANT, user="u", provider="fakehttp"))
            # Staging's own session ended here while the vendor kept it open (a stop the
            # vendor lost): its booking names it, so staging's sweep ends it.
            await staging.stop(ours.id)
            vendor.open.add(ours.provider_session_id)

            await SessionReaper(staging).reconcile()  # staging restarts: startup sweep
            assert live.provider_session_id in vendor.open  # production's session lives on
            assert ours.provider_session_id not in vendor.open  # staging's own was ended
            assert (await prod_store.get_session(live.id)).state is SessionState.LIVE

            staging.bookings.sweep_unknown = True  # SWEEP_UNKNOWN_VENDOR_SESSIONS=true
            assert await SessionReaper(staging).sweep_orphans(force=True) == [
                live.provider_session_id
            ]
        finally:
            for svc in (prod, staging):
                for p in svc.providers.values():
                    await p.aclose()
            await prod_store.close()
            await staging_store.close()
