"""Per-session queues: each session's messages reach its vendor one at a time, in order.

A flood of messages on one session waits in that session's own bounded queue, so it never
delays another session and never piles up unbounded work in the process. A message that finds
its session's queue full is refused at once with a plain reason (``SessionBusy``) instead of
being dropped or timing out later; one that was accepted is sent, however long it waited
(docs/backpressure.md).

A message takes its place in the queue (``reserve``) before anything else is awaited, so
concurrent look-ups finishing out of order (a pool of database connections) cannot reorder it;
it is sent once its job is filled in (``Place.run``) and every place before it is done.

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
from typing import Any

from bot.core.errors import SessionBusy

log = logging.getLogger(__name__)

DEFAULT_QUEUE_LIMIT = 50
# Vendor calls being sent at once over all sessions. Under a backlog every session's worker
# would otherwise send at once, and hundreds of answers arriving together keep the event loop
# from the acknowledgements a platform owes (docs/backpressure.md); the rest wait their turn.
DEFAULT_SENDING = 64
__all__ = ["DEFAULT_QUEUE_LIMIT", "DEFAULT_SENDING", "Place", "SessionBusy", "SessionQueues"]


class Place:
    """A message's place in its session's queue; ``fill`` fills it, ``drop`` gives it up."""

    def __init__(self, *, full: int | None = None) -> None:
        self._full = full  # the queue was full (this many ahead): ``fill`` refuses
        # What the lane's worker reads: the job, whether the place was filled (or dropped), and
        # where the result goes.
        self.job: Callable[[], Awaitable[Any]] | None = None
        self.filled = asyncio.Event()
        self.result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def fill(self, avatar: str, job: Callable[[], Awaitable[Any]]) -> None:
        """Put ``job`` in this place, at once: from now on it is queued (or ``SessionBusy``).

        Split from ``wait`` so that a platform can acknowledge a message as soon as it is queued
        and wait for the vendor afterwards (docs/backpressure.md).
        """
        if self._full is not None:
            raise SessionBusy(avatar, self._full)
        self.job = job
        self.filled.set()

    async def wait(self) -> Any:
        """The filled job's result, once its turn came and it ran.

        Cancelling the wait gives the job up if it has not started.
        """
        return await self.result

    def drop(self) -> None:
        """Give the place up (the message was refused before being sent); idempotent."""
        if self._full is None and not self.filled.is_set():
            self.filled.set()
            self.result.cancel()


@dataclass
class _Lane:
    places: deque[Place] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    running: bool = False


class SessionQueues:
    """Run each session's jobs one after another, in the order their places were reserved.

    Args:
        limit: most messages one session may have queued or being sent; more are refused.
        sending: most vendor calls being sent at once, over all sessions.
    """

    def __init__(self, limit: int = DEFAULT_QUEUE_LIMIT, sending: int = DEFAULT_SENDING) -> None:
        if limit < 1:
            raise ValueError("a session queue must hold at least one message")
        if sending < 1:
            raise ValueError("at least one vendor call must be allowed at a time")
        self.limit = limit
        self._sending = asyncio.Semaphore(sending)
        self._lanes: dict[str, _Lane] = {}

    def waiting(self, session_id: str) -> int:
        """Messages of ``session_id`` queued or being sent now."""
        lane = self._lanes.get(session_id)
        return 0 if lane is None else len(lane.places) + lane.running

    def reserve(self, session_id: str) -> Place:
        """Take the next place in the session's queue, at once (no await).

        When the queue is full the place is a refusal: its ``fill`` raises ``SessionBusy`` (named
        after the avatar, which the caller knows by then).
        """
        lane = self._lanes.setdefault(session_id, _Lane())
        ahead = len(lane.places) + lane.running
        if ahead >= self.limit:
            return Place(full=ahead)
        place = Place()
        lane.places.append(place)
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._work(session_id, lane),
                                              name=f"session-queue-{session_id}")
        return place

    async def _work(self, session_id: str, lane: _Lane) -> None:
        try:
            while lane.places:
                place = lane.places[0]
                await place.filled.wait()
                if place.result.done() or place.job is None:  # dropped, or its caller went away
                    lane.places.popleft()
                    continue
                async with self._sending:  # still counted as queued while it waits here
                    lane.places.popleft()
                    future, job = place.result, place.job
                    if future.done() or job is None:
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
            for place in lane.places:
                place.result.cancel()
            lane.places.clear()
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
