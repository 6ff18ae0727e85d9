"""The intake of chat messages: look-ups bounded in number, in arrival order per conversation.

Before a thread message can be queued for its avatar (``SessionService.enqueue``) a platform
looks things up: which session owns the thread, the workspace's token, people's names. Started
all at once for a backlog of thousands of messages, those look-ups fill the event loop with
runnable work, and the acknowledgement a platform owes (Slack: 3 s) waits behind all of it.
Through the intake at most ``limit`` messages are being looked up at a time; the rest wait,
costing nothing, until a slot frees (docs/backpressure.md).

Order: a message takes its turn (``arrive``) at once when it comes in, before anything is
awaited, and the messages of one conversation (a thread) go through their look-ups one after
another in that order, so look-ups that finish out of order cannot swap two messages on their
way into the session's queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

LOOKUPS_IN_FLIGHT = 16

__all__ = ["LOOKUPS_IN_FLIGHT", "Intake", "Turn"]


class Turn:
    """One message's turn in its conversation; ``async with turn:`` runs its look-ups.

    Entering waits until the conversation's earlier messages are done and a look-up slot is
    free; leaving frees both. A turn that is never entered must be ``finish``-ed (idempotent), or
    the conversation's later messages would wait for it.
    """

    def __init__(self, intake: Intake, key: str) -> None:
        self._intake = intake
        self._key = key
        self.ready = asyncio.Event()  # first of its conversation
        self._slot = False
        self.finished = False

    async def __aenter__(self) -> Turn:
        try:
            await self.ready.wait()
            await self._intake.slots.acquire()
        except BaseException:
            self.finish()
            raise
        self._slot = True
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.finish()

    def finish(self) -> None:
        """Done with the look-ups (or never to do them): the conversation's next message goes."""
        if self._slot:
            self._slot = False
            self._intake.slots.release()
        if self.finished:
            return
        self.finished = True
        self._intake.leave(self._key, self)


class Intake:
    """Turns per conversation, and the slots their look-ups share.

    Args:
        limit: most messages being looked up at once (over all conversations).
    """

    def __init__(self, limit: int = LOOKUPS_IN_FLIGHT) -> None:
        if limit < 1:
            raise ValueError("the intake needs at least one look-up slot")
        self.slots = asyncio.Semaphore(limit)
        self._lanes: dict[str, deque[Turn]] = {}

    def arrive(self, key: str) -> Turn:
        """A message of conversation ``key`` came in: its turn, behind the earlier ones."""
        turn = Turn(self, key)
        lane = self._lanes.setdefault(key, deque())
        lane.append(turn)
        if len(lane) == 1:
            turn.ready.set()
        return turn

    def waiting(self) -> int:
        """Messages that have a turn and are not done with it."""
        return sum(len(lane) for lane in self._lanes.values())

    def leave(self, key: str, turn: Turn) -> None:
        """``turn`` is done (``Turn.finish``): the next of its conversation goes."""
        lane = self._lanes.get(key)
        if lane is None:
            return
        head = bool(lane) and lane[0] is turn
        if head:
            lane.popleft()
        else:
            lane.remove(turn)  # given up before its turn came (rare: a dropped event)
        if not lane:
            del self._lanes[key]
        elif head:
            lane[0].ready.set()
