"""Session threads: people's thread messages go to the avatar, the avatar's words come back.

Outgoing messages of one workspace go through one outbox that sends at most one Web API call
per ``min_interval_s``, taking turns between threads (one queue per session thread, served
round-robin: one session's flood never holds back another's line by more than one turn per busy
thread) (``chat.postMessage`` allows about one message per second per channel,
``chat.update`` is Tier 3, about 50 per minute per workspace). Lines that pile up for the same
thread are merged into one message. A 429 is retried after its ``Retry-After`` by slack-sdk's
``AsyncRateLimitErrorRetryHandler`` on the client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import InvalidRequest, SessionNotFound
from bot.core.events import AnyEvent, Ended, StateChanged, Transcript, Warning
from bot.core.models import SessionState, TenantId
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings
from bot.core.transcripts import transcript_filename, transcript_text
from bot.platforms.slack import blocks

log = logging.getLogger(__name__)

# (team id, enterprise id) -> the bot token serving that workspace, or None
TokenSource = Callable[[str, str | None], Awaitable[str | None]]
ClientFactory = Callable[[str], AsyncWebClient]
PENDING_CAP = 50
PENDING_TTL_S = 60.0


@dataclass(frozen=True)
class Target:
    """Where a session's lines go: a workspace, a channel and the anchor message's thread.

    ``enterprise`` is the Enterprise Grid org of the workspace (None outside Grid): with the team
    id it finds the bot token the thread's messages are posted with.
    """

    team: str
    channel: str
    thread_ts: str
    avatar_name: str
    enterprise: str | None = None


def team_tenant(team: str) -> TenantId:
    """The tenant of a Slack workspace."""
    return TenantId(platform="slack", id=team)


def thread_key(channel: str, thread_ts: str) -> str:
    """The ``ChatBinding.thread_id`` of a Slack thread (ts values are unique per channel only)."""
    return f"{channel}:{thread_ts}"


@dataclass
class Post:
    """One Web API call of the outbox: a thread message, or an update of the anchor message."""

    channel: str
    thread_ts: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    update: bool = False
    mergeable: bool = False
    # (session id, avatar name): post ``text`` with the session's kept transcript as a file
    transcript_of: tuple[str, str] | None = None


@dataclass
class _Pending:
    since: float
    events: list[AnyEvent] = field(default_factory=list)


# How long a stopping process goes on posting what is queued (the end summaries). A workspace
# takes about one call a second, so this covers the summaries of a few sessions per workspace;
# a mass shutdown's hundreds would take minutes, past any service manager's patience.
SHUTDOWN_DRAIN_S = 3.0


class Outbox:
    """The throttled sender of one workspace."""

    def __init__(self, team: str, enterprise: str | None,
                 send: Callable[[str, str | None, Post], Awaitable[None]],
                 min_interval_s: float) -> None:
        self.team = team
        self.enterprise = enterprise
        self._send = send
        self._interval = min_interval_s
        # One queue per thread, in turn order: a served thread with more to send goes last.
        self._queues: dict[tuple[str, str], collections.deque[Post]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_at = 0.0
        self.task = asyncio.create_task(self._run(), name=f"slack-outbox-{team}")

    def put(self, post: Post) -> None:
        """Queue a call behind the thread's earlier ones."""
        self._queues.setdefault((post.channel, post.thread_ts), collections.deque()).append(post)
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Wait until everything queued has been sent."""
        await self._idle.wait()

    def pending(self) -> int:
        """Calls queued and not sent yet."""
        return sum(len(queue) for queue in self._queues.values())

    def _take(self) -> Post:
        key = next(iter(self._queues))
        queue = self._queues.pop(key)
        post = queue.popleft()
        while (
            post.mergeable and queue and queue[0].mergeable
            and len(post.text) + len(queue[0].text) < blocks.MAX_TEXT
        ):
            post = Post(post.channel, post.thread_ts, post.text + "\n" + queue.popleft().text,
                        mergeable=True)
        if queue:
            self._queues[key] = queue  # its next turn comes after every other thread's
        return post

    async def _run(self) -> None:
        while True:
            if not self._queues:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            post = self._take()
            try:
                await self._send(self.team, self.enterprise, post)
            except SlackApiError as exc:
                log.warning("Slack refused a thread post: %s", exc.response.get("error"),
                            extra={"tenant": str(team_tenant(self.team))})
            except Exception:
                log.exception("could not post into a Slack thread",
                              extra={"tenant": str(team_tenant(self.team))})
            self._next_at = time.monotonic() + self._interval


class ThreadRelay:
    """Posts the avatar's words, warnings and end summaries into each session's Slack thread.

    Args:
        service: the session service (its ``events`` hub is subscribed to, all sessions).
        bindings: which Slack thread belongs to which session.
        tokens: the bot token of a (team id, enterprise id), or ``None`` when the workspace is
            gone.
        client_for: builds a Web API client for a token.
        min_interval_s: least time between two calls of one workspace.
    """

    def __init__(self, service: SessionService, bindings: ChatBindings, tokens: TokenSource,
                 client_for: ClientFactory, min_interval_s: float = 1.0) -> None:
        self._service = service
        self._bindings = bindings
        self._tokens = tokens
        self._client_for = client_for
        self._interval = min_interval_s
        self._targets: dict[str, Target | None] = {}
        self._pending: dict[str, _Pending] = {}
        self._outboxes: dict[tuple[str, str | None], Outbox] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._queue: asyncio.Queue[AnyEvent] | None = None
        self._busy = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Subscribe to the event hub (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._consume(), name="slack-thread-relay")
            await self._ready.wait()

    async def aclose(self, drain_timeout_s: float = SHUTDOWN_DRAIN_S) -> None:
        """Send what is queued (for at most ``drain_timeout_s``), then stop (idempotent)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                # Events published just before (the end summaries of a shutdown) come first.
                while not self._caught_up():  # noqa: ASYNC110 - a short poll, at shutdown only
                    await asyncio.sleep(0.01)
                for outbox in list(self._outboxes.values()):
                    await outbox.drained()
        unsent = sum(outbox.pending() for outbox in self._outboxes.values())
        unsent += self._queue.qsize() if self._queue is not None else 0
        if unsent:
            log.warning("shutdown: %d Slack post(s) not sent (a workspace takes about one a "
                        "second), end summaries among them", unsent)
        tasks = [self._task, *(o.task for o in self._outboxes.values())]
        self._task, self._outboxes = None, {}
        self._ready.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> ThreadRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _caught_up(self) -> bool:
        return not self._busy and (self._queue is None or self._queue.empty())

    # ------------------------------------------------------------------ binding
    def bound(self, session_id: str, target: Target) -> None:
        """Tell the relay a session's thread; lines published before it was known follow now."""
        self._targets[session_id] = target
        pending = self._pending.pop(session_id, None)
        for event in pending.events if pending else ():
            self._dispatch(target, event)

    def owner(self, session_id: str) -> tuple[str, str | None] | None:
        """The (team id, enterprise id) a session's lines go to, if this relay knows (no I/O)."""
        target = self._targets.get(session_id)
        return (target.team, target.enterprise) if target is not None else None

    # ------------------------------------------------------------------ consuming
    async def _consume(self) -> None:
        # Local events only: with several workers each runs this relay (docs/scale-out.md), and
        # each posts what was published on it, so a line reaches its thread once.
        async with self._service.events.subscribe(None, remote=False, want=_wanted) as queue:
            self._queue = queue
            self._ready.set()
            while True:
                event = await queue.get()
                self._busy = True
                try:
                    await self._handle(event)
                except Exception:
                    log.exception("the Slack relay could not handle an event")
                finally:
                    self._busy = False

    async def _handle(self, event: AnyEvent) -> None:
        if not _wanted(event):
            return
        sid = event.session_id
        if sid not in self._targets:
            # Asked again for each event while a Slack session's thread is unknown: ``bound()``
            # normally says it first, but another app object may have bound it.
            try:
                found = await self._resolve(sid)
            except _NotYet:
                if sid not in self._targets:  # ``bound()`` may have run while we looked
                    self._hold(sid, event)
                    return
            else:
                self._targets.setdefault(sid, found)
            held = self._pending.pop(sid, None)
            target = self._targets[sid]
            if held and target is not None:
                for early in held.events:
                    self._dispatch(target, early)
        target = self._targets[sid]
        if _final(event):
            self._targets.pop(sid, None)
        if target is not None:
            self._dispatch(target, event)

    async def _resolve(self, sid: str) -> Target | None:
        try:
            record = await self._service.get(sid)
        except SessionNotFound:
            return None
        try:
            tenant = TenantId.parse(record.tenant)
        except InvalidRequest:
            return None
        if tenant.platform != "slack":
            return None
        for binding in await self._bindings.for_session(sid):
            if binding.platform == "slack":
                return Target(tenant.id, binding.channel_id,
                              binding.message_id or binding.thread_id.rsplit(":", 1)[-1],
                              record.avatar_name, binding.enterprise_id)
        if record.state.is_open:
            # Started from Slack but the thread is not bound yet: ``bound()`` will come.
            raise _NotYet
        return None

    def _hold(self, sid: str, event: AnyEvent) -> None:
        now = time.monotonic()
        for old in [s for s, p in self._pending.items() if now - p.since > PENDING_TTL_S]:
            del self._pending[old]
        pending = self._pending.setdefault(sid, _Pending(since=now))
        if _final(event):
            del self._pending[sid]  # ended before any thread existed: nothing to say it in
        elif len(pending.events) < PENDING_CAP:
            pending.events.append(event)

    def _dispatch(self, target: Target, event: AnyEvent) -> None:
        outbox = self._outbox(target.team, target.enterprise)
        channel, ts = target.channel, target.thread_ts
        if isinstance(event, Transcript):
            if event.speaker == "avatar":
                text = f"*{blocks.escape(target.avatar_name)}:* {blocks.escape(event.text)}"
            else:
                text = f"_{blocks.escape(event.text)}_"
            for piece in blocks.split(text):
                outbox.put(Post(channel, ts, piece, mergeable=True))
        elif isinstance(event, Warning):
            outbox.put(Post(channel, ts, f":hourglass_flowing_sand: {blocks.escape(event.text)}"))
        elif isinstance(event, Ended):
            text = blocks.summary_text(event.summary)
            outbox.put(Post(channel, ts, text,
                            transcript_of=(event.session_id, event.summary.avatar_name)))
            outbox.put(Post(channel, ts, text, blocks.session_ended(event.summary), update=True))
        elif isinstance(event, StateChanged):  # failed after going live
            text = f":x: The session failed: {blocks.escape(event.reason or 'unknown reason')}"
            outbox.put(Post(channel, ts, text))
            outbox.put(Post(channel, ts, text, [_section(text)], update=True))

    def _outbox(self, team: str, enterprise: str | None) -> Outbox:
        outbox = self._outboxes.get((team, enterprise))
        if outbox is None:
            outbox = Outbox(team, enterprise, self._send, self._interval)
            self._outboxes[(team, enterprise)] = outbox
        return outbox

    async def _send(self, team: str, enterprise: str | None, post: Post) -> None:
        token = await self._tokens(team, enterprise)
        if token is None:
            log.info("no Slack token for a workspace; a thread line is dropped",
                     extra={"tenant": str(team_tenant(team))})
            return
        client = self._client_for(token)
        if post.transcript_of is not None and await self._upload_transcript(client, post):
            return
        if post.update:
            await client.chat_update(channel=post.channel, ts=post.thread_ts, text=post.text,
                                     blocks=post.blocks)
        else:
            await client.chat_postMessage(channel=post.channel, thread_ts=post.thread_ts,
                                          text=post.text, unfurl_links=False, unfurl_media=False)


    async def _upload_transcript(self, client: AsyncWebClient, post: Post) -> bool:
        """Post ``post.text`` with the transcript file (files_upload_v2); False if not done.

        A workspace installed before the ``files:write`` scope was asked for refuses the
        upload (``missing_scope``): the summary is then posted without the file.
        """
        assert post.transcript_of is not None
        session_id, avatar = post.transcript_of
        lines = await self._service.transcript(session_id)
        if not lines:
            return False
        try:
            await client.files_upload_v2(
                channel=post.channel, thread_ts=post.thread_ts, initial_comment=post.text,
                content=transcript_text(avatar, lines), filename=transcript_filename(session_id),
                title=f"Transcript of the session with {avatar}",
            )
        except SlackApiError as exc:
            log.warning("could not attach the transcript: %s", exc.response.get("error"))
            return False
        return True


class _NotYet(Exception):
    """The session is a Slack one whose thread is not bound yet."""


def _wanted(event: AnyEvent) -> bool:
    if isinstance(event, Transcript):
        # People's own lines are already in the thread; partial lines are followed by a final one.
        return event.speaker != "user" and event.final and bool(event.text.strip())
    if isinstance(event, StateChanged):
        return event.state is SessionState.FAILED
    return isinstance(event, Warning | Ended)


def _final(event: AnyEvent) -> bool:
    return isinstance(event, Ended | StateChanged)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def is_person_thread_reply(event: dict[str, Any]) -> bool:
    """A new message by a person, inside a thread (not an edit, delete, bot post or the root)."""
    return (
        # thread_broadcast: a reply also sent to the channel; file_share: a reply with a file
        event.get("subtype") in (None, "file_share", "thread_broadcast")
        and not event.get("bot_id")
        and bool(event.get("user"))
        and bool(event.get("thread_ts"))
        and event.get("thread_ts") != event.get("ts")
    )


__all__ = [
    "Post", "Target", "ThreadRelay", "is_person_thread_reply",
    "team_tenant", "thread_key",
]
