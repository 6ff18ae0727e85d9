"""The fault campaign, longer (issue 16): SIGKILL/SIGTERM at every point of start, chat and stop.

Usage: PYTHONPATH=. .venv/bin/python bench/faults.py [iterations] [seed]

Runs ``tests/core/fault_campaign.py`` (real worker processes, one SQLite file, the fake A2E that
books before it answers) and prints what it found: rooms booked, bookings in doubt, rooms nobody
accounts for, stuck sessions, ledger problems. Anchor: the time one worker takes to start and
reconcile with no fault (the fixed cost of every iteration).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tests.core.fault_campaign import POINTS, _spawn, _until, _wait, campaign
from tests.fakes.a2e import FakeA2E


async def anchor(db: Path) -> float:
    async with FakeA2E() as a2e:
        began = time.perf_counter()
        proc = _spawn(db, a2e, loops=0)
        assert await _until(proc, "reconciled")
        await _wait(proc)
        return time.perf_counter() - began


async def main(iterations: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = await anchor(Path(tmp) / "anchor.db")
        began = time.perf_counter()
        figures, _ = await campaign(Path(tmp) / "faults.db", iterations, seed)
        took = time.perf_counter() - began
    print(f"anchor: one worker start + reconcile, no fault: {base:.2f} s")
    print(f"iterations: {figures.iterations} in {took:.1f} s "
          f"({took / max(1, figures.iterations):.2f} s each, seed {seed})")
    for point in POINTS:
        print(f"  {point:<24} {figures.faults.get(point, 0)}")
    print(f"A2E rooms booked: {figures.rooms_booked}")
    print(f"bookings in doubt (operator ledger): {figures.in_doubt}")
    print(f"rooms unaccounted for: {figures.unaccounted}")
    print(f"sessions stuck: {figures.stuck}")
    print(f"SIGTERM exit codes: {sorted(set(figures.sigterm_exits))}")
    print(f"ledger: {'ok' if not figures.ledger_problems else figures.ledger_problems}")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    asyncio.run(main(n, seed))
