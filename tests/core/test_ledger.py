"""The two-phase credit ledger through the real session service, on a real SQLite file and a real
PostgreSQL database (the ``store`` fixture runs each test on both)."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.errors import (
    InsufficientCredits,
    InvalidRequest,
    LimitReached,
    NotAllowed,
    SessionNotFound,
    TenantNotFound,
    UnknownProvider,
)
from bot.core.models import SessionState
from tests.backends import run_sql
from tests.core.conftest import TENANT, cmd


async def test_a_session_reserves_its_whole_length_then_settles_use_and_releases_the_rest(
    service, store
):
    await store.grant(TENANT, 100, "admin")
    record = await service.start(cmd(minutes=10))
    assert record.state is SessionState.LIVE
    assert record.reserved == 10  # 1 credit a minute
    balance = await store.balance(TENANT)
    assert (balance.pending, balance.available) == (10, 90)

    summary = await service.stop(record.id)
    assert summary.state is SessionState.ENDED
    assert summary.settled == 1  # under a minute used: the one-minute minimum
    assert summary.released == 9
    balance = await store.balance(TENANT)
    assert (balance.granted, balance.settled, balance.pending, balance.available) == (100, 1, 0, 99)
    assert await store.verify() == []


async def test_hundred_concurrent_starts_on_a_balance_for_ten_start_exactly_ten(service, store):
    await store.grant(TENANT, 100, "admin")
    await store.set_limits(TENANT, max_concurrent=50, daily_user_credits=100_000)
    results = await asyncio.gather(
        *(service.start(cmd(user=f"u{i}")) for i in range(100)), return_exceptions=True
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(started) == 10
    assert all(isinstance(r, InsufficientCredits) for r in refused)
    assert "Not enough credits" in refused[0].user_message
    assert (await store.balance(TENANT)).available == 0
    assert await store.verify() == []


async def test_refused_starts_reserve_nothing(service, store, fake):
    await store.grant(TENANT, 5, "admin")
    with pytest.raises(InsufficientCredits):
        await service.start(cmd(minutes=10))
    await store.grant(TENANT, 1000, "admin")
    await store.set_limits(TENANT, max_concurrent=1)
    await service.start(cmd())
    with pytest.raises(LimitReached, match="already running"):
        await service.start(cmd())
    await store.set_limits(TENANT, max_concurrent=5, max_minutes=5)
    with pytest.raises(LimitReached, match="at most 5 minutes"):
        await service.start(cmd(minutes=6))
    await store.set_limits(TENANT, allowed_roles=["avatar-host"])
    with pytest.raises(NotAllowed):
        await service.start(cmd(minutes=2, roles=["everyone"]))
    await service.start(cmd(minutes=2, roles=["avatar-host"]))
    await store.set_limits(TENANT, allowed_roles=[], daily_user_credits=12)
    with pytest.raises(LimitReached, match="daily limit"):
        await service.start(cmd(minutes=5))
    assert len(fake.called("start")) == 2
    assert (await store.balance(TENANT)).pending == 12
    assert await store.verify() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"minutes": 0}, InvalidRequest, "at least 1"),
        ({"minutes": -3}, InvalidRequest, "at least 1"),
        ({"minutes": 100_000}, InvalidRequest, "at most 60 minutes"),
        ({"provider": "nope"}, UnknownProvider, "Available: fake"),
        ({"avatar": "nobody"}, InvalidRequest, "Unknown avatar"),
        ({"knowledge": "x" * 20_001}, InvalidRequest, "too long"),
    ],
)
async def test_bad_start_arguments_are_clear_errors_that_change_nothing(
    service, store, kwargs, error, text
):
    await store.grant(TENANT, 100, "admin")
    with pytest.raises(error, match=text):
        await service.start(cmd(**kwargs))
    assert await store.list_sessions() == []
    assert (await store.balance(TENANT)).available == 100


@pytest.mark.parametrize("amount", [0, -5, 10**9, 2.5])
async def test_grants_must_be_sane_whole_numbers(store, amount):
    with pytest.raises(InvalidRequest, match="whole number"):
        await store.grant(TENANT, amount, "admin")
    with pytest.raises(TenantNotFound):
        await store.balance(TENANT)


async def test_unknown_tenant_and_unknown_session_are_typed_errors(service, store):
    with pytest.raises(TenantNotFound):
        await store.set_limits("slack:T0NOBODY", max_concurrent=3)
    with pytest.raises(SessionNotFound):
        await service.stop("does-not-exist")


async def test_stop_twice_settles_once(service, store, fake):
    await store.grant(TENANT, 100, "admin")
    record = await service.start(cmd())
    first = await service.stop(record.id)
    second = await service.stop(record.id)
    assert first == second
    assert len(fake.called("stop")) == 1
    kinds = [e.kind for e in await store.history(TENANT)]
    assert kinds.count("settle") == 1 and kinds.count("release") == 1
    assert await store.verify() == []


async def test_vendor_failure_at_start_releases_the_whole_reservation(service, store, fake):
    from tests.fakes.provider import unavailable

    await store.grant(TENANT, 100, "admin")
    fake.fail["start"] = unavailable()
    with pytest.raises(Exception, match="no free capacity"):
        await service.start(cmd())
    [record] = await store.list_sessions()
    assert record.state is SessionState.FAILED
    assert record.failure_reason == "The vendor has no free capacity right now."
    assert (await store.balance(TENANT)).available == 100
    assert await store.verify() == []


async def test_a_vendor_that_hangs_at_start_times_out_and_releases(service, store, fake):
    await store.grant(TENANT, 100, "admin")
    fake.start_delay = 10
    with pytest.raises(Exception, match="did not start the session in time"):
        await service.start(cmd())
    assert (await store.balance(TENANT)).available == 100
    assert await store.verify() == []


async def test_verify_finds_a_tampered_balance(store):
    await store.grant(TENANT, 50, "admin")
    await run_sql(store, "UPDATE balances SET granted = 60")
    problems = await store.verify()
    assert problems and TENANT in problems[0]
