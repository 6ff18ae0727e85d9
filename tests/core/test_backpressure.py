"""Backpressure that loses nothing (docs/backpressure.md), through the real A2E adapter over HTTP
to the fake A2E API, with the session service on a real SQLite file.

Each session's messages reach the vendor in order through its own bounded queue; a flood on one
session does not hold up another; a full queue refuses plainly; time spent waiting inside the
bot (in a session's queue) never counts as the vendor being slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.core.dispatch import SessionBusy, SessionQueues
from bot.core.events import EventHub, Transcript
from bot.core.models import Pricing, SessionRecord
from bot.core.retry import RetryPolicy
from bot.core.service import SessionService
from bot.providers.a2e import A2EProvider
from bot.storage import SqliteStore
from tests.core.conftest import TENANT, cmd
from tests.fakes.a2e import API, FakeA2E

TIMEOUT_S = 0.5  # the vendor timeout in these tests
RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, total_s=10)


async def make_service(store: SqliteStore, hub: EventHub, fake: FakeA2E,
                       http: httpx.AsyncClient, retry: RetryPolicy = RETRY,
                       **kw: Any) -> SessionService:
    a2e = A2EProvider(api_key=SecretStr(fake.api_key), http=http, events=hub,
                      pricing=Pricing(credits_per_minute=1), base_url=fake.url,
                      timeout_s=TIMEOUT_S, retry=retry)
    return SessionService(store=store, providers={"a2e": a2e}, events=hub, **kw)


@pytest.fixture
async def a2e() -> AsyncIterator[FakeA2E]:
    async with FakeA2E() as fake:
        yield fake


def asked_in_arrival_order(fake: FakeA2E) -> list[tuple[str, str]]:
    """(channel, text) of every ``ask`` in the order the fake vendor received them."""
    return [(r.json["channel"], r.json["text"]) for r in fake.calls(f"{API}/ask")]


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def start(service: SessionService, tenant: str = TENANT) -> SessionRecord:
    await service.store.grant(tenant, 100, "admin")
    return await service.start(cmd(provider="a2e", tenant=tenant))


async def test_a_flood_on_one_session_arrives_in_order_and_does_not_hold_up_another(
        store, hub, a2e):
    async with httpx.AsyncClient() as http:
        service = await make_service(store, hub, a2e, http, queue_limit=250)
        flooded, quiet = await start(service), await start(service)
        a2e.delay_s[f"{API}/ask"] = 0.005  # a vendor that takes its time over each question
        texts = [f"question {i}" for i in range(200)]
        flood = [asyncio.create_task(service.send(flooded.id, t, author="U1")) for t in texts]
        await asyncio.sleep(0.05)  # the flood is under way
        await service.send(quiet.id, "just one question", author="U2")
        modes = await asyncio.gather(*flood)

    assert len(modes) == 200
    arrived = asked_in_arrival_order(a2e)
    channel = flooded.provider_session_id
    assert [text for ch, text in arrived if ch == channel] == texts  # every one, in order
    assert a2e.rooms[channel].asked == texts
    # The quiet session's question was not queued behind the flood.
    quiet_at = arrived.index((quiet.provider_session_id, "just one question"))
    assert quiet_at < arrived.index((channel, texts[-1]))


async def test_a_full_queue_refuses_plainly_and_keeps_what_it_accepted(store, hub, a2e):
    async with httpx.AsyncClient() as http:
        service = await make_service(store, hub, a2e, http, queue_limit=3)
        record = await start(service)
        a2e.delay_s[f"{API}/ask"] = 0.1
        async with hub.subscribe(record.id) as queue:
            sends = [asyncio.create_task(service.send(record.id, f"q{i}")) for i in range(5)]
            results = await asyncio.gather(*sends, return_exceptions=True)
            shown = [e.text for e in drain(queue)
                     if isinstance(e, Transcript) and e.speaker == "user"]

    refused = [r for r in results if isinstance(r, SessionBusy)]
    assert len(refused) == 2
    assert refused[0].user_message == (
        "Linda is still busy with 3 messages; wait a moment and send this again.")
    assert a2e.rooms[record.provider_session_id].asked == ["q0", "q1", "q2"]
    # A refused message is not shown in the thread as if the avatar heard it.
    assert shown == ["q0", "q1", "q2"]
    assert service.queues.waiting(record.id) == 0


async def test_waiting_in_a_session_queue_longer_than_the_vendor_timeout_is_not_a_timeout(
        store, hub, a2e):
    async with httpx.AsyncClient() as http:
        service = await make_service(store, hub, a2e, http)
        record = await start(service)
        a2e.delay_s[f"{API}/ask"] = TIMEOUT_S * 2 / 3  # each answer comes within the timeout
        texts = [f"q{i}" for i in range(4)]  # the last waits about twice the timeout
        await asyncio.gather(*(service.send(record.id, t) for t in texts))
    assert a2e.rooms[record.provider_session_id].asked == texts


async def test_the_person_line_is_published_when_its_turn_comes(store, hub, a2e):
    """The thread shows each person's line right before the vendor hears it, in queue order."""
    async with httpx.AsyncClient() as http:
        service = await make_service(store, hub, a2e, http)
        record = await start(service)
        async with hub.subscribe(record.id) as queue:
            await asyncio.gather(*(service.send(record.id, f"q{i}") for i in range(3)))
            lines = [e.text for e in drain(queue)
                     if isinstance(e, Transcript) and e.speaker == "user"]
    assert lines == ["q0", "q1", "q2"]


async def test_a_backlog_over_many_sessions_sends_a_bounded_number_at_once_and_loses_none(
        store, hub, fake):
    """Every session has a message waiting and the vendor is slow: only ``sending`` calls are
    out at a time (the rest wait their turn, counted as queued), and every one is sent."""
    service = SessionService(store=store, providers={"fake": fake}, events=hub)
    service.queues = SessionQueues(limit=2, sending=2)
    await store.grant(TENANT, 1000, "admin")
    await store.set_limits(TENANT, max_concurrent=6, daily_user_credits=1000)
    records = [await service.start(cmd(user=f"u{i}")) for i in range(6)]
    fake.talk_gate = asyncio.Event()  # the vendor holds every question it gets
    sends = [asyncio.create_task(service.send(r.id, f"q{i}")) for i, r in enumerate(records)]
    async with asyncio.timeout(10):
        while len(fake.called("ask")) < 2:  # noqa: ASYNC110 - polling the fake's record
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(fake.called("ask")) == 2  # the other four wait for a free call
    assert [service.queues.waiting(r.id) for r in records] == [1] * 6
    fake.talk_gate.set()
    async with asyncio.timeout(10):
        await asyncio.gather(*sends)
    assert sorted(fake.called("ask")) == [f"q{i}" for i in range(6)]
