"""Session events and the in-process hub that fans them out.

The session service and the providers publish; the web viewer hub and the chat adapters
subscribe. Publishing never blocks: a subscriber that falls behind loses its oldest events
and is told so with a ``Dropped`` marker, the publisher never waits. The hub also carries the
relay outboxes (``relay``) that providers driven through the viewer page queue messages in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.core.models import SessionState, SessionSummary, utcnow

log = logging.getLogger(__name__)


class Event(BaseModel):
    """Base of every session event."""

    session_id: str
    at: float = Field(default_factory=lambda: utcnow().timestamp())


class StateChanged(Event):
    """The session moved to a new state."""

    kind: Literal["state"] = "state"
    state: SessionState
    reason: str | None = None
    seconds_left: int = 0


class Transcript(Event):
    """A line of the conversation: what a person asked or had said, or what the avatar said."""

    kind: Literal["transcript"] = "transcript"
    speaker: Literal["user", "avatar", "system"]
    text: str
    author: str | None = None
    # "ask", "say", or None for the avatar's own words
    intent: str | None = None
    final: bool = True


class Warning(Event):  # noqa: A001 - the domain word; shadowing the builtin is intended here
    """Something people should know before it happens ("2 minutes left")."""

    kind: Literal["warning"] = "warning"
    text: str
    seconds_left: int | None = None


class Ended(Event):
    """The session ended; the summary says how long and what it cost."""

    kind: Literal["ended"] = "ended"
    summary: SessionSummary


class Relay(Event):
    """The session's relay outbox (``EventHub.relay``, ``bot/core/relay.py``) changed.

    A wake-up for the web hub: it hands what is ready to the relay page. The messages themselves
    stay in the outbox until the page acknowledges them; ``messages`` is left empty.
    """

    kind: Literal["relay"] = "relay"
    messages: list[dict[str, Any]] = Field(default_factory=list)
    bytes_per_second: int = 0
    # LiveKit data topic to publish on (LiveAvatar: "agent-control"); Agora has no topics.
    topic: str | None = None


class VendorEnded(Event):
    """The vendor ended the session on its own (credits, idle timeout, an error).

    Published by a provider; the reaper ends the session with ``reason`` (plain words).
    """

    kind: Literal["vendor_ended"] = "vendor_ended"
    reason: str


AnyEvent = StateChanged | Transcript | Warning | Ended | Relay | VendorEnded


class EventHub:
    """In-process publish/subscribe keyed by session id (``None`` subscribes to all sessions)."""

    def __init__(self, queue_size: int = 256) -> None:
        from bot.core.relay import RelayOutboxes  # it publishes on this hub

        self._queue_size = queue_size
        self._subs: dict[str | None, set[asyncio.Queue[AnyEvent]]] = {}
        # Messages for viewer pages to send into vendors' media rooms, per session.
        self.relay = RelayOutboxes(self)
        self._listeners: list[Callable[[AnyEvent], None]] = []

    def listen(self, callback: Callable[[AnyEvent], None]) -> None:
        """Call ``callback(event)`` synchronously on every publish, before any queue sees it.

        For in-memory indexes that must never miss an event (gauges, the reaper's due times):
        a queue subscriber can fall behind and lose events, a listener cannot. Callbacks must
        be quick and must not raise.
        """
        self._listeners.append(callback)

    def unlisten(self, callback: Callable[[AnyEvent], None]) -> None:
        """Stop calling ``callback``."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def publish(self, event: AnyEvent) -> None:
        """Deliver ``event`` to every subscriber of its session and to global subscribers."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # one broken index must not stop the others
                log.exception("event listener failed")
        for key in (event.session_id, None):
            for queue in self._subs.get(key, ()):
                if queue.full():
                    queue.get_nowait()
                    log.warning("slow event subscriber; dropped an event", extra={"session": key})
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(
        self, session_id: str | None = None
    ) -> AsyncIterator[asyncio.Queue[AnyEvent]]:
        """Yield a queue receiving the session's events until the block exits."""
        queue: asyncio.Queue[AnyEvent] = asyncio.Queue(self._queue_size)
        self._subs.setdefault(session_id, set()).add(queue)
        try:
            yield queue
        finally:
            subs = self._subs.get(session_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subs[session_id]

    def subscriber_count(self, session_id: str | None = None) -> int:
        """How many subscribers listen on ``session_id``."""
        return len(self._subs.get(session_id, ()))
