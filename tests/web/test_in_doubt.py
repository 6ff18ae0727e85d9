"""Bookings in doubt are counted in ``/metrics`` and shown by the command line (issue 16)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bot.core.errors import ProviderUnavailable
from tests.process import run
from tests.web.conftest import web_stack


async def test_an_a2e_booking_without_an_answer_is_counted_listed_and_warned_about(
    tmp_path: Path, client: Any
) -> None:
    async with web_stack(tmp_path, vendors=("a2e",)) as stack:
        fake = stack.vendors["a2e"]
        fake.after_booking = "error"  # A2E books the room, then answers 500
        with pytest.raises(ProviderUnavailable):
            await stack.start("a2e")
        await stack.service.drain_starts(5)
        async with client.get(stack.url + "/metrics") as resp:
            body = await resp.text()
        assert "avatarbot_bookings_in_doubt 1.0" in body
        [booking] = await stack.store.list_bookings(("in_doubt",))
        assert f"avatarbot_bookings_in_doubt_likely_charge {float(booking.likely_charge)}" in body
        assert booking.likely_charge > 0
        db = tmp_path / next(n for n in os.listdir(tmp_path) if n.endswith(".db"))

    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    env["DATABASE_PATH"] = str(db)
    _, listed, _ = await run(env, "sessions", "list", cwd=tmp_path)
    assert f"{booking.session_id}  IN DOUBT discord:1" in listed
    assert "billed to operator" in listed
    _, doctor, _ = await run(env, "doctor", cwd=tmp_path)
    assert "warn database" in doctor and "1 vendor booking(s) in doubt" in doctor
