"""Child process for the booking fault tests: books A2E rooms until it is killed.

Usage: python -m tests.core.booking_worker DB A2E_URL KEY [LOOPS]

At startup it reconciles what an earlier run left, as ``avatarbot run`` does, and prints
``reconciled`` (with LOOPS 0 it then exits). Each loop starts a session on A2E (the fake books
before it answers), says a line, and stops it; it prints ``start``/``live``/``said``/``stopped``
as it goes, so the test can kill it at a chosen point. SIGTERM is handled like ``avatarbot run``
does (``bot/app.py``): no new starts, the ones in flight are waited for (bounded), open sessions
are ended, then exit 0.
"""

from __future__ import annotations

import asyncio
import faulthandler
import signal
import sys

import httpx
from pydantic import SecretStr

from bot.core.bookings import BookingKeeper
from bot.core.errors import AvatarBotError
from bot.core.events import EventHub
from bot.core.models import Pricing
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService, StartCommand
from bot.providers.a2e import A2EProvider
from bot.storage import SqliteStore

TENANT = "discord:99"
PRICING = Pricing(credits_per_minute=10, granularity_s=60, minimum_s=60)


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


def say(word: str) -> None:
    print(word, flush=True)


async def main(db: str, url: str, key: str, loops: int) -> None:
    store = await SqliteStore.open(db)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)  # a stuck worker's tasks
    async with httpx.AsyncClient() as http:
        events = EventHub()
        prov = A2EProvider(api_key=SecretStr(key), http=http, events=events, pricing=PRICING,
                           base_url=url, timeout_s=5.0)
        service = SessionService(
            store=store, providers={"a2e": prov}, events=events, start_timeout_s=10.0,
            bookings=BookingKeeper(store, deployment_id="prod"),
        )
        await SessionReaper(service).reconcile()
        say("reconciled")
        if loops == 0:
            await store.close()
            return
        if not await store.tenant_exists(TENANT):
            await store.grant(TENANT, 100_000, "test")
        await store.set_limits(TENANT, max_concurrent=50, daily_user_credits=1_000_000)
        work = asyncio.create_task(_loop(service, loops))
        await asyncio.wait([work, asyncio.create_task(stopping.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            service.stop_accepting()
            await service.drain_starts(5.0)
            while not work.done():
                work.cancel()
                await asyncio.wait([work], timeout=1.0)
            await service.stop_all("the server shut down")
            say("shut down")
    await store.close()


async def _loop(service: SessionService, loops: int) -> None:
    for i in range(loops):
        say("start")
        try:
            record = await service.start(StartCommand(tenant=TENANT, user="u", minutes=1,
                                                      provider="a2e"))
        except AvatarBotError:
            say("refused")
            continue
        say("live")
        await service.say(record.id, f"line {i}")
        say("said")
        await service.stop(record.id)
        say("stopped")
    say("done")
    await asyncio.sleep(3600)


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # a stuck worker's stacks, for whoever runs it
    loops = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], loops))
