"""Property-based tests: any sequence of grants, reservations, settlements, releases and crashes
keeps the ledger's invariants, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.errors import AvatarBotError
from bot.core.models import Limits, Mode, SessionRecord, SessionState, utcnow
from bot.storage import SqliteStore
from bot.storage.postgres import PostgresStore
from tests.backends import BACKENDS, open_store

TENANTS = ["discord:1", "slack:T1"]

op = st.one_of(
    st.tuples(st.just("grant"), st.sampled_from(TENANTS), st.integers(1, 200)),
    st.tuples(st.just("reserve"), st.sampled_from(TENANTS), st.integers(1, 150)),
    st.tuples(st.just("burst"), st.sampled_from(TENANTS), st.integers(1, 60)),
    st.tuples(st.just("settle"), st.integers(0, 50), st.integers(0, 400)),
    st.tuples(st.just("fail"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("crash"), st.just(""), st.just(0)),
)


def _record(n: int, tenant: str, amount: int) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        id=f"s{n}", tenant=tenant, provider="fake", avatar_id="a", avatar_name="A", mode=Mode.ASK,
        state=SessionState.PENDING, requested_s=60, reserved=amount, started_by=f"user{n % 3}",
        created_at=now, last_activity_at=now,
    )


async def _check(store: SqliteStore | PostgresStore) -> None:
    assert await store.verify() == []
    for tenant in await store.list_tenants():
        bal = await store.balance(tenant)
        assert bal.pending >= 0 and bal.available >= 0
        entries = await store.history(tenant, 100_000)
        granted = sum(e.amount for e in entries if e.kind == "grant")
        settled = sum(e.amount for e in entries if e.kind == "settle")
        assert bal.granted == granted and bal.settled == settled


async def _play(backend: str, where: Path | str, ops: list[tuple]) -> None:
    # The highest limits allowed: only credits refuse here.
    limits = Limits(max_concurrent=50, daily_user_credits=1_000_000, max_minutes=240)
    store = await open_store(backend, where, limits)
    ids: list[str] = []
    try:
        for n, (kind, a, b) in enumerate(ops):
            if kind == "grant":
                await store.grant(a, b, "admin")
            elif kind in ("reserve", "burst"):
                count = 8 if kind == "burst" else 1
                recs = [_record(n * 10 + i, a, b) for i in range(count)]
                results = await asyncio.gather(
                    *(store.open_session(r) for r in recs), return_exceptions=True
                )
                for rec, res in zip(recs, results, strict=True):
                    if isinstance(res, BaseException):
                        assert isinstance(res, AvatarBotError), res
                    else:
                        ids.append(rec.id)
            elif kind == "settle" and ids:
                sid = ids[a % len(ids)]
                await store.begin_end(sid, "stop", utcnow())
                await store.finish_session(sid, b)
            elif kind == "fail" and ids:
                await store.fail_session(ids[a % len(ids)], "vendor said no")
            elif kind == "crash":
                await store.close()
                store = await open_store(backend, where, limits, fresh=False)
            await _check(store)
    finally:
        await store.close()


@pytest.fixture(scope="module", params=BACKENDS)
def where(request: pytest.FixtureRequest) -> str | None:
    """``None`` for SQLite (each example gets a new file), else this run's PostgreSQL URL."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=25))
def test_any_sequence_keeps_every_ledger_invariant(where, ops):
    if where is not None:  # PostgreSQL: emptied at the start of each example
        asyncio.run(_play("postgres", where, ops))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_play("sqlite", Path(tmp) / "p.db", ops))
