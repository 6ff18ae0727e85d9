"""The relay outbox: messages a viewer page must send into the vendor's media room.

Some avatars are reachable only inside their RTC room (AKool's Agora data stream, LiveKit data
for LiveAvatar); the bot has no RTC client, so the viewer page that holds the room sends for us
(``docs/browser.md``, "The relay"). What a provider hands over is kept here, per session, until
the relay tab acknowledges that the SDK's send resolved:

- a relayed message is a provider-specific ``payload`` plus an ``id`` given here; the page's
  transport-specific sender sends the payload, and the page remembers which ids it has sent so
  that a message re-handed after a reload, a reconnect or a takeover is never sent twice;
- messages go out in order; a ``barrier`` message (AKool's ``set-params``) holds back the ones
  after it until the vendor confirms it (``confirm``), and is handed out again when no
  confirmation comes in time;
- nothing is handed to a page before it says it has joined the room (the web hub decides that);
- the outbox is bounded (``RelayOutboxFull``); while no relay page is present the people in the
  thread are told once (a ``Warning`` event), and messages that wait longer than ``max_wait_s``
  are dropped with one notice that says which.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.core.errors import LimitReached

if TYPE_CHECKING:
    from bot.core.events import EventHub

log = logging.getLogger(__name__)

MAX_QUEUED = 200  # messages (chunks and commands) per session
NOTICE_AFTER_S = 5.0  # how long messages wait for a relay page before the thread is told
CONFIRM_TIMEOUT_S = 3.0  # how long a barrier waits for the vendor before it is handed again
TICK_S = 0.25
LABEL_CHARS = 60


class RelayOutboxFull(LimitReached):
    """Too many messages are waiting for the viewer page; nothing was queued."""


@dataclass(frozen=True)
class RelayConfig:
    """What the page needs to send a session's messages: the vendor's limits, in one place.

    ``max_message_bytes`` and ``bytes_per_second`` count encoded bytes (UTF-8 of what the page
    sends); ``topic`` names the data topic on transports that have them (LiveKit).
    """

    max_message_bytes: int
    bytes_per_second: int
    topic: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The form the page receives."""
        return {"max_message_bytes": self.max_message_bytes,
                "bytes_per_second": self.bytes_per_second, "topic": self.topic}


@dataclass
class RelayItem:
    """One message a provider wants sent into the room.

    Args:
        payload: the vendor's message, a JSON object; the page sends it JSON-encoded, in UTF-8
            where the transport takes bytes.
        barrier: later messages wait until the vendor confirms this one (``confirm(key)``).
        key: the name the vendor's confirmation carries (AKool: the command's ``mid``).
        on_sent: called once the relay page acknowledged the send.
    """

    payload: dict[str, Any]
    barrier: bool = False
    key: str | None = None
    on_sent: Callable[[], None] | None = None


@dataclass(eq=False)
class _Entry:
    id: str
    item: RelayItem
    group: int
    queued_at: float
    holder: str | None = None  # the page it is handed to now
    handed_to: set[str] = field(default_factory=set)  # pages that may acknowledge it
    sent: bool = False
    sent_at: float = 0.0


@dataclass(eq=False)
class _Outbox:
    session_id: str
    config: RelayConfig
    entries: list[_Entry] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)  # groups with a message sent already
    told: bool = False  # the "waiting" notice went out during this absence
    timer: asyncio.TimerHandle | None = None


