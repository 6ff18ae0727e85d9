"""Per-session queues: each session's messages reach its vendor one at a time, in order.

A flood of messages on one session waits in that session's own bounded queue, so it never
delays another session and never piles up unbounded work in the process. A message that finds
its session's queue full is refused at once with a plain reason (``SessionBusy``) instead of
being dropped or timing out later; one that was accepted is sent, however long it waited
(docs/backpressure.md).

A queue's worker task exists only while the queue holds something, so thousands of quiet
sessions cost no task at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.core.errors import SessionBusy

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_QUEUE_LIMIT = 50
__all__ = ["DEFAULT_QUEUE_LIMIT", "SessionBusy", "SessionQueues"]


@dataclass
class _Lane:
    jobs: deque[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = field(
        default_factory=deque)
    worker: asyncio.Task[None] | None = None
    running: bool = False


class SessionQueues:
    """Run each session's jobs one after another, in the order they were queued.

    Args:
        limit: most jobs one session may have queued or running; more are refused.
    """

    def __init__(self, limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        if limit < 1:
            raise ValueError("a session queue must hold at least one message")
        self.limit = limit
        self._lanes: dict[str, _Lane] = {}

    def waiting(self, session_id: str) -> int:
        """Jobs of ``session_id`` queued or running now."""
        lane = self._lanes.get(session_id)
        return 0 if lane is None else len(lane.jobs) + lane.running

    async def run(self, session_id: str, avatar: str, job: Callable[[], Awaitable[T]]) -> T:
        """Queue ``job`` behind the session's earlier ones and return its result.

        Raises:
            SessionBusy: the session's queue is full; ``job`` was not queued.
        """
        lane = self._lanes.setdefault(session_id, _Lane())
        ahead = len(lane.jobs) + lane.running
        if ahead >= self.limit:
            raise SessionBusy(avatar, ahead)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        lane.jobs.append((job, future))
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._work(session_id, lane),
                                              name=f"session-queue-{session_id}")
        # The caller going away (a cancelled handler) does not take the job back once it runs:
        # a message half-sent must finish; one not yet started is skipped.
        return await future

    async def _work(self, session_id: str, lane: _Lane) -> None:
        try:
            while lane.jobs:
                job, future = lane.jobs.popleft()
                if future.cancelled():
                    continue
                lane.running = True
                try:
                    result = await job()
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(result)
                finally:
                    lane.running = False
        finally:
            for _, future in lane.jobs:
                future.cancel()
            lane.jobs.clear()
            if self._lanes.get(session_id) is lane:
                del self._lanes[session_id]

    async def aclose(self) -> None:
        """Cancel every worker (shutdown); callers still waiting get ``CancelledError``."""
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
