"""The fault campaign (issue 16): real worker processes, a real SQLite file, a fake A2E that books
before it answers; SIGKILL at random points of start, chat and stop, SIGTERM during starts.

Used by ``tests/core/test_faults.py`` (a few iterations) and ``bench/faults.py`` (many). After
each fault the next process reconciles at startup (``SessionReaper.reconcile``), and then:

- every room A2E holds open is owned by an open session of ours, or counted by an in-doubt
  booking (no vendor booking unaccounted for);
- no session is left pending or ending (none stuck);
- the ledger verifies (``SqliteStore.verify``; ``avatarbot ledger verify`` at the end).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bot.core.models import SessionState
from bot.storage import SqliteStore
from tests.fakes.a2e import FakeA2E

ROOT = Path(__file__).resolve().parents[2]
# Where a fault lands: the line the worker printed last before it, and how long after it.
POINTS = {
    "before the vendor call": ("start", 0.0),
    "during the vendor call": ("start", None),  # once A2E has booked, before it answers
    "after the vendor call": ("live", 0.0),
    "during chat": ("said", 0.0),
    "during stop": ("said", 0.01),
    "sigterm during start": ("start", None),
}


@dataclass
class Figures:
    """What a campaign saw."""

    iterations: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    rooms_booked: int = 0
    unaccounted: int = 0  # open rooms neither owned by a session nor counted in doubt
    in_doubt: int = 0
    stuck: int = 0
    ledger_problems: list[str] = field(default_factory=list)
    sigterm_exits: list[int] = field(default_factory=list)


def _spawn(db: Path, a2e: FakeA2E, loops: int) -> subprocess.Popen[str]:
    # Plain Popen, waited for on a thread: asyncio's child watcher lost a child now and then
    # under this many quick spawns and kills ("Unknown child process pid").
    return subprocess.Popen(
        [sys.executable, "-m", "tests.core.booking_worker", str(db), a2e.url, a2e.api_key,
         str(loops)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )


async def _until(proc: subprocess.Popen[str], word: str, within: float = 30.0) -> bool:
    assert proc.stdout is not None
    async with asyncio.timeout(within):
        while True:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                return False
            if line.strip() == word:
                return True


async def _wait(proc: subprocess.Popen[str], within: float = 20.0) -> int:
    return await asyncio.to_thread(proc.wait, within)


async def _booked(a2e: FakeA2E, count: int, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while len(a2e.rooms) <= count:  # noqa: ASYNC110 - the fake's state, polled briefly
            await asyncio.sleep(0.005)


async def one_fault(db: Path, a2e: FakeA2E, point: str, rng: random.Random,
                    figures: Figures) -> None:
    """Run a worker, hit it with the fault at ``point``, then restart and check."""
    marker, delay = POINTS[point]
    a2e.answer_delay_s = rng.uniform(0.05, 0.4)
    booked_before = len(a2e.rooms)
    proc = _spawn(db, a2e, loops=3)
    try:
        assert await _until(proc, "reconciled")
        if await _until(proc, marker):
            if delay is None:
                await _booked(a2e, booked_before)
            else:
                await asyncio.sleep(delay + rng.uniform(0, 0.02))
        if point == "sigterm during start":
            proc.send_signal(signal.SIGTERM)
            figures.sigterm_exits.append(await _wait(proc))
        else:
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        await _wait(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    figures.faults[point] = figures.faults.get(point, 0) + 1
    figures.iterations += 1
    a2e.answer_delay_s = 0.0
    # The next process reconciles at startup.
    again = _spawn(db, a2e, loops=0)
    assert await _until(again, "reconciled")
    assert await _wait(again) == 0
    if again.stdout is not None:
        again.stdout.close()
    await check(db, a2e, figures)


async def check(db: Path, a2e: FakeA2E, figures: Figures) -> None:
    """Count what is unaccounted for, stuck or wrong in the ledger."""
    store = await SqliteStore.open(db)
    try:
        open_records = await store.open_sessions()
        owned = {r.provider_session_id for r in open_records if r.provider_session_id}
        in_doubt = await store.list_bookings(("in_doubt",))
        unowned = [c for c in a2e.open_rooms() if c not in owned]
        figures.rooms_booked = len(a2e.rooms)
        figures.in_doubt = len(in_doubt)
        # Each in-doubt booking may hold at most one room we cannot name.
        figures.unaccounted = max(0, len(unowned) - len(in_doubt))
        figures.stuck = sum(r.state in (SessionState.PENDING, SessionState.ENDING)
                            for r in open_records)
        figures.ledger_problems = await store.verify()
    finally:
        await store.close()


async def campaign(db: Path, iterations: int, seed: int = 16) -> tuple[Figures, FakeA2E]:
    """Run ``iterations`` faults (every point in turn, random timings) on one database."""
    rng = random.Random(seed)
    figures = Figures()
    points = list(POINTS)
    async with FakeA2E(hang_s=5.0) as a2e:
        for i in range(iterations):
            await one_fault(db, a2e, points[i % len(points)], rng, figures)
            if figures.unaccounted or figures.stuck or figures.ledger_problems:
                break
        return figures, a2e