class RelayOutboxes:
    """Every session's relay outbox (one per process, ``EventHub.relay``).

    Args:
        events: where notices (``Warning``) and wake-ups (``Relay``) are published.
        max_wait_s: messages still unsent after this long are dropped (setting
            ``RELAY_MAX_WAIT_S``).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, events: EventHub, *, max_wait_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._events = events
        self.max_wait_s = max_wait_s
        self.notice_after_s = NOTICE_AFTER_S
        self.confirm_timeout_s = CONFIRM_TIMEOUT_S
        self.max_queued = MAX_QUEUED
        self.clock = clock
        self._boxes: dict[str, _Outbox] = {}
        self._present: set[str] = set()  # sessions whose relay page has joined the room
        # Ids carry a per-process prefix: a restarted server never reuses an id a page has sent.
        self._epoch = secrets.token_hex(3)
        self._ids = itertools.count(1)
        self._groups = itertools.count(1)
        # How to name a session's avatar in notices (the web hub sets it; it knows the store).
        self.avatar_name: Callable[[str], Awaitable[str | None]] | None = None
        self._notices: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ provider side
    def put(self, session_id: str, items: list[RelayItem], *, label: str,
            config: RelayConfig) -> list[str]:
        """Queue ``items`` (one user message: all or none) and return their ids.

        Raises:
            RelayOutboxFull: the session already has too many messages waiting.
        """
        box = self._boxes.get(session_id)
        if box is None:
            box = self._boxes[session_id] = _Outbox(session_id, config)
        box.config = config
        if len(box.entries) + len(items) > self.max_queued:
            raise RelayOutboxFull(
                f"{len(box.entries)} messages are still waiting to reach the avatar; "
                "wait until the viewer page has sent them, then try again."
            )
        now = self.clock()
        group = next(self._groups)
        box.labels[group] = _label(label)
        entries = [_Entry(f"{self._epoch}-{next(self._ids)}", item, group, now) for item in items]
        box.entries.extend(entries)
        self._wake(box)
        return [e.id for e in entries]

    def queued(self, session_id: str) -> list[dict[str, Any]]:
        """Payloads not yet confirmed sent (providers read their pending commands from it)."""
        box = self._boxes.get(session_id)
        return [e.item.payload for e in box.entries] if box else []

    def confirm(self, session_id: str, key: str | None) -> bool:
        """The vendor confirmed the barrier named ``key`` (``None``: the oldest one)."""
        box = self._boxes.get(session_id)
        entry = self._barrier(box, key)
        if box is None or entry is None:
            return False
        box.entries.remove(entry)
        self._finish(box, entry)
        self._wake(box)
        return True

    def fail(self, session_id: str, key: str | None, why: str) -> bool:
        """The vendor refused the barrier ``key``: drop its whole message, with a notice."""
        box = self._boxes.get(session_id)
        entry = self._barrier(box, key)
        if box is None or entry is None:
            return False
        label = box.labels.get(entry.group, "")
        box.entries = [e for e in box.entries if e.group != entry.group]
        box.labels.pop(entry.group, None)
        box.started.discard(entry.group)
        self._publish_warning(session_id, f"{why} So this was not sent: {label}")
        self._wake(box)
        return True

    def forget(self, session_id: str) -> None:
        """The session ended: drop its outbox."""
        box = self._boxes.pop(session_id, None)
        self._present.discard(session_id)
        if box is not None and box.timer is not None:
            box.timer.cancel()

    # ------------------------------------------------------------------ page side (web hub)
    def config(self, session_id: str) -> RelayConfig | None:
        """The relay config of a session that has relayed anything."""
        box = self._boxes.get(session_id)
        return box.config if box else None

    def set_present(self, session_id: str, present: bool) -> None:
        """Whether a relay page has joined the room (the hub calls this on join and leave)."""
        if present:
            self._present.add(session_id)
        else:
            self._present.discard(session_id)
        box = self._boxes.get(session_id)
        if box is not None and present:
            box.told = False

    def take(self, session_id: str, page: str) -> list[tuple[str, dict[str, Any]]]:
        """The next messages for relay page ``page``: ``(id, payload)`` in order.

        Stops after a barrier that is not sent yet, before anything behind a barrier that is
        sent but not confirmed, and before a message another page still holds (it may be
        sending it right now; ``release`` gives it back).
        """
        box = self._boxes.get(session_id)
        if box is None:
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        for entry in box.entries:
            if entry.item.barrier and entry.sent:
                break  # waiting for the vendor's confirmation
            if entry.holder is not None and entry.holder != page:
                break
            if not entry.sent and entry.holder is None:
                entry.holder = page
                entry.handed_to.add(page)
                out.append((entry.id, entry.item.payload))
            if entry.item.barrier:
                break
        return out

    def acked(self, session_id: str, page: str, ids: list[str]) -> int:
        """Page ``page`` says the SDK sent ``ids``; return how many were ours to acknowledge."""
        box = self._boxes.get(session_id)
        if box is None:
            return 0
        wanted = set(ids)
        count = 0
        now = self.clock()
        for entry in list(box.entries):
            if entry.id not in wanted or entry.sent or page not in entry.handed_to:
                continue
            count += 1
            entry.sent, entry.sent_at, entry.holder = True, now, None
            box.started.add(entry.group)
            if entry.item.on_sent is not None:
                try:
                    entry.item.on_sent()
                except Exception:
                    log.exception("a relay acknowledgement handler failed",
                                  extra={"session": session_id})
            if not entry.item.barrier:
                box.entries.remove(entry)
                self._finish(box, entry)
        self._wake(box)
        return count

    def release(self, session_id: str, page: str) -> None:
        """Page ``page`` stopped relaying: what it held and did not send goes to the next one."""
        box = self._boxes.get(session_id)
        if box is None:
            return
        for entry in box.entries:
            if entry.holder == page and not entry.sent:
                entry.holder = None
        self._wake(box)

    def waiting(self, session_id: str) -> int:
        """How many messages of a session are not sent yet."""
        box = self._boxes.get(session_id)
        return sum(1 for e in box.entries if not e.sent) if box else 0

    # ------------------------------------------------------------------ internals
    def _barrier(self, box: _Outbox | None, key: str | None) -> _Entry | None:
        if box is None:
            return None
        for entry in box.entries:
            if entry.item.barrier and (key is None or entry.item.key == key):
                return entry
        return None

    def _finish(self, box: _Outbox, entry: _Entry) -> None:
        if not any(e.group == entry.group for e in box.entries):
            box.labels.pop(entry.group, None)
            box.started.discard(entry.group)

    def _wake(self, box: _Outbox) -> None:
        """Tell the hub there may be something to hand out; keep the clock watching."""
        from bot.core.events import Relay

        self._events.publish(Relay(session_id=box.session_id,
                                   bytes_per_second=box.config.bytes_per_second))
        self._schedule(box)

    def _schedule(self, box: _Outbox) -> None:
        if not box.entries or box.timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): nothing can watch the clock
            return
        box.timer = loop.call_later(TICK_S, self._on_timer, box)

    def _on_timer(self, box: _Outbox) -> None:
        box.timer = None
        if self._boxes.get(box.session_id) is not box:
            return
        try:
            self.check(box.session_id)
        except Exception:
            log.exception("relay outbox check failed", extra={"session": box.session_id})
        self._schedule(box)

    def check(self, session_id: str) -> None:
        """Apply the clock: notice, expiry and unconfirmed barriers (a timer calls this)."""
        box = self._boxes.get(session_id)
        if box is None:
            return
        now = self.clock()
        unsent = [e for e in box.entries if not e.sent]
        if session_id not in self._present and not box.told and unsent and (
                now - min(e.queued_at for e in unsent) >= self.notice_after_s):
            box.told = True
            count = len({e.group for e in unsent})
            self._notice_waiting(session_id, count)
        expired = sorted({e.group for e in box.entries if e.group not in box.started
                          and e.holder is None and now - e.queued_at >= self.max_wait_s})
        if expired:
            labels = [box.labels.pop(g, "") for g in expired]
            box.entries = [e for e in box.entries if e.group not in expired]
            minutes = self.max_wait_s / 60
            waited = (f"{minutes:g} minute{'s' if minutes != 1 else ''}" if minutes >= 1
                      else f"{self.max_wait_s:g} seconds")
            one = len(labels) == 1
            self._publish_warning(session_id, (
                f"No viewer page sent {'this' if one else 'these'} to the avatar within "
                f"{waited}, so {'it was' if one else 'they were'} dropped: " + "; ".join(labels)))
        head = next((e for e in box.entries if e.item.barrier), None)
        if head is not None and head.sent and now - head.sent_at >= self.confirm_timeout_s:
            # The vendor never confirmed it (lost on the way): hand it out again, as a new
            # message (the page has already sent the old id and would skip it).
            log.warning("the vendor did not confirm a relayed command; sending it again",
                        extra={"session": session_id})
            head.id = f"{self._epoch}-{next(self._ids)}"
            head.sent, head.holder, head.handed_to = False, None, set()
            self._wake(box)

    def _notice_waiting(self, session_id: str, count: int) -> None:
        def text(name: str | None) -> str:
            return (f"Open the viewer link so that {name or 'the avatar'} can hear you: {count} "
                    f"message{'s' if count != 1 else ''} waiting.")

        if self.avatar_name is None:
            self._publish_warning(session_id, text(None))
            return
        lookup = self.avatar_name

        async def publish() -> None:
            try:
                name = await lookup(session_id)
            except Exception:  # noqa: BLE001 - without the name the notice still goes out
                name = None
            self._publish_warning(session_id, text(name))

        try:
            task = asyncio.get_running_loop().create_task(publish())
        except RuntimeError:  # called without a running loop: say it without the name
            self._publish_warning(session_id, text(None))
            return
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    def _publish_warning(self, session_id: str, text: str) -> None:
        from bot.core.events import Warning

        self._events.publish(Warning(session_id=session_id, text=text))


def _label(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > LABEL_CHARS:
        text = text[: LABEL_CHARS - 1] + "…"
    return f"“{neutralise(text)}”"


# ---------------------------------------------------------------------------- reported text
_BROADCAST = re.compile(r"@(everyone|here|channel)\b", re.IGNORECASE)
_ANGLE = re.compile(r"<([@#!])")  # Discord <@id>, <@&role>, <#channel>; Slack <!here>, <@U…>
_SCHEME = re.compile(r"\b([a-z][a-z0-9+.-]{1,15})://", re.IGNORECASE)
_ZWSP = "\u200b"


def neutralise(text: str) -> str:
    """``text`` with mentions that would ping and links that would unfurl made inert.

    A zero-width space after ``@`` and ``<`` stops Discord and Slack from reading a mention, and
    one inside ``://`` stops both from making a link (so nothing unfurls). People reading the
    thread see the same characters.
    """
    text = _BROADCAST.sub(lambda m: "@" + _ZWSP + m.group(1), text)
    text = _ANGLE.sub(lambda m: "<" + _ZWSP + m.group(1), text)
    return _SCHEME.sub(lambda m: m.group(1) + ":" + _ZWSP + "//", text)


class DropLog:
    """Logs each kind of dropped input once per session (and counts the rest)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.counts: dict[tuple[str, str], int] = {}

    def drop(self, session_id: str, reason: str) -> None:
        """Record a drop; the first of its kind for the session is logged."""
        key = (session_id, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] == 1:
            self._log.warning("dropped a message from a viewer page (%s); more of this kind "
                              "are not logged", reason, extra={"session": session_id})

    def forget(self, session_id: str) -> None:
        """Forget a session's counts."""
        self.counts = {k: v for k, v in self.counts.items() if k[0] != session_id}
