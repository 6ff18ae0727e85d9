"""The session service: starts, drives and ends avatar sessions, and keeps the credits right.

Every platform (Discord, Slack, the web playground) calls this one service. It writes the session
row and the credit reservation before calling the vendor, so a crash at any point leaves a record
that ``SessionReaper`` can finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from bot.core.bookings import BookingKeeper
from bot.core.counts import SessionCounts
from bot.core.dispatch import DEFAULT_QUEUE_LIMIT, Place, SessionQueues
from bot.core.errors import (
    AvatarBotError,
    InvalidRequest,
    ProviderError,
    ProviderSessionGone,
    ProviderUnavailable,
    ServiceClosing,
    SessionNotFound,
    SessionNotLive,
    UnknownProvider,
)
from bot.core.events import AnyEvent, Ended, EventHub, StateChanged, Transcript
from bot.core.homes import HomeSignalling, SessionHomes, has_home
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    Mode,
    ProviderSession,
    SessionRecord,
    SessionState,
    SessionSummary,
    StartRequest,
    TenantId,
    TranscriptLine,
    utcnow,
)
from bot.core.ports import SessionStore
from bot.core.provider import AvatarProvider, WebRTCSignalling
from bot.core.relay import neutralise
from bot.core.rules import check_start
from bot.core.tenants import TenantKey

log = logging.getLogger(__name__)

AVATAR_CACHE_S = 300.0
# Final transcript lines are written in batches, one transaction per this many seconds, instead
# of one write transaction per thread message (issue 15). Reading a transcript writes what is
# waiting first; a shutdown writes it too, so only a crash can lose the last batch.
TRANSCRIPT_BATCH_S = 0.5
TRANSCRIPT_BUFFER_MAX = 10_000  # lines waiting while the store is stuck; newer ones are dropped


class StartCommand(BaseModel):
    """A request to start a session, as a platform received it."""

    tenant: TenantKey  # a TenantId is stored as its text (see the validator)
    user: str
    provider: str | None = None
    avatar: str | None = None
    minutes: int | None = None
    mode: Mode = Mode.ASK
    knowledge: str | None = None
    roles: list[str] = Field(default_factory=list)

    @field_validator("tenant", mode="before")
    @classmethod
    def _tenant_key(cls, v: object) -> object:
        # Kept as its ``platform:id`` text: the form the store and every record use.
        return str(v) if isinstance(v, TenantId) else v


@dataclass(frozen=True)
class Queued:
    """A thread message in its session's queue (``SessionService.enqueue``).

    ``mode`` is how it will be sent (ask or say); ``sent()`` waits until the vendor took it and
    raises what the vendor answered instead. Cancelling ``sent()`` before the message's turn
    takes it back out of the queue.
    """

    mode: Mode
    sent: Callable[[], Awaitable[None]]


class SessionService:
    """Start, drive and stop sessions across every provider.

    Args:
        store: persistence for sessions and the ledger.
        providers: the configured providers by name.
        events: the hub that state, transcript and end events are published on.
        default_minutes: session length when none is asked for.
        start_timeout_s: how long a vendor may take to start a session.
        stop_timeout_s: how long a vendor may take to stop one.
        queue_limit: most messages one session may have waiting for its vendor; more are
            refused with ``SessionBusy`` (``bot/core/dispatch.py``).
    """

    def __init__(
        self,
        *,
        store: SessionStore,
        providers: dict[str, AvatarProvider],
        events: EventHub,
        default_minutes: int = 10,
        start_timeout_s: float = 45.0,
        stop_timeout_s: float = 20.0,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        bookings: BookingKeeper | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.events = events
        self.default_minutes = default_minutes
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._avatar_cache: dict[str, tuple[float, list[AvatarInfo]]] = {}
        # Each session's messages go to its vendor in turn, through a bounded queue.
        self.queues = SessionQueues(queue_limit)
        # With several workers: where sessions that live in one worker's memory are handled
        # (bot/core/homes.py); ``None`` for one process.
        self.homes: SessionHomes | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # Sessions this process watches for an end made by another process (the CLI), and the
        # ones whose end was already told here (bounded: oldest forgotten first).
        self._watched: set[str] = set()
        self._ended_here: dict[str, None] = {}
        # Final lines published here, waiting for their batch (``keep_transcripts``).
        self._lines: list[TranscriptLine] = []
        self._lines_due = asyncio.Event()
        self._lines_lock = asyncio.Lock()
        self._keeping = False
        self.events.listen(self._note_line, remote=False)
        # Vendor bookings (bot/core/bookings.py): the calls in flight, and whether starts are
        # still accepted (a shutdown stops accepting them, then waits for these).
        self.bookings = bookings or BookingKeeper(store, stop_timeout_s=stop_timeout_s)
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._accepting = True
        #: open sessions by state, kept from this hub's events (``/metrics``, the home page)
        self.counts = SessionCounts(store, events)

    # ------------------------------------------------------------------ lookups
    def provider(self, name: str) -> AvatarProvider:
        """The configured provider ``name`` or ``UnknownProvider``."""
        try:
            return self.providers[name]
        except KeyError:
            raise UnknownProvider(name, list(self.providers)) from None

    async def list_avatars(self, provider: str | None = None) -> list[AvatarInfo]:
        """Avatars of one provider or of all, cached for a few minutes.

        Across all providers, one vendor that is down is skipped (and logged) so the others
        stay usable; its error is raised only when no provider answered.
        """
        if provider:
            return await self._avatars_of(provider)
        found: list[AvatarInfo] = []
        for avatars in await self._avatars_of_each(list(self.providers)):
            found.extend(avatars)
        return found

    async def _avatars_of_each(self, names: list[str]) -> list[list[AvatarInfo]]:
        """The avatar lists of every provider that answered, in order."""
        answered, failures = [], []
        for name in names:
            try:
                answered.append(await self._avatars_of(name))
            except ProviderError as exc:
                log.warning("%s avatar list unavailable: %r", name, exc)
                failures.append(exc)
        if failures and not answered:
            raise failures[0]
        return answered

    async def _avatars_of(self, name: str) -> list[AvatarInfo]:
        prov = self.provider(name)
        cached = self._avatar_cache.get(name)
        if cached and time.monotonic() - cached[0] < AVATAR_CACHE_S:
            return cached[1]
        avatars = await prov.list_avatars()
        self._avatar_cache[name] = (time.monotonic(), avatars)
        return avatars

    async def find_avatar(self, ref: str | None, provider: str | None = None) -> AvatarInfo:
        """Resolve ``provider:avatar``, an avatar id or a name; the first avatar when ``None``."""
        if ref and ":" in ref and provider is None and ref.split(":", 1)[0] in self.providers:
            provider, ref = ref.split(":", 1)
        if provider:
            listed = [await self._avatars_of(provider)]
        else:
            listed = await self._avatars_of_each(self._provider_order())
        for avatars in listed:
            if not ref:
                if avatars:
                    return avatars[0]
                continue
            wanted = ref.strip().lower()
            for avatar in avatars:
                if wanted in (avatar.id.lower(), avatar.name.lower()):
                    return avatar
        raise InvalidRequest(
            f"Unknown avatar {ref!r}. List them with `/avatar avatars`." if ref else
            "No avatar is available."
        )

    async def start_avatar(self, tenant: TenantKey, ref: str | None,
                           provider: str | None = None) -> AvatarInfo:
        """The avatar a start uses: the named one, else the tenant's default, else the first."""
        if ref is None and provider is None:
            chosen = await self.store.default_avatar(str(tenant))
            if chosen is not None:
                try:
                    return await self.find_avatar(chosen)
                except InvalidRequest:
                    log.warning("default avatar of %s is gone; using the first", tenant)
        return await self.find_avatar(ref, provider)

    async def set_default_avatar(self, tenant: TenantKey, ref: str | None) -> AvatarInfo | None:
        """Choose the avatar that starts when none is named (``None`` forgets the choice)."""
        if ref is None:
            await self.store.set_default_avatar(str(tenant), None)
            return None
        avatar = await self.find_avatar(ref)
        await self.store.set_default_avatar(str(tenant), f"{avatar.provider}:{avatar.id}")
        return avatar

    def _provider_order(self) -> list[str]:
        """Vendors first (in configuration order), the local avatar last."""
        return sorted(self.providers, key=lambda n: n == "local")

    # ------------------------------------------------------------------ start
    async def start(self, cmd: StartCommand) -> SessionRecord:
        """Reserve credits, start the vendor session and return the live record."""
        self._check_accepting()
        avatar = await self.start_avatar(cmd.tenant, cmd.avatar, cmd.provider)
        prov = self.provider(avatar.provider)
        duration_s = self._duration(cmd.minutes, prov)
        knowledge = _clean_knowledge(cmd.knowledge, prov.capabilities)
        now = utcnow()
        record = SessionRecord(
            id=secrets.token_hex(8), tenant=str(cmd.tenant), provider=prov.name,
            avatar_id=avatar.id, avatar_name=avatar.name, mode=cmd.mode,
            state=SessionState.PENDING, requested_s=duration_s,
            reserved=prov.capabilities.pricing.cost(duration_s), started_by=cmd.user,
            created_at=now, last_activity_at=now, knowledge=knowledge,
        )
        record = await self.store.open_session(record, cmd.roles)
        self._watched.add(record.id)
        self._publish_state(record)
        log.info("session starting", extra=_ctx(record))
        request = StartRequest(
            session_id=record.id, avatar_id=avatar.id, duration_s=duration_s,
            mode=cmd.mode, knowledge=knowledge,
        )
        ps = await self._start_vendor(record, prov, request)
        try:
            record = await self.store.mark_live(record.id, ps)
        except BaseException:
            await asyncio.shield(self._abandon(record, prov, ps))
            raise
        if record.state is not SessionState.LIVE:
            # Ended or failed while the vendor was starting (a stop, an uninstall, the reaper's
            # pending timeout): the row has no vendor id, so nothing else would ever stop it.
            await asyncio.shield(self._stop_unrecorded(record, prov, ps))
            raise SessionNotLive(record.id, record.state.value)
        self._publish_state(record)
        log.info("session live", extra=_ctx(record))
        return record

    async def precheck(self, cmd: StartCommand, avatar: AvatarInfo) -> None:
        """Raise now the refusal ``start`` would raise, from figures read a moment before.

        For platforms that must answer within a deadline (Discord's 3 s); ``start`` applies the
        same rules (``rules.check_start``) again inside its reserving transaction.
        """
        prov = self.provider(avatar.provider)
        duration_s = self._duration(cmd.minutes, prov)
        _clean_knowledge(cmd.knowledge, prov.capabilities)
        tenant = str(cmd.tenant)
        await self.store.ensure_tenant(tenant)
        check_start(
            limits=await self.store.get_limits(tenant),
            active=await self.store.tenant_active(tenant),
            running=len(await self.open_sessions(tenant)),
            spent_today=await self.store.user_spent_today(tenant, cmd.user),
            available=(await self.store.balance(tenant)).available,
            cost=prov.capabilities.pricing.cost(duration_s), minutes=duration_s / 60,
            user=cmd.user, roles=cmd.roles,
        )

    def _duration(self, minutes: int | None, prov: AvatarProvider) -> int:
        minutes = self.default_minutes if minutes is None else minutes
        if not isinstance(minutes, int) or minutes <= 0:
            raise InvalidRequest("The length must be a whole number of minutes, at least 1.")
        max_minutes = prov.capabilities.max_duration_s // 60
        if minutes > max_minutes:
            raise InvalidRequest(
                f"{prov.display_name} sessions last at most {max_minutes} minutes."
            )
        return minutes * 60

    async def _start_vendor(
        self, record: SessionRecord, prov: AvatarProvider, request: StartRequest
    ) -> ProviderSession:
        task: asyncio.Task[ProviderSession] | None = None
        try:
            await self.bookings.intent(record)
            self._check_accepting()
            task = asyncio.create_task(self._book(record, prov, request))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that arrives as
            # the call finishes, and a shutdown's cancel must not be lost.
            async with asyncio.timeout(self.start_timeout_s):
                return await asyncio.shield(task)
        except BaseException as exc:
            if task is None:
                await asyncio.shield(self.bookings.released(record.id, "never sent"))
            elif not task.done():
                self._give_up(record, prov, task)
            reason = _reason(exc, prov.display_name)
            failed = await asyncio.shield(self.store.fail_session(record.id, reason))
            self._publish_state(failed, reason)
            log.warning("session failed to start: %r", exc, extra=_ctx(record))
            if task is not None and task.done():
                await asyncio.shield(self._booking_failed(record, prov, task))
            if isinstance(exc, TimeoutError):
                raise ProviderUnavailable(prov.name, reason) from None
            raise

    async def _book(
        self, record: SessionRecord, prov: AvatarProvider, request: StartRequest
    ) -> ProviderSession:
        """Send the booking call, as its own task.

        Its answer is written the moment it arrives, even when the start that asked for it has
        been given up (a timeout, a cancel).
        """
        ps = await prov.start(request)
        await asyncio.shield(self.bookings.answered(record.id, ps))
        return ps

    async def _booking_failed(
        self, record: SessionRecord, prov: AvatarProvider, task: asyncio.Task[ProviderSession]
    ) -> None:
        """Resolve the booking of a finished call whose start failed or was given up."""
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is not None:
            await self.bookings.failed(record, prov, exc)
        else:  # it answered just as the start gave up: end what it booked
            await self._stop_unrecorded(record, prov, task.result())

    def _give_up(
        self, record: SessionRecord, prov: AvatarProvider, task: asyncio.Task[ProviderSession]
    ) -> None:
        """The start no longer waits for ``task``: end whatever it books once it answers."""
        async def end_late() -> None:
            with contextlib.suppress(BaseException):
                await asyncio.wait([task])
            if not task.cancelled() and task.exception() is None:
                log.warning("the vendor answered after the start was given up; ending it",
                            extra=_ctx(record))
            await self._booking_failed(record, prov, task)

        ender = asyncio.create_task(end_late())
        self._in_flight.add(ender)
        ender.add_done_callback(self._in_flight.discard)

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ServiceClosing()

    def stop_accepting(self) -> None:
        """Refuse new starts from now on (a shutdown is under way)."""
        self._accepting = False

    async def drain_starts(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the booking calls in flight, then cancel the rest.

        What a cancelled call may have booked is resolved by ``BookingKeeper.failed``. Returns
        how many were cut.
        """
        pending = set(self._in_flight)
        if pending:
            log.info("waiting for %d start(s) in flight", len(pending))
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        return len(pending)

    async def _abandon(
        self, record: SessionRecord, prov: AvatarProvider, ps: ProviderSession
    ) -> None:
        """The vendor started but we could not record it: stop it so it costs nothing."""
        await self._stop_unrecorded(record, prov, ps)
        try:
            await self.fail_session(record.id, "could not record the session")
        except Exception:
            log.exception("could not mark session failed", extra=_ctx(record))

    async def _stop_unrecorded(
        self, record: SessionRecord, prov: AvatarProvider, ps: ProviderSession
    ) -> bool:
        try:
            await asyncio.wait_for(prov.stop(ps), self.stop_timeout_s)
        except Exception:
            log.exception("could not stop an unrecorded vendor session", extra=_ctx(record))
            return False
        await self.bookings.released(record.id, "stopped: the session never went live")
        return True

    # ------------------------------------------------------------------ stop
    async def stop(
        self, session_id: str, reason: str = "stopped", *, tenant: TenantKey | None = None,
        at: datetime | None = None,
    ) -> SessionSummary:
        """End a session (idempotent); returns its summary.

        ``at`` is when its use ended, if that was before now (the vendor ended it): credits
        settle there. It is clamped to the session's start and to now.
        """
        await self.get(session_id, tenant=tenant)
        async with self._lock(session_id):
            # Read under the lock: whoever held it before may have ended the session already.
            record = await self.store.get_session(session_id)
            if record.state.is_open:
                end = utcnow() if at is None else min(at, utcnow())
                if record.started_at is not None:
                    end = max(end, record.started_at)
                record = await self.store.begin_end(session_id, reason, end)
                self._publish_state(record)
                record = await self.finish_ending(record)
        if not record.state.is_open:
            self._locks.pop(session_id, None)
        return self.summary(record)

    async def vendor_ended(
        self, session_id: str, reason: str, at: datetime | None = None
    ) -> SessionSummary | None:
        """End a live session that its vendor ended on its own; ``None`` if it was not live.

        Args:
            session_id: our session.
            reason: why, in plain words (the end summary shows it in the thread).
            at: when the vendor ended it (credits settle there); ``None`` means now.
        """
        record = await self.store.get_session(session_id)
        if record.state is not SessionState.LIVE:
            return None
        log.info("the vendor ended the session: %s", reason, extra=_ctx(record))
        return await self.stop(session_id, reason, at=at)

    async def _end_if_gone(self, session_id: str, exc: ProviderSessionGone) -> None:
        """React to a vendor saying the session no longer exists: end it as vendor-ended."""
        try:
            await self.vendor_ended(session_id, exc.reason, exc.ended_at)
        except AvatarBotError:
            log.exception("could not end a session the vendor ended")

    async def retry_stop(self, session_id: str) -> SessionRecord:
        """Try again to stop an ending session's vendor session (the reaper's retries).

        Holds the session's lock, like ``stop``, so a stop in progress is not repeated (a second
        vendor stop and a second end summary).
        """
        async with self._lock(session_id):
            record = await self.store.get_session(session_id)
            if record.state is SessionState.ENDING:
                record = await self.finish_ending(record)
        if not record.state.is_open:
            self._locks.pop(session_id, None)
        return record

    async def finish_ending(self, record: SessionRecord) -> SessionRecord:
        """Stop the vendor session of an ending record, then settle; retry later on failure."""
        prov = self.providers.get(record.provider)
        ps = record.provider_session()
        if ps is not None and prov is not None:
            try:
                await asyncio.wait_for(prov.stop(ps), self.stop_timeout_s)
            except (ProviderError, TimeoutError) as exc:
                return await self._retry_stop_later(record, exc)
        elif ps is not None:
            log.error("provider %s is not configured; cannot stop its session", record.provider)
            return await self._retry_stop_later(record, RuntimeError("provider missing"))
        record = await self.store.finish_session(record.id, self.settlement(record))
        self._told_end(record.id)
        self.events.publish(Ended(session_id=record.id, summary=self.summary(record)))
        log.info("session ended", extra=_ctx(record))
        return record

    # ------------------------------------------------------------------ other processes
    async def watch_other_writers(self, interval_s: float = 0.5) -> None:
        """Tell this process's pages, threads and providers about ends made by other processes.

        ``avatarbot sessions stop`` runs in its own process: it ends the session in the shared
        database, but the pages, the chat threads and the local avatar's rendering live here.
        SQLite's ``data_version`` changes only when another connection commits, so polling it is
        one cheap read; when it moves, the open sessions are compared with those watched here.
        See docs/architecture.md ("Stops from another process").
        """
        version = await self.store.data_version()
        self._watched.update(await self.store.open_states())
        while True:
            await asyncio.sleep(interval_s)
            try:
                now = await self.store.data_version()
                if now != version:
                    version = now
                    await self.notice_other_writers()
            except Exception:
                log.exception("could not check for changes made by another process")

    async def notice_other_writers(self) -> list[str]:
        """Finish here the watched sessions another process closed; return their ids."""
        open_ids = (await self.store.open_states()).keys()
        gone = [sid for sid in self._watched if sid not in open_ids]
        self._watched.update(open_ids)
        for sid in gone:
            self._watched.discard(sid)
            await self._adopt_end(sid)
        return gone

    async def _adopt_end(self, session_id: str) -> None:
        async with self._lock(session_id):
            if session_id in self._ended_here:
                return
            record = await self.store.get_session(session_id)
            if record.state.is_open:
                return
            prov = self.providers.get(record.provider)
            ps = record.provider_session()
            # A session running inside this process (the local avatar) is only known here: the
            # other process could not stop its rendering and peers, so stop them now. A vendor
            # session was stopped by the other process through the vendor's API.
            if prov is not None and ps is not None and not prov.capabilities.survives_restart:
                try:
                    await asyncio.wait_for(prov.stop(ps), self.stop_timeout_s)
                except Exception:
                    log.exception("could not free a session ended elsewhere", extra=_ctx(record))
            self._told_end(session_id)
            self._publish_state(record)
            if record.state is SessionState.ENDED:
                self.events.publish(Ended(session_id=record.id, summary=self.summary(record)))
            log.info("session ended by another process", extra=_ctx(record))
        self._locks.pop(session_id, None)

    def _told_end(self, session_id: str) -> None:
        self._watched.discard(session_id)
        self._ended_here[session_id] = None
        while len(self._ended_here) > 10_000:
            self._ended_here.pop(next(iter(self._ended_here)))

    # ------------------------------------------------------------------ transcripts
    async def keep_transcripts(self) -> None:
        """Keep every final transcript line in the store (runs until cancelled).

        Only lines published by this worker: each worker keeps its own, so each is kept once.
        They are noted as they are published (a hub listener, which never misses one) and
        written in one transaction per ``TRANSCRIPT_BATCH_S``.
        """
        self._keeping = True
        try:
            while True:
                await self._lines_due.wait()
                await asyncio.sleep(TRANSCRIPT_BATCH_S)
                await self._write_lines()
        finally:
            self._keeping = False
            await self._write_lines()  # cancelled at shutdown: what waits is still written

    def _note_line(self, event: AnyEvent) -> None:
        if not (self._keeping and isinstance(event, Transcript) and event.final and event.text):
            return
        if len(self._lines) >= TRANSCRIPT_BUFFER_MAX:
            log.warning("transcript lines are not being written; a line was not kept",
                        extra={"session": event.session_id})
            return
        # The event's fields were validated when it was made: no second validation here.
        self._lines.append(TranscriptLine.model_construct(
            session_id=event.session_id, at=event.at, speaker=event.speaker, text=event.text,
            author=event.author, intent=event.intent,
        ))
        self._lines_due.set()

    async def _write_lines(self) -> None:
        """Write the lines waiting (after any batch being written now, so order is kept)."""
        async with self._lines_lock:
            lines, self._lines = self._lines, []
            self._lines_due.clear()
            if not lines:
                return
            try:
                await self.store.add_transcript_lines(lines)
            except Exception:
                log.exception("could not keep %d transcript line(s)", len(lines))

    async def transcript(self, session_id: str) -> list[TranscriptLine]:
        """A session's kept transcript, with the lines published so far written first."""
        await self._write_lines()
        return await self.store.transcript(session_id)

    async def _retry_stop_later(self, record: SessionRecord, exc: BaseException) -> SessionRecord:
        delay = min(300.0, 5.0 * 2 ** min(record.stop_attempts, 6))
        next_at = utcnow().timestamp() + delay
        log.warning("vendor stop failed (%r); retrying in %.0f s", exc, delay, extra=_ctx(record))
        return await self.store.schedule_stop_retry(
            record.id, datetime.fromtimestamp(next_at, tz=utcnow().tzinfo)
        )

    def settlement(self, record: SessionRecord) -> int:
        """Credits a session owes: its use from going live to the end request, by pricing."""
        if record.started_at is None:
            return 0
        end = record.ending_at or utcnow()
        if record.expires_at is not None:
            end = min(end, record.expires_at)
        used_s = max(0.0, (end - record.started_at).total_seconds())
        prov = self.providers.get(record.provider)
        if prov is None:
            return record.reserved
        return min(record.reserved, prov.capabilities.pricing.cost(used_s))

    def summary(self, record: SessionRecord) -> SessionSummary:
        """The end summary of a session (settled figures once it has ended)."""
        end = record.ending_at or record.ended_at or utcnow()
        duration = (end - record.started_at).total_seconds() if record.started_at else 0
        settled = record.settled or 0
        closed = record.state in (SessionState.ENDED, SessionState.FAILED)
        return SessionSummary(
            session_id=record.id, tenant=record.tenant, provider=record.provider,
            avatar_name=record.avatar_name, state=record.state, duration_s=int(max(0, duration)),
            reserved=record.reserved, settled=settled,
            released=record.reserved - settled if closed else 0,
            reason=record.failure_reason or record.end_reason or "",
        )

    # ------------------------------------------------------------------ driving
    async def get(self, session_id: str, *, tenant: TenantKey | None = None) -> SessionRecord:
        """A session; ``SessionNotFound`` also when it belongs to another tenant."""
        record = await self.store.get_session(session_id)
        if tenant is not None and record.tenant != str(tenant):
            raise SessionNotFound(session_id)
        return record

    async def live(self, session_id: str, *, tenant: TenantKey | None = None) -> SessionRecord:
        """A live session, or ``SessionNotLive``."""
        record = await self.get(session_id, tenant=tenant)
        if record.state is not SessionState.LIVE:
            raise SessionNotLive(session_id, record.state.value)
        return record

    async def say(self, session_id: str, text: str, *, author: str | None = None,
                  tenant: TenantKey | None = None) -> None:
        """Make the avatar speak ``text`` word for word."""
        await self._drive(session_id, Mode.SAY, text, author, tenant)

    async def ask(self, session_id: str, text: str, *, author: str | None = None,
                  tenant: TenantKey | None = None) -> None:
        """Ask the avatar ``text``; its answer comes back as transcript events."""
        await self._drive(session_id, Mode.ASK, text, author, tenant)

    async def send(self, session_id: str, text: str, *, author: str | None = None,
                   tenant: TenantKey | None = None) -> Mode:
        """Route a thread message: ``!say``/``!ask`` prefixes override the session's mode once."""
        queued = await self.enqueue(session_id, text, author=author, tenant=tenant)
        await queued.sent()
        return queued.mode

    async def enqueue(self, session_id: str, text: str, *, author: str | None = None,
                      tenant: TenantKey | None = None) -> Queued:
        """``send``'s first half: check a thread message and put it in its session's queue.

        Returns as soon as the message is queued, or raises its refusal (``SessionBusy`` for a
        full queue, ``SessionNotLive``, too long ...). The caller then awaits ``Queued.sent()``,
        which it must do: that is where the vendor's answer (or error) arrives. A platform
        acknowledges between the two, so its acknowledgement never waits for the vendor
        (docs/backpressure.md).
        """
        place = self.queues.reserve(session_id)  # its turn is kept while the session is read
        try:
            record = await self.live(session_id, tenant=tenant)
            mode, body = parse_prefix(text, record.mode)
            sent = self._queue_in(place, record, mode, _clean_text(body), author)
        except BaseException:
            place.drop()
            raise
        return Queued(mode, sent)

    async def _drive(self, session_id: str, mode: Mode, text: str, author: str | None,
                     tenant: TenantKey | None) -> None:
        # The message's place in the session's queue is taken before anything is awaited.
        place = self.queues.reserve(session_id)
        try:
            text = _clean_text(text)
            record = await self.live(session_id, tenant=tenant)
            await self._drive_in(place, record, mode, text, author)
        finally:
            place.drop()

    async def _drive_in(self, place: Place, record: SessionRecord, mode: Mode, text: str,
                        author: str | None) -> None:
        """Send a live session's cleaned message when its place in the queue comes up."""
        await self._queue_in(place, record, mode, text, author)()

    def _queue_in(self, place: Place, record: SessionRecord, mode: Mode, text: str,
                  author: str | None) -> Callable[[], Awaitable[None]]:
        """Check a live session's cleaned message and fill its place in the queue (no await).

        Returns what waits for it to be sent.
        """
        prov, ps = self._provider_session(record)
        _check_length(text, prov.capabilities)
        if not getattr(prov.capabilities, mode.value):
            raise InvalidRequest(f"{prov.display_name} avatars cannot {mode.value}.")
        place.fill(record.avatar_name, lambda: self._deliver(prov, ps, mode, text, author))

        async def sent() -> None:
            try:
                await place.wait()
            except ProviderSessionGone as exc:
                await self._end_if_gone(record.id, exc)
                raise
            # In memory, stored in batches (no write transaction per message; issue 15).
            self.store.note_activity(record.id, utcnow())

        return sent

    async def _deliver(self, prov: AvatarProvider, ps: ProviderSession, mode: Mode, text: str,
                       author: str | None) -> None:
        """Send one message to the vendor (its turn in the session's queue has come).

        The person's line is published now, not when it was queued, so a thread shows it right
        before the avatar's answer.
        """
        self.events.publish(Transcript(
            session_id=ps.session_id, speaker="user", text=text, author=author,
            intent=mode.value,
        ))
        if not await self._sent_home(prov, ps.session_id, mode.value, text=text):
            await self.deliver_here(prov, ps, mode, text)

    async def deliver_here(self, prov: AvatarProvider, ps: ProviderSession, mode: Mode,
                           text: str) -> None:
        """Hand one message to the provider in this process (the session's home)."""
        await (prov.say(ps, text) if mode is Mode.SAY else prov.ask(ps, text))

    async def home_of(self, prov: AvatarProvider, session_id: str) -> str | None:
        """The address of the other worker that must handle this session, or ``None`` (here).

        Only sessions kept in one worker's memory have a home (bot/core/homes.py).
        """
        if self.homes is None or not has_home(prov.capabilities):
            return None
        return await self.homes.home_of(session_id)

    async def _sent_home(self, prov: AvatarProvider, session_id: str, op: str,
                         **fields: Any) -> bool:
        """Hand ``op`` to the session's home worker when it has one elsewhere; whether it did."""
        home = await self.home_of(prov, session_id)
        if home is None:
            return False
        assert self.homes is not None
        await self.homes.call(home, op, session_id, **fields)
        return True

    async def interrupt(self, session_id: str, *, tenant: TenantKey | None = None) -> None:
        """Stop the avatar's current speech."""
        record = await self.live(session_id, tenant=tenant)
        prov, ps = self._provider_session(record)
        if not prov.capabilities.interrupt:
            raise InvalidRequest(f"{prov.display_name} avatars cannot be interrupted.")
        try:
            if not await self._sent_home(prov, session_id, "interrupt"):
                await prov.interrupt(ps)
        except ProviderSessionGone as exc:
            await self._end_if_gone(session_id, exc)
            raise

    async def set_context(self, session_id: str, text: str, *,
                          tenant: TenantKey | None = None) -> None:
        """Replace the knowledge the avatar answers from."""
        record = await self.live(session_id, tenant=tenant)
        prov, ps = self._provider_session(record)
        knowledge = _clean_knowledge(text, prov.capabilities) or ""
        if not prov.capabilities.set_context:
            raise InvalidRequest(f"{prov.display_name} avatars take no knowledge text.")
        try:
            await prov.set_context(ps, knowledge)
        except ProviderSessionGone as exc:
            await self._end_if_gone(session_id, exc)
            raise
        await self.store.set_session_fields(session_id, knowledge=knowledge)

    async def set_mode(self, session_id: str, mode: Mode, *,
                       tenant: TenantKey | None = None) -> None:
        """Set what plain thread messages do (ask or say)."""
        await self.live(session_id, tenant=tenant)
        await self.store.set_session_fields(session_id, mode=mode.value)

    def provider_session(self, record: SessionRecord) -> tuple[AvatarProvider, ProviderSession]:
        """The provider of a live record and its provider session (``SessionNotLive`` if none)."""
        return self._provider_session(record)

    def _provider_session(self, record: SessionRecord) -> tuple[AvatarProvider, ProviderSession]:
        ps = record.provider_session()
        if ps is None:
            raise SessionNotLive(record.id, record.state.value)
        return self.provider(record.provider), ps

    # ------------------------------------------------------------------ viewer side
    async def signalling(self, session_id: str) -> tuple[WebRTCSignalling, ProviderSession]:
        """The WebRTC signalling of a live webrtc session (local avatar, HeyGen v1)."""
        record = await self.live(session_id)
        prov, ps = self._provider_session(record)
        if ps.viewer.transport != "webrtc" or not isinstance(prov, WebRTCSignalling):
            raise InvalidRequest("This session does not use WebRTC signalling.")
        home = await self.home_of(prov, session_id)
        if home is not None:  # another worker renders it and holds its peers
            assert self.homes is not None
            return HomeSignalling(self.homes, home), ps
        return prov, ps

    async def viewer_data(self, session_id: str, payload: Any) -> list[Transcript]:
        """Decode a data message a viewer received from the vendor and publish its lines.

        With several workers it is decoded on the session's home, where the provider keeps
        what it sent (a confirmation or a reply is matched against that).
        """
        record = await self.live(session_id)
        prov, ps = self._provider_session(record)
        if await self._sent_home(prov, session_id, "data", payload=payload):
            return []
        return self.viewer_data_here(prov, ps, payload)

    def viewer_data_here(self, prov: AvatarProvider, ps: ProviderSession,
                         payload: Any) -> list[Transcript]:
        """Decode a viewer's data message in this process and publish its lines."""
        # What a page reports is not trusted: mentions and links are made inert before posting.
        lines = [line.model_copy(update={"text": neutralise(line.text)})
                 for line in prov.decode_viewer_data(ps, payload)]
        for line in lines:
            self.events.publish(line)
        return lines

    # ------------------------------------------------------------------ listing
    async def open_sessions(self, tenant: TenantKey | None = None) -> list[SessionRecord]:
        """Open sessions of one tenant or of all."""
        return await self.store.open_sessions(None if tenant is None else str(tenant))

    async def open_sessions_in(
        self, tenant: TenantKey, platform: str, channel_id: str
    ) -> list[SessionRecord]:
        """The tenant's open sessions bound to one chat channel, newest first.

        One indexed query: what channel-scoped commands (``link``, ``stop``, ``say`` without a
        session id) use, at the same cost whatever the number of sessions elsewhere.
        """
        return await self.store.open_sessions_in(str(tenant), platform, channel_id)

    async def healthy(self) -> None:
        """Raise unless the store answers (``/healthz``; constant time)."""
        await self.store.ping()

    async def fail_session(
        self, session_id: str, reason: str, *, pending_only: bool = False
    ) -> SessionRecord:
        """Fail an open session (the reaper's pending timeout) and publish its new state."""
        record = await self.store.fail_session(session_id, reason, pending_only=pending_only)
        if record.state is SessionState.FAILED:
            self._publish_state(record, reason)
        return record

    def publish_state(self, record: SessionRecord) -> None:
        """Publish a state change made outside this service (the reaper's reconciliation)."""
        self._publish_state(record)

    async def stop_all(self, reason: str, tenant: TenantKey | None = None) -> list[SessionSummary]:
        """Stop every open session (of one tenant, or all); used at uninstall and shutdown."""
        summaries = []
        for record in await self.open_sessions(tenant):
            try:
                summaries.append(await self.stop(record.id, reason))
            except AvatarBotError:
                log.exception("could not stop session", extra=_ctx(record))
        return summaries

    # ------------------------------------------------------------------ helpers
    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def _publish_state(self, record: SessionRecord, reason: str | None = None) -> None:
        if not record.state.is_open and record.state is not SessionState.ENDED:
            self._told_end(record.id)  # failed: nothing more will be told
        self.events.publish(StateChanged(
            session_id=record.id, state=record.state,
            reason=reason or record.failure_reason or record.end_reason,
            seconds_left=record.seconds_left(),
        ))


