"""The fake A2E vendor of ``bench/system.py``, in its own process so that serving the forwards
does not share an event loop (and a core's worth of Python) with the process sending the load.
Not a benchmark on its own.

It is ``tests/fakes/a2e.py`` with two additions for the bench, on paths A2E does not have:

* every ``ask`` is noted with its text and the time it arrived (``time.monotonic()``, the
  system-wide ``CLOCK_MONOTONIC`` on Linux, so the bench can compare it with its own send times);
  ``GET /bench/arrivals?from=N`` returns the notes from the N-th on;
* ``POST /bench/stop-delay {"seconds": s}`` makes each ``leave`` take ``s`` seconds;
  ``GET /bench/rooms`` lists the booked rooms (in booking order) and those still open.

    python bench/system_vendor.py     # prints "ready <base url>" once it listens on 127.0.0.1
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from child import until_stdin_closes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.fakes

from tests.fakes.a2e import FakeA2E
from tests.fakes.vendor_base import body_of


class BenchA2E(FakeA2E):
    """The fake A2E, noting when each ``ask`` text arrives and slowing ``leave`` on demand."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(coins=10**12, **kw)
        self.arrivals: list[tuple[str, float]] = []
        self.stop_delay_s = 0.0

    def routes(self, router: web.UrlDispatcher) -> None:
        super().routes(router)
        router.add_get("/bench/arrivals", self._arrivals)
        router.add_get("/bench/rooms", self._rooms)
        router.add_post("/bench/stop-delay", self._stop_delay)

    def authorized(self, request: web.Request) -> bool:
        return request.path.startswith("/bench/") or super().authorized(request)

    async def _ask(self, request: web.Request) -> web.Response:
        self.arrivals.append((str(body_of(request).get("text")), time.monotonic()))
        return await super()._ask(request)

    async def _leave(self, request: web.Request) -> web.Response:
        if self.stop_delay_s:
            await asyncio.sleep(self.stop_delay_s)
        return await super()._leave(request)

    async def _arrivals(self, request: web.Request) -> web.Response:
        start = int(request.query.get("from", "0"))
        return web.json_response(self.arrivals[start:])

    async def _rooms(self, request: web.Request) -> web.Response:
        return web.json_response({"rooms": list(self.rooms), "open": self.open_rooms()})

    async def _stop_delay(self, request: web.Request) -> web.Response:
        self.stop_delay_s = float(body_of(request).get("seconds", 0.0))
        return web.json_response({"ok": True})


async def main() -> None:
    fake = BenchA2E()
    await fake.start()
    print(f"ready {fake.url}", flush=True)
    await until_stdin_closes()
    await fake.close()


if __name__ == "__main__":
    asyncio.run(main())
