"""The fault campaign in CI (issue 16): a few faults at every point; bench/faults.py runs more."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.core.fault_campaign import POINTS, campaign


async def test_no_booking_is_lost_under_sigkill_and_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "faults.db"
    figures, a2e = await campaign(db, iterations=2 * len(POINTS))
    assert figures.iterations == 2 * len(POINTS)
    assert figures.rooms_booked > 0  # the faults did hit bookings
    assert figures.unaccounted == 0, figures
    assert figures.stuck == 0, figures
    assert figures.ledger_problems == [], figures
    assert figures.sigterm_exits == [0, 0]  # a SIGTERM ends the process cleanly
    env = {**os.environ, "DATABASE_PATH": str(db)}
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "avatarbot"), "ledger", "verify", env=env,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await cli.communicate()
    assert cli.returncode == 0 and b"ledger ok" in out
