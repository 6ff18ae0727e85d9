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
from typing import Any, Literal, Protocol

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

# Every event class by its ``kind`` tag: what a bus between processes decodes with.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["kind"].default: cls
    for cls in (StateChanged, Transcript, Warning, Ended, Relay, VendorEnded)
}


class EventBus(Protocol):
    """Carries this process's events to the other workers (``bot/cluster``, over Redis).

    ``send`` must not block: the event has already reached this process's subscribers. Events
    from other workers come back in through ``EventHub.deliver_remote``.
    """

    def send(self, event: AnyEvent) -> None:
        """Queue ``event`` for the other workers."""
        ...


class EventHub:
    """In-process publish/subscribe keyed by session id (``None`` subscribes to all sessions).

    With several workers, ``bus`` mirrors what is published here to the others, and their events
    arrive through ``deliver_remote``. A subscriber whose work must happen once in the cluster,
    not once per worker (keeping transcript lines, say), subscribes with ``remote=False``.
    """

    def __init__(self, queue_size: int = 256) -> None:
        from bot.core.relay import RelayOutboxes  # it publishes on this hub

        self._queue_size = queue_size
        self._subs: dict[str | None, set[asyncio.Queue[AnyEvent]]] = {}
        self._local_only: set[asyncio.Queue[AnyEvent]] = set()
        # A subscriber's filter: its queue gets (and its task wakes for) only what it wants.
        self._wants: dict[asyncio.Queue[AnyEvent], Callable[[AnyEvent], bool]] = {}
        # Messages for viewer pages to send into vendors' media rooms, per session.
        self.relay = RelayOutboxes(self)
        # (callback, whether it hears other workers' events too)
        self._listeners: list[tuple[Callable[[AnyEvent], None], bool]] = []
        self.bus: EventBus | None = None

    def listen(self, callback: Callable[[AnyEvent], None], *, remote: bool = True) -> None:
        """Call ``callback(event)`` synchronously on every event, before any queue sees it.

        For in-memory indexes that must never miss an event (gauges, the reaper's due times):
        a queue subscriber can fall behind and lose events, a listener cannot. Callbacks must
        be quick and must not raise. Events from other workers (``deliver_remote``) reach them
        too, so counts kept this way cover the whole cluster, unless ``remote=False``.
        """
        self._listeners.append((callback, remote))

    def publish(self, event: AnyEvent) -> None:
        """Deliver ``event`` to every subscriber of its session and to global subscribers."""
        self._fanout(event, remote=False)
        if self.bus is not None:
            self.bus.send(event)

    def deliver_remote(self, event: AnyEvent) -> None:
        """Deliver an event another worker published (it is not sent on again).

        A session that ended elsewhere has its relay outbox here dropped as well (nothing is
        sent into an ended session; this worker may have been its home).
        """
        self._fanout(event, remote=True)
        if isinstance(event, Ended):
            self.relay.forget(event.session_id)

    def _fanout(self, event: AnyEvent, *, remote: bool) -> None:
        for listener, hears_remote in self._listeners:
            if remote and not hears_remote:
                continue
            try:
                listener(event)
            except Exception:  # one broken index must not stop the others
                log.exception("event listener failed")
        for key in (event.session_id, None):
            for queue in self._subs.get(key, ()):
                if remote and queue in self._local_only:
                    continue
                want = self._wants.get(queue)
                if want is not None and not want(event):
                    continue
                if queue.full():
                    queue.get_nowait()
                    log.warning("slow event subscriber; dropped an event", extra={"session": key})
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(
        self, session_id: str | None = None, *, remote: bool = True,
        want: Callable[[AnyEvent], bool] | None = None,
    ) -> AsyncIterator[asyncio.Queue[AnyEvent]]:
        """Yield a queue receiving the session's events until the block exits.

        ``remote=False`` leaves out events published by other workers; ``want`` (quick, must
        not raise) leaves out the events it answers False for, so a subscriber that acts on a
        few kinds of event is not woken for every thread message (issue 15).
        """
        queue: asyncio.Queue[AnyEvent] = asyncio.Queue(self._queue_size)
        self._subs.setdefault(session_id, set()).add(queue)
        if not remote:
            self._local_only.add(queue)
        if want is not None:
            self._wants[queue] = want
        try:
            yield queue
        finally:
            self._local_only.discard(queue)
            self._wants.pop(queue, None)
            subs = self._subs.get(session_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subs[session_id]

    def subscriber_count(self, session_id: str | None = None) -> int:
        """How many subscribers listen on ``session_id``."""
        return len(self._subs.get(session_id, ()))
