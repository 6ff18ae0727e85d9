"""bench/ledger.py's ceiling (``SyncLedger``) writes the same ledger the store does.

If the hook drifted from the store's transactions, the bench would compare the store against
different work and its "percent of the ceiling" would mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.errors import LimitReached
from bot.core.models import Limits, Mode, SessionRecord, SessionState, utcnow
from bot.storage import SqliteStore
from bot.storage.sqlite import SyncLedger

TENANT = "discord:1"


def _record(sid: str, reserved: int) -> SessionRecord:
    now = utcnow()
    return SessionRecord(
        id=sid, tenant=TENANT, provider="local", avatar_id="a", avatar_name="A", mode=Mode.ASK,
        state=SessionState.PENDING, requested_s=600, reserved=reserved, started_by="u1",
        created_at=now, last_activity_at=now,
    )


async def test_the_bench_hook_settles_like_the_store_and_the_store_verifies_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bench.db"
    limits = Limits(max_concurrent=1)
    ledger = SyncLedger(path, limits)
    try:
        assert ledger.grant(TENANT, 100, "bench").available == 100
        ledger.open_session(_record("s1", 10))
        # the store's start rules run too: one session at a time under these limits
        with pytest.raises(LimitReached):
            ledger.open_session(_record("s2", 10))
        assert ledger.begin_end("s1", "stop", utcnow()).state is SessionState.ENDING
        assert ledger.finish_session("s1", 3).state is SessionState.ENDED
    finally:
        ledger.close()

    store = await SqliteStore.open(path, limits)
    try:
        balance = await store.balance(TENANT)
        assert (balance.granted, balance.settled, balance.pending) == (100, 3, 0)
        assert await store.verify() == []
    finally:
        await store.close()
