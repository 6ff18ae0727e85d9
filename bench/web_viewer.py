"""Viewer figures: page load to first decoded frame (real Chromium, real local avatar), and how fast
the WebSocket hub fans transcript events out to many pages.

Run: .venv/bin/python bench/web_viewer.py [pages] [events]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.web.conftest import chromium_args, ensure_bundles, guard_page, web_stack


async def first_frame(stack, browser, runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        record = await stack.start("local", minutes=2)
        page = await browser.new_page()
        await guard_page(page, stack.url)
        t0 = time.perf_counter()
        await page.goto(stack.link(record.id))
        await page.wait_for_function(
            "() => { const v = document.getElementById('video'); return v && v.videoWidth > 0; }",
            timeout=15_000)
        times.append((time.perf_counter() - t0) * 1000)
        await page.close()
        await stack.service.stop(record.id, "bench")
    return times


async def fanout(stack, pages: int, events: int) -> tuple[float, float]:
    record = await stack.start("local", minutes=2)
    link = stack.link(record.id).replace("http://", "ws://") + "/ws"
    async with aiohttp.ClientSession() as client:
        sockets = [await client.ws_connect(link) for _ in range(pages)]
        for ws in sockets:
            assert (await ws.receive_json())["type"] == "hello"

        async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
            seen = 0
            while seen < events:
                msg = await ws.receive_json()
                seen += msg["type"] == "transcript"

        t0 = time.perf_counter()
        readers = [asyncio.create_task(drain(ws)) for ws in sockets]
        from bot.core.events import Transcript

        for i in range(events):
            stack.events.publish(Transcript(session_id=record.id, speaker="avatar", text=f"l{i}"))
            if i % 64 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*readers)
        elapsed = time.perf_counter() - t0
        for ws in sockets:
            await ws.close()
    await stack.service.stop(record.id, "bench")
    return elapsed, pages * events / elapsed


async def main(pages: int, events: int) -> None:
    from playwright.async_api import async_playwright

    ensure_bundles()
    with tempfile.TemporaryDirectory() as tmp:
        async with web_stack(Path(tmp), vendors=(), local=True) as stack:
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                                  headless=True, args=chromium_args())
                times = await first_frame(stack, browser)
                await browser.close()
            print(f"page.goto -> first decoded frame (local avatar, {len(times)} runs): "
                  f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms")
            elapsed, rate = await fanout(stack, pages, events)
            print(f"hub fan-out: {events} transcript events to {pages} pages in {elapsed:.2f} s "
                  f"({rate:,.0f} messages/s delivered)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50,
                     int(sys.argv[2]) if len(sys.argv) > 2 else 200))
