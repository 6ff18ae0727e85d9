"""How long the event loop was kept from running: the lateness of a 1 ms sleep, at worst."""

from __future__ import annotations

import asyncio
import time


class LoopLag:
    """The largest lateness of a 1 ms sleep while in the ``with`` block (``worst``, seconds)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - t - 0.001)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
