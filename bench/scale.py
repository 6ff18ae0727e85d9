"""Issue 15's scale figures in one process: channel lookups, /healthz, /metrics, the reaper's
loop stall, memory per session and shutdown, at growing numbers of live sessions.

``bench/system.py`` measures the product from outside; this script spreads the sessions over
workspaces of 50 the same way (``bench/workspaces.py``: a workspace holds at most 50) and drives
the real core, store, reaper and web app directly:
the real ``SessionService`` on a real SQLite file, the Slack command's ``channel_session``, the
web app over loopback HTTP, the composition root's ``_end_sessions``. The vendor is the test
suite's in-memory fake provider (``tests/fakes/provider.py``), with a 100 ms stop at shutdown.

Anchors from the same run: each latency's value at the first level (the ratio is the growth),
and for the stall the largest loop lag over the same span with the reaper not ticking.

    PYTHONPATH=. .venv/bin/python bench/scale.py [--levels 10,500,5000] [--shutdown 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
from aiohttp.test_utils import TestServer

from bench.looplag import LoopLag
from bench.workspaces import PER_WORKSPACE, prepare_tenant, team_of, workspaces_for
from bot.app import Services, _end_sessions
from bot.core.events import EventHub
from bot.core.links import ViewerLinks
from bot.core.models import ChatBinding, ComponentStatus
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService, StartCommand
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.slack.commands import channel_session
from bot.settings import Settings
from bot.storage import SqliteSlackInstallStore, SqliteStore
from tests.fakes.provider import FakeProvider
from web.app import create_app


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Bench:
    def __init__(self, db: Path, stop_delay: float) -> None:
        self.db = db
        self.stop_delay = stop_delay
        self.count = 0

    async def start(self) -> None:
        self.hub = EventHub()
        self.vendor = FakeProvider(self.hub, lists_sessions=False, survives_restart=False)
        self.store = await SqliteStore.open(self.db)
        self.service = SessionService(store=self.store, providers={"fake": self.vendor},
                                      events=self.hub)
        self.reaper = SessionReaper(self.service)
        self.settings = Settings(_env_file=None)  # type: ignore[call-arg]
        app = create_app(service=self.service, links=ViewerLinks(b"k" * 32, "http://x"),
                         settings=self.settings,
                         status=[ComponentStatus(name="web", kind="web", enabled=True,
                                                 detail="bench")])
        self.server = TestServer(app)
        await self.server.start_server()
        self.http = aiohttp.ClientSession()
        self.adapter = SimpleNamespace(service=self.service, bindings=ChatBindings(self.store))

    async def stop(self) -> None:
        await self.http.close()
        await self.server.close()
        await self.store.close()

    async def grow(self, total: int) -> None:
        while self.count < total:
            i = self.count
            tenant = f"slack:{team_of(i)}"
            if i % PER_WORKSPACE == 0:
                await prepare_tenant(self.store, tenant)
            record = await self.service.start(StartCommand(
                tenant=tenant, user=f"U{i}", provider="fake", minutes=30))
            await self.store.bind_chat(ChatBinding(
                session_id=record.id, platform="slack", channel_id=f"C{i}",
                thread_id=f"C{i}:1.{i}"))
            self.count += 1

    async def channel_ms(self, n: int = 40) -> list[float]:
        out = []
        for k in range(n):
            i = (k * 7919) % self.count
            call = SimpleNamespace(adapter=self.adapter, tenant=f"slack:{team_of(i)}",
                                   channel=f"C{i}")
            t = time.perf_counter()
            await channel_session(call)  # type: ignore[arg-type]
            out.append((time.perf_counter() - t) * 1000)
        return out

    async def get_ms(self, path: str, n: int = 40) -> list[float]:
        out = []
        url = self.server.make_url(path)
        for _ in range(n):
            t = time.perf_counter()
            async with self.http.get(url) as resp:
                await resp.read()
                assert resp.status == 200
            out.append((time.perf_counter() - t) * 1000)
        return out

    async def stall_ms(self, ticks: int = 5) -> tuple[float, float, float]:
        """(first tick's wall ms, median over later ticks of each one's worst loop lag, the same
        median over equally long idle windows).

        The first tick tends every session started since the last level (each one is due once
        at its start); the later ones are the steady state. Medians, because one stray spike of
        the shared machine would otherwise be the figure.
        """
        t = time.perf_counter()
        await self.reaper.tick()
        first = (time.perf_counter() - t) * 1000
        lags, idles = [], []
        for _ in range(ticks):
            with LoopLag() as lag:
                t = time.perf_counter()
                await self.reaper.tick()
                took = time.perf_counter() - t
                await asyncio.sleep(0.005)
            lags.append(lag.worst * 1000)
            with LoopLag() as idle:
                await asyncio.sleep(took + 0.005)
            idles.append(idle.worst * 1000)
        return first, statistics.median(lags), statistics.median(idles)

    async def shutdown_s(self) -> float:
        self.vendor.stop_delay = self.stop_delay
        async with httpx.AsyncClient() as http:
            services = Services(
                self.settings, http, self.store, self.hub, {"fake": self.vendor}, self.service,
                self.reaper, ViewerLinks(b"k" * 32, "http://x"),
                slack_installs=SqliteSlackInstallStore(self.store),
                tenants=TenantService(self.store), bindings=ChatBindings(self.store))
            t = time.perf_counter()
            await _end_sessions(services)
            return time.perf_counter() - t


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


async def run(args: Any) -> None:
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp) / "scale.db", 0.1)
        await bench.start()
        base_rss, base_n = rss_kb(), 0
        first: dict[str, float] = {}
        try:
            for level in levels:
                await bench.grow(level)
                await asyncio.sleep(0.5)
                rss = rss_kb()
                per = (rss - base_rss) / max(1, level - base_n)
                base_rss, base_n = rss, level
                figures = {
                    "channel /avatar link p50 ms": p50(await bench.channel_ms()),
                    "/healthz p50 ms": p50(await bench.get_ms("/healthz")),
                    "/metrics p50 ms": p50(await bench.get_ms("/metrics")),
                }
                tick_first, lag, idle = await bench.stall_ms()
                print(f"\n== {level} live sessions ({len(workspaces_for(level))} workspaces)")
                print("figure | anchor (first level) | now | ratio")
                for name, value in figures.items():
                    anchor = first.setdefault(name, value)
                    print(f"{name} | {anchor:.2f} | {value:.2f} | x{value / anchor:.2f}")
                print(f"reaper: first tick {tick_first:.1f} ms (tends the sessions just started);"
                      f" loop lag during a tick, median of 5: {lag:.2f} ms | idle anchor "
                      f"{idle:.2f} ms")
                print(f"RSS per session added: {per:.1f} KB (RSS {rss / 1024:.0f} MB)"
                      + (" [since boot: warm-up included]" if level == levels[0] else ""))
            if args.shutdown:
                took = await bench.shutdown_s()
                print(f"\nshutdown of {bench.count} sessions, 100 ms per vendor stop: {took:.2f} s "
                      f"(one at a time would be >= {bench.count * 0.1:.0f} s)")
                print(f"ledger verify: {await bench.store.verify() or 'ok'}")
        finally:
            await bench.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="10,500")
    parser.add_argument("--shutdown", action="store_true", help="time a shutdown at the end")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