def parse_prefix(text: str, default: Mode) -> tuple[Mode, str]:
    """Split a ``!say``/``!ask`` prefix from a message; otherwise use ``default``."""
    stripped = text.strip()
    head, _, rest = stripped.partition(" ")
    if head.lower() in ("!say", "!ask"):
        return Mode(head[1:].lower()), rest.strip()
    return default, stripped


def readable_text(text: str) -> bool:
    r"""Whether ``text`` can be encoded as UTF-8.

    A JSON escape such as ``"\ud800"`` decodes to a lone surrogate, which SQLite, espeak-ng and
    the vendors' JSON refuse with an exception.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_text(text: str) -> str:
    """Stripped ``text``; refused when empty or not valid Unicode (length: ``_check_length``)."""
    text = (text or "").strip()
    if not text:
        raise InvalidRequest("There is nothing to say: the text is empty.")
    if not readable_text(text):
        raise InvalidRequest("The text holds characters that are not valid Unicode.")
    return text


def _check_length(text: str, caps: Capabilities) -> None:
    if len(text) > caps.max_text_chars:
        raise InvalidRequest(
            f"That text is too long ({len(text)} characters; this avatar takes at most "
            f"{caps.max_text_chars}). Shorten it or send it in parts."
        )


def _clean_knowledge(text: str | None, caps: Capabilities) -> str | None:
    if text is None or not text.strip():
        return None
    limit = caps.max_knowledge_chars
    if len(text) > limit:
        raise InvalidRequest(f"The knowledge text is too long (over {limit:,} characters).")
    if not readable_text(text):
        raise InvalidRequest("The knowledge text holds characters that are not valid Unicode.")
    return text.strip()


def _reason(exc: BaseException, vendor: str) -> str:
    if isinstance(exc, AvatarBotError):
        return exc.user_message
    if isinstance(exc, TimeoutError):
        return f"{vendor} did not start the session in time."
    if isinstance(exc, asyncio.CancelledError):
        return "The start was cancelled."
    return "The session could not start because of an internal error."


def _ctx(record: SessionRecord) -> dict[str, str]:
    return {"tenant": record.tenant, "session": record.id, "provider": record.provider}
