"""The viewer hub: one room per watched session, fanning session events out to its pages.

A room subscribes to the session's events while at least one page is connected. Every page gets
state, countdown, warnings, transcript lines and the end. Messages a vendor driven through the
RTC data channel needs sent wait in the session's relay outbox (``bot/core/relay.py``) and are
handed only to the room's *active* viewer, and only once that page has said it joined the media
room; it acknowledges each after the SDK's send resolved. Vendor sessions hand out one viewer
credential, so only one tab holds the media at a time (the newest, or the one that took it
back); what a displaced or closed tab held and did not send goes to the next relay tab. Sessions
whose provider serves many viewers (the local avatar) keep every tab playing; the newest tab is
still the one that relays.

With several workers a relay session's outbox lives on its home worker (``bot/core/homes.py``):
a page connected elsewhere has its presence, pulls, acknowledgements and releases run there
(``web/internal.py``), woken by ``Relay`` events mirrored over the bus; pulls for one room are
made one at a time, so the page gets its messages in the outbox's order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from bot.compat.cancel import cancel_and_wait
from bot.core.errors import AvatarBotError
from bot.core.events import AnyEvent, Ended, Relay, StateChanged, Transcript, Warning
from bot.core.relay import DropLog
from bot.core.service import SessionService
from web.metrics import WebMetrics

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
RELEASE_WAIT_S = 2.0  # how long a displaced relay tab has to finish a send under way
HOME_RETRY_S = 1.0  # a relay call the session's home did not answer is tried again after this
HOME_ATTEMPTS = 3


class HubClosed(RuntimeError):
    """The server is shutting down: no new viewers."""


@dataclass(eq=False)
class Viewer:
    """One connected viewer page."""

    id: str
    session_id: str
    ws: web.WebSocketResponse
    # Whether the provider holds a WebRTC peer for this viewer (dropped when it leaves).
    signalled: bool = False
    # Whether the page has joined the vendor's media room (relayed messages go only then).
    joined: bool = False
    # Displaced while relaying: what it holds goes to the next tab once it has let go.
    letting_go: bool = False
    # The session lives in one worker's memory (several workers: its relay outbox is there).
    homed: bool = False


@dataclass(eq=False)
class _Room:
    session_id: str
    multi_viewer: bool
    viewers: dict[str, Viewer] = field(default_factory=dict)
    active: str | None = None
    pump: asyncio.Task[None] | None = None
    # One pull at a time: the page gets what it is handed in the outbox's order.
    handing: asyncio.Lock = field(default_factory=asyncio.Lock)


def event_message(event: AnyEvent) -> dict[str, Any] | None:
    """The JSON a page receives for a session event (``Relay`` is handled separately)."""
    if isinstance(event, StateChanged):
        return {"type": "state", "state": event.state.value, "reason": event.reason,
                "seconds_left": event.seconds_left}
    if isinstance(event, Transcript):
        return {"type": "transcript", "speaker": event.speaker, "text": event.text,
                "author": event.author, "intent": event.intent, "final": event.final,
                "at": event.at}
    if isinstance(event, Warning):
        return {"type": "warning", "text": event.text, "seconds_left": event.seconds_left}
    if isinstance(event, Ended):
        s = event.summary
        # Only what the page shows: no tenant id, no credit figures.
        return {"type": "end", "summary": {
            "state": s.state.value, "duration_s": s.duration_s, "avatar_name": s.avatar_name,
            "provider": s.provider, "reason": s.reason,
        }}
    return None


class ViewerHub:
    """Connected viewer pages by session.

    Args:
        service: the session service (for WebRTC peers to drop when a viewer leaves).
        metrics: counters for messages sent.
    """

    def __init__(self, service: SessionService, metrics: WebMetrics) -> None:
        self._service = service
        self._metrics = metrics
        self._rooms: dict[str, _Room] = {}
        self._closing = False
        self._outboxes = service.events.relay
        self._outboxes.avatar_name = self._avatar_name
        self.drops = DropLog(log)
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ membership
    def count(self) -> int:
        """Connected viewers across all sessions."""
        return sum(len(room.viewers) for room in self._rooms.values())

    def watching(self, session_id: str) -> int:
        """How many pages of ``session_id`` are connected now."""
        room = self._rooms.get(session_id)
        return len(room.viewers) if room else 0

    def viewers_of(self, session_id: str) -> list[Viewer]:
        """The pages open on a session now."""
        room = self._rooms.get(session_id)
        return list(room.viewers.values()) if room else []

    def find(self, session_id: str, viewer_id: str) -> Viewer | None:
        """The connected viewer ``viewer_id`` of ``session_id``."""
        room = self._rooms.get(session_id)
        return room.viewers.get(viewer_id) if room else None

    def is_active(self, viewer: Viewer) -> bool:
        """Whether ``viewer`` holds the media (always, for multi-viewer sessions)."""
        room = self._rooms.get(viewer.session_id)
        if room is None or viewer.id not in room.viewers:
            return False
        return room.multi_viewer or room.active == viewer.id

    def is_relay_target(self, viewer: Viewer) -> bool:
        """Whether ``viewer`` is the one page that relays data-channel messages."""
        room = self._rooms.get(viewer.session_id)
        return room is not None and room.active == viewer.id

    async def join(
        self, session_id: str, ws: web.WebSocketResponse, *, multi_viewer: bool,
        take_over: bool = True, homed: bool = False,
    ) -> Viewer:
        """Add a page; it becomes the active viewer, and older tabs are told when displaced.

        ``take_over=False`` (a displaced tab reconnecting) joins without taking the media, unless
        nobody holds it. ``homed``: the session lives in one worker's memory, so with several
        workers its relay outbox may be on another one.
        """
        if self._closing:
            raise HubClosed("the viewer hub is closed")
        viewer = Viewer(id=secrets.token_hex(8), session_id=session_id, ws=ws, homed=homed)
        room = self._rooms.get(session_id)
        if room is None:
            room = _Room(session_id=session_id, multi_viewer=multi_viewer)
            self._rooms[session_id] = room
            room.pump = asyncio.create_task(self._pump(room), name=f"viewer-pump-{session_id}")
        room.viewers[viewer.id] = viewer
        if take_over or room.active not in room.viewers:
            await self._activate(room, viewer)
        return viewer

    async def take_over(self, viewer: Viewer) -> None:
        """Make ``viewer`` the active one again ("watch here")."""
        room = self._rooms.get(viewer.session_id)
        if room is not None and viewer.id in room.viewers and room.active != viewer.id:
            await self._activate(room, viewer)
            await self.send(viewer, {"type": "active"})

    async def _activate(self, room: _Room, viewer: Viewer) -> None:
        previous = room.viewers.get(room.active) if room.active else None
        room.active = viewer.id
        if previous is not None and previous is not viewer:
            # The displaced tab may be sending right now: what it holds goes to the new relay
            # tab once it says it has let go (its acknowledgements arrive first), or after a
            # short wait.
            await self._stop_relaying(previous, let_go=True)
        if viewer.joined:
            await self._set_present(viewer, True)
            await self._hand(room)
        if previous is None or room.multi_viewer:
            return
        # One credential: the older tab must let go of the media.
        await self.send(previous, {"type": "superseded"})
        await self._drop_peer(previous)

    async def leave(self, viewer: Viewer) -> None:
        """Remove a page (its socket closed); the room ends with its last viewer."""
        room = self._rooms.get(viewer.session_id)
        if room is None or room.viewers.pop(viewer.id, None) is None:
            return
        await self._drop_peer(viewer)
        await self._release(viewer)
        if room.active == viewer.id:
            await self._stop_relaying(viewer)
            # The newest remaining tab inherits the relay; a single-credential tab must ask
            # for the media back itself (it may have been closed by its user on purpose).
            room.active = next(reversed(room.viewers), None) if room.multi_viewer else None
            if room.active is not None:
                await self._activate(room, room.viewers[room.active])
        if not room.viewers:
            await self._close_room(room)

    # ------------------------------------------------------------------ relay
    async def joined(self, viewer: Viewer, joined: bool) -> None:
        """The page joined (or left) the vendor's media room; the relay tab then gets messages."""
        room = self._rooms.get(viewer.session_id)
        if room is None or viewer.id not in room.viewers:
            return
        if not joined:
            if room.active == viewer.id:
                await self._stop_relaying(viewer)
            await self._release(viewer)
            viewer.joined = False
            return
        viewer.joined = True
        if room.active == viewer.id:
            await self._set_present(viewer, True)
            await self._hand(room)

    async def relayed(self, viewer: Viewer, ids: list[str]) -> None:
        """The page sent ``ids`` into the room (the SDK's send resolved)."""
        room = self._rooms.get(viewer.session_id)
        if room is None:
            return
        counted = await self._acked(viewer, ids)
        if counted < len(ids):
            self.drops.drop(viewer.session_id, "acknowledgement of messages this tab never got")
        await self._hand(room)

    async def _stop_relaying(self, viewer: Viewer, *, let_go: bool = False) -> None:
        await self._set_present(viewer, False)
        if let_go and not viewer.ws.closed:
            viewer.letting_go = True
            asyncio.get_running_loop().call_later(
                RELEASE_WAIT_S, lambda: self._spawn(self._release(viewer)))
        else:
            await self._release_held(viewer)

    async def _release(self, viewer: Viewer) -> None:
        if viewer.letting_go:
            viewer.letting_go = False
            await self._release_held(viewer)

    async def _hand(self, room: _Room) -> None:
        """Give the relay tab what the outbox has ready for it."""
        async with room.handing:
            target = room.viewers.get(room.active) if room.active else None
            if target is None or not target.joined:
                return
            try:
                config, messages = await self._take(target)
            except AvatarBotError as exc:
                # The home did not answer: the messages wait there; ask again shortly.
                log.info("could not pull relay messages from the session's home: %s",
                         exc.user_message, extra={"session": room.session_id})
                asyncio.get_running_loop().call_later(
                    HOME_RETRY_S, lambda: self._spawn(self._rehand(room)))
                return
            if config is None or not messages:
                return
            sent = await self.send(target, {
                "type": "relay", "config": config,
                "messages": [{"id": mid, "payload": payload} for mid, payload in messages],
            })
        if not sent:
            await self._stop_relaying(target)

    async def _rehand(self, room: _Room) -> None:
        if self._rooms.get(room.session_id) is room:
            await self._hand(room)

    # ------------------------------------------------------------------ the outbox, wherever
    async def _at_home(self, viewer: Viewer, op: str, **fields: Any) -> dict[str, Any] | None:
        """Run relay ``op`` on the session's home when that is another worker, else ``None``."""
        homes = self._service.homes
        if not viewer.homed or homes is None:
            return None
        home = await homes.home_of(viewer.session_id)
        if home is None:
            return None
        return await homes.call(home, op, viewer.session_id, **fields)

    async def _take(self, viewer: Viewer) -> tuple[dict[str, Any] | None,
                                                   list[tuple[str, dict[str, Any]]]]:
        answer = await self._at_home(viewer, "relay_take", page=viewer.id)
        if answer is not None:
            messages = [(str(m[0]), dict(m[1])) for m in answer.get("messages") or []]
            return answer.get("config"), messages
        config = self._outboxes.config(viewer.session_id)
        taken = self._outboxes.take(viewer.session_id, viewer.id)
        return (config.as_json() if config else None), taken

    async def _acked(self, viewer: Viewer, ids: list[str]) -> int:
        try:
            answer = await self._at_home(viewer, "relay_acked", page=viewer.id, ids=ids)
        except AvatarBotError as exc:
            # Not lost: the messages stay held for this page; once it leaves they are handed
            # again and the next page acknowledges them without sending them twice.
            log.warning("the session's home did not take a relay acknowledgement: %s",
                        exc.user_message, extra={"session": viewer.session_id})
            return len(ids)
        if answer is not None:
            return int(answer.get("count") or 0)
        return self._outboxes.acked(viewer.session_id, viewer.id, ids)

    async def _set_present(self, viewer: Viewer, present: bool) -> None:
        try:
            if await self._at_home(viewer, "relay_present", present=present) is None:
                self._outboxes.set_present(viewer.session_id, present)
        except AvatarBotError as exc:  # only the "open the viewer link" notice depends on it
            log.info("could not tell the session's home about its relay page: %s",
                     exc.user_message, extra={"session": viewer.session_id})

    async def _release_held(self, viewer: Viewer, attempts: int = HOME_ATTEMPTS) -> None:
        """What ``viewer`` held and did not send goes back to the outbox.

        A home that does not answer is asked again in the background (the release wakes the
        outbox, so the next relay page then gets those messages).
        """
        try:
            if await self._at_home(viewer, "relay_release", page=viewer.id) is None:
                self._outboxes.release(viewer.session_id, viewer.id)
        except AvatarBotError as exc:
            log.warning("could not release a relay page's messages at the session's home: %s",
                        exc.user_message, extra={"session": viewer.session_id})
            if attempts > 1:
                async def again() -> None:
                    await asyncio.sleep(HOME_RETRY_S)
                    await self._release_held(viewer, attempts - 1)

                self._spawn(again())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _avatar_name(self, session_id: str) -> str | None:
        return (await self._service.get(session_id)).avatar_name

    async def _drop_peer(self, viewer: Viewer) -> None:
        if not viewer.signalled:
            return
        viewer.signalled = False
        try:
            signalling, ps = await self._service.signalling(viewer.session_id)
            await signalling.viewer_leave(ps, viewer.id)
        except AvatarBotError:
            pass  # the session ended: its peers are gone with it
        except Exception:
            log.exception("could not drop a viewer's peer", extra={"session": viewer.session_id})

    async def _close_room(self, room: _Room) -> None:
        if self._rooms.get(room.session_id) is room:
            del self._rooms[room.session_id]
        if room.pump is not None and room.pump is not asyncio.current_task():
            await cancel_and_wait(room.pump)  # it may be in a Redis call (bot/compat/cancel.py)

    # ------------------------------------------------------------------ sending
    async def send(self, viewer: Viewer, message: dict[str, Any]) -> bool:
        """Send one JSON message; a page that cannot take it in time is disconnected."""
        if viewer.ws.closed:
            return False
        try:
            await asyncio.wait_for(viewer.ws.send_json(message), SEND_TIMEOUT_S)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            log.info("viewer send failed (%s); closing it", type(exc).__name__,
                     extra={"session": viewer.session_id})
            await viewer.ws.close(code=WSCloseCode.GOING_AWAY)
            return False
        self._metrics.ws_messages.labels("out").inc()
        return True

    async def _pump(self, room: _Room) -> None:
        async with self._service.events.subscribe(room.session_id) as queue:
            while True:
                event = await queue.get()
                try:
                    await self._deliver(room, event)
                except Exception:
                    log.exception("could not deliver a session event",
                                  extra={"session": room.session_id})
                if isinstance(event, Ended):
                    await self._end_room(room)
                    return

    async def _deliver(self, room: _Room, event: AnyEvent) -> None:
        if isinstance(event, Relay):
            # The outbox changed; with no relay tab joined, the messages simply keep waiting.
            await self._hand(room)
            return
        message = event_message(event)
        if message is not None:
            # In parallel: one page that reads slowly must not delay the others.
            await asyncio.gather(*(self.send(v, message) for v in list(room.viewers.values())))

    async def _end_room(self, room: _Room) -> None:
        """The session ended: close every page's socket (they show the summary)."""
        if self._rooms.get(room.session_id) is room:
            del self._rooms[room.session_id]
        self._outboxes.forget(room.session_id)  # nothing is sent into an ended session
        self.drops.forget(room.session_id)
        # At once, so that one slow page does not hold up the others' close handshakes.
        await asyncio.gather(*(
            v.ws.close(code=WSCloseCode.OK, message=b"ended") for v in list(room.viewers.values())
        ), return_exceptions=True)

    # ------------------------------------------------------------------ shutdown
    async def close(self) -> None:
        """Close every page's socket and stop every room (idempotent)."""
        self._closing = True
        for task in list(self._background):
            task.cancel()
        rooms = list(self._rooms.values())
        await asyncio.gather(*(
            v.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            for room in rooms for v in list(room.viewers.values())
        ), return_exceptions=True)
        for room in rooms:
            await self._close_room(room)
