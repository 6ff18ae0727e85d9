"""A stop from another process reaches the open page: ``avatarbot run`` serves a playground session
to real Chromium while ``avatarbot sessions stop ID`` runs as a separate process on the same
SQLite file. The page turns to Ended within a second of the command, and the server's local
avatar stops rendering and drops its peers (its /metrics gauges go to zero)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.process import BIN, cli, free_port
from tests.web.conftest import DESKTOP, PHONE, guard_page, new_context, shot, until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

VENDOR_ENV = ("DISCORD_", "SLACK_", "A2E_", "AKOOL_", "HEYGEN_", "LIVEAVATAR_", "LLM_")


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} missing from /metrics")


async def test_cli_stop_ends_the_open_page_and_frees_the_local_avatar(
    tmp_path: Path, browser: Any
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(VENDOR_ENV)},
        "DATABASE_PATH": str(tmp_path / "cli-stop.db"), "PORT": str(port),
        "LOCAL_ALLOW_LOOPBACK": "true", "PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "avatarbot"), "run", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    contexts: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while "playground" not in (line := (await proc.stdout.readline()).decode()):
                assert line, "avatarbot run exited early"
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await http.get("/")  # the playground's visitor cookie
            started = await http.post("/playground/start", json={})
            assert started.status_code == 200, started.text
            session_id, url = started.json()["session_id"], started.json()["url"]

            # The host's page on a desktop and a second viewer on a phone.
            pages = {}
            for name, viewport, link in (("desktop", DESKTOP, base + url),
                                         ("phone", PHONE, base + url)):
                ctx = await new_context(browser, viewport)
                contexts.append(ctx)
                page = await ctx.new_page()
                await guard_page(page, base)
                await page.goto(link)
                await until(page, "window.avatarViewer.status === 'live'", 20_000)
                pages[name] = page
            assert await metric(http, "avatarbot_local_sessions") == 1
            assert await metric(http, "avatarbot_local_peers") == 2

            out = await cli(env, "sessions", "stop", session_id)
            stopped_at = time.monotonic()
            assert f"{session_id}: ended" in out
            for page in pages.values():
                await until(page, "window.avatarViewer.status === 'ended'", 1_000)
            took = time.monotonic() - stopped_at
            for name, page in pages.items():
                assert await page.text_content("#status") == "Ended"
                assert "stopped from the command line" in await page.text_content("#notice")
                await shot(page, f"cli-stop-ended-{name}")
            # The server's local avatar let go of the session at once, not at shutdown.
            assert await metric(http, "avatarbot_local_sessions") == 0
            assert await metric(http, "avatarbot_local_peers") == 0
            print(f"pages ended {took:.2f} s after the CLI exited")
    finally:
        for ctx in contexts:
            await ctx.close()
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0, rest.decode()[-2000:]
    assert "ledger ok" in await cli(env, "ledger", "verify")
