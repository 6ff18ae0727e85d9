"""Child process for the crash test: starts sessions, says so, then waits to be killed.

Usage: python -m tests.core.crash_worker DB VENDOR_URL COUNT [hang]
"""

from __future__ import annotations

import asyncio
import sys

from bot.core.events import EventHub
from bot.core.service import SessionService, StartCommand
from bot.storage import SqliteStore
from tests.fakes.vendor_http import HttpFakeProvider

TENANT = "discord:42"


async def main(db: str, url: str, count: int, hang: bool) -> None:
    store = await SqliteStore.open(db)
    hub = EventHub()
    provider = HttpFakeProvider(url, survives_restart=False)
    service = SessionService(store=store, providers={provider.name: provider}, events=hub,
                             start_timeout_s=3600)
    await store.grant(TENANT, 1000, "test")
    await store.set_limits(TENANT, max_concurrent=50)
    if hang:
        print("ready", flush=True)
        await service.start(StartCommand(tenant=TENANT, user="u", minutes=5))
    for i in range(count):
        await service.start(StartCommand(tenant=TENANT, user=f"u{i}", minutes=5))
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), "hang" in sys.argv[4:]))
