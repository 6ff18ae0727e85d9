"""Serve a fake's aiohttp app on a free port of 127.0.0.1 (every fake server uses this)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve_local(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start ``app`` on 127.0.0.1 with an ephemeral port; return its runner and the port."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]
