"""The service's side of vendor-ended sessions: the end time it settles at, and its reaction to a
vendor saying a session is gone (with the in-memory provider; every real adapter is covered in
``tests/providers/test_vendor_ended.py``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.core.errors import ProviderSessionGone
from bot.core.events import Ended, VendorEnded
from bot.core.models import SessionState, utcnow
from bot.core.reaper import SessionReaper
from tests.core.conftest import TENANT, cmd


async def live(service, store):
    await store.grant(TENANT, 1000, "test")
    return await service.start(cmd())


async def test_an_end_time_before_the_start_or_after_now_is_clamped(service, store):
    early = await live(service, store)
    await service.vendor_ended(early.id, "gone", early.started_at - timedelta(hours=1))
    ended = await service.get(early.id)
    assert ended.ending_at == early.started_at
    assert ended.settled == service.providers["fake"].capabilities.pricing.cost(0)

    late = await service.start(cmd())
    before = utcnow()
    await service.vendor_ended(late.id, "gone", utcnow() + timedelta(hours=1))
    ended = await service.get(late.id)
    assert ended.ending_at is not None and before <= ended.ending_at <= utcnow()
    assert await store.verify() == []


async def test_only_a_live_session_is_ended_as_vendor_ended(service, store):
    record = await live(service, store)
    await service.stop(record.id, "stopped by ann")
    assert await service.vendor_ended(record.id, "gone") is None
    assert (await service.get(record.id)).end_reason == "stopped by ann"


@pytest.mark.parametrize("method", ["say", "ask", "interrupt"])
async def test_a_gone_session_on_a_command_ends_it_with_the_vendors_reason(
    service, store, fake, hub, method
):
    record = await live(service, store)
    fake.fail[method] = ProviderSessionGone("fake", "That session has already ended.",
                                            reason="the vendor ran out of credits")
    async with hub.subscribe(record.id) as queue:
        with pytest.raises(ProviderSessionGone):
            if method == "interrupt":
                await service.interrupt(record.id)
            else:
                await getattr(service, method)(record.id, "hello")
        events = [queue.get_nowait() for _ in range(queue.qsize())]
    final = await service.get(record.id)
    assert final.state is SessionState.ENDED
    assert final.end_reason == "the vendor ran out of credits"
    assert [e.summary.reason for e in events if isinstance(e, Ended)] == [
        "the vendor ran out of credits"]
    assert await store.verify() == []


async def test_a_vendor_ended_event_settles_at_the_events_time(service, store):
    record = await live(service, store)
    at = record.started_at + timedelta(seconds=0.1)
    event = VendorEnded(session_id=record.id, reason="idle at the vendor", at=at.timestamp())
    await asyncio.sleep(0.3)  # we handle it a while after the vendor ended the session
    await SessionReaper(service).end_for_vendor(event)
    final = await service.get(record.id)
    assert final.ending_at is not None and final.end_reason == "idle at the vendor"
    assert abs((final.ending_at - at).total_seconds()) < 0.001
    assert final.settled == service.settlement(final)
    assert await store.verify() == []
