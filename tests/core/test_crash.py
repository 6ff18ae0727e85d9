"""A process running sessions is killed with SIGKILL; the restarted one cleans up after it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.core.bookings import BookingKeeper
from bot.core.events import EventHub
from bot.core.models import SessionState
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from bot.storage import SqliteStore
from tests.fakes.vendor_http import FakeVendorServer, HttpFakeProvider

ROOT = Path(__file__).resolve().parents[2]
TENANT = "discord:42"


async def run_and_kill(db: Path, url: str, *extra: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.core.crash_worker", str(db), url, *extra,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready"
        await asyncio.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def restart(db: Path, url: str):
    store = await SqliteStore.open(db)
    provider = HttpFakeProvider(url, survives_restart=False)
    # One deployment uses this vendor account: the sweep may stop what nobody booked.
    keeper = BookingKeeper(store, sweep_unknown=True)
    service = SessionService(store=store, providers={provider.name: provider}, events=EventHub(),
                             bookings=keeper)
    await SessionReaper(service).reconcile()
    return store, provider


async def test_sigkill_mid_session_then_restart_stops_vendor_and_settles(tmp_path):
    db = tmp_path / "crash.db"
    async with FakeVendorServer() as vendor:
        await run_and_kill(db, vendor.url, "3")
        assert len(vendor.open) == 3  # the dead process left three paid sessions running

        store, provider = await restart(db, vendor.url)
        try:
            assert vendor.open == set()
            assert sorted(vendor.stopped) == ["v1", "v2", "v3"]
            records = await store.list_sessions(TENANT)
            assert [r.state for r in records] == [SessionState.ENDED] * 3
            for r in records:
                assert r.settled == 1  # under 10 s used: the 10 s minimum at 6 credits/min
            balance = await store.balance(TENANT)
            assert (balance.settled, balance.pending, balance.available) == (3, 0, 997)
            assert await store.verify() == []
        finally:
            await provider.aclose()
            await store.close()

    env = {**os.environ, "DATABASE_PATH": str(db)}
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "avatarbot"), "ledger", "verify", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await cli.communicate()
    assert cli.returncode == 0 and b"ledger ok" in out


async def test_sigkill_while_the_vendor_is_starting_releases_and_sweeps_the_orphan(tmp_path):
    db = tmp_path / "crash.db"
    async with FakeVendorServer() as vendor:
        vendor.hang_start = True
        await run_and_kill(db, vendor.url, "0", "hang")
        assert vendor.open == {"v1"}  # the vendor started it; we never learned its id

        store, provider = await restart(db, vendor.url)
        try:
            [record] = await store.list_sessions(TENANT)
            assert record.state is SessionState.FAILED
            assert vendor.stopped == ["v1"] and vendor.open == set()
            booking = await store.get_booking(record.id)  # the intent, resolved by the sweep
            assert booking is not None and booking.state == "released"
            assert await store.list_bookings(("intent", "booked", "in_doubt")) == []
            assert (await store.balance(TENANT)).available == 1000
            assert await store.verify() == []
        finally:
            await provider.aclose()
            await store.close()
