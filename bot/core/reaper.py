"""The reaper: upkeep of open sessions so that no paid vendor session is left running by us.

It ends sessions at expiry or when idle, keeps vendor sessions alive, retries vendor stops until
they are confirmed, closes vendor sessions we do not know, and at startup finishes what a crash
left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from bot.core.errors import AvatarBotError, ProviderError, ProviderSessionGone
from bot.core.events import VendorEnded, Warning
from bot.core.models import (
    Capabilities,
    ProviderSession,
    SessionRecord,
    SessionState,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import SessionStatusSource
from bot.core.service import SessionService

log = logging.getLogger(__name__)


class SessionReaper:
    """Periodic upkeep of open sessions.

    Args:
        service: the session service whose sessions are kept.
        idle_timeout_s: a live session with no chat for this long is ended (a warning comes
            a minute before).
        warn_before_end_s: when to warn that the session's time is nearly up.
        interval_s: how often ``run`` ticks.
        orphan_sweep_s: how often vendors are asked for sessions we do not know.
        pending_timeout_s: a session still pending after this long is failed.
        transcript_retention_s: transcript lines older than this are forgotten (None keeps
            them); pruned at most every ``prune_every_s``.
    """

    def __init__(
        self,
        service: SessionService,
        *,
        idle_timeout_s: int = 300,
        warn_before_end_s: int = 120,
        interval_s: float = 5.0,
        orphan_sweep_s: float = 120.0,
        pending_timeout_s: float = 120.0,
        transcript_retention_s: float | None = None,
        prune_every_s: float = 600.0,
    ) -> None:
        self.service = service
        self.idle_timeout_s = idle_timeout_s
        self.warn_before_end_s = warn_before_end_s
        self.interval_s = interval_s
        self.orphan_sweep_s = orphan_sweep_s
        self.pending_timeout_s = pending_timeout_s
        self._warned: set[tuple[str, str]] = set()
        self._kept_alive: dict[str, float] = {}
        self._status_asked: dict[str, float] = {}
        self._last_sweep = 0.0
        self._listed: set[str] = set()  # providers the last sweep could list
        self.transcript_retention_s = transcript_retention_s
        self.prune_every_s = prune_every_s
        self._last_prune = 0.0

    async def run(self, *, reconcile_first: bool = True) -> None:
        """Tick forever (until cancelled), after the startup reconciliation unless done already."""
        if reconcile_first:
            await self.reconcile()
        watcher = asyncio.create_task(self.watch_vendor_ends(), name="vendor-ends")
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await self.tick()
                except Exception:
                    log.exception("reaper tick failed")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def watch_vendor_ends(self) -> None:
        """End a session as soon as its provider reports that the vendor ended it."""
        async with self.service.events.subscribe(None) as queue:
            while True:
                event = await queue.get()
                if isinstance(event, VendorEnded):
                    await self.end_for_vendor(event)

    async def end_for_vendor(self, event: VendorEnded) -> None:
        """End the session the vendor ended, settling at the event's time.

        A session no longer live is left as it is.
        """
        try:
            at = datetime.fromtimestamp(event.at, tz=UTC)
            await self.service.vendor_ended(event.session_id, event.reason, at)
        except AvatarBotError as exc:
            log.warning("could not end session %s the vendor ended: %r", event.session_id, exc)

    # ------------------------------------------------------------------ startup
    async def reconcile(self) -> None:
        """Finish what a crash left: pending sessions fail, lost sessions end, stops resume.

        Vendor bookings are resolved first (``bot/core/bookings.py``): what was booked but not
        recorded on its session is ended, unanswered bookings are swept or recorded in doubt.
        """
        keeper = self.service.bookings
        to_sweep = await keeper.resolve_after_crash(self.service.providers)
        for record in await self.service.store.open_sessions():
            try:
                await self._reconcile_one(record)
            except AvatarBotError:
                log.exception("could not reconcile session %s", record.id)
        swept_at = utcnow()
        await self.sweep_orphans(force=True)
        for name in to_sweep:
            if name in self._listed:
                await keeper.released_after_sweep(name, swept_at)

    async def _reconcile_one(self, record: SessionRecord) -> None:
        prov = self.service.providers.get(record.provider)
        if record.state is SessionState.PENDING:
            # The vendor may have started it; if so the orphan sweep (or its expiry) ends it.
            ps = record.provider_session()
            await self.service.store.fail_session(
                record.id, "The server restarted while starting.", pending_only=True
            )
            if ps is not None and prov is not None:
                await self._stop_quietly(record.provider, ps)
            return
        survives = prov is not None and prov.capabilities.survives_restart
        if record.state is SessionState.LIVE and not survives:
            # It died with the old process, whose idle rule would have ended it by then at the
            # latest: the downtime is not use.
            idle_end = record.last_activity_at + timedelta(seconds=self.idle_timeout_s)
            await self.service.store.begin_end(
                record.id, "the server restarted", min(utcnow(), idle_end)
            )
            await self.service.retry_stop(record.id)
        elif record.state is SessionState.ENDING:
            await self.service.retry_stop(record.id)

    # ------------------------------------------------------------------ periodic
    async def tick(self, now: datetime | None = None) -> None:
        """One pass over every open session."""
        now = now or utcnow()
        records = await self.service.store.open_sessions()
        for record in records:
            try:
                await self._tend(record, now)
            except AvatarBotError as exc:
                log.warning("reaper could not tend session %s: %r", record.id, exc)
        self._forget_closed({r.id for r in records})
        await self.sweep_orphans()
        await self.prune_transcripts(now)

    async def prune_transcripts(self, now: datetime | None = None, *, force: bool = False) -> int:
        """Forget transcript lines past the retention period; how many went."""
        if self.transcript_retention_s is None:
            return 0
        if not force and time.monotonic() - self._last_prune < self.prune_every_s:
            return 0
        self._last_prune = time.monotonic()
        before = (now or utcnow()).timestamp() - self.transcript_retention_s
        return await self.service.store.prune_transcripts(before)

    def _forget_closed(self, open_ids: set[str]) -> None:
        """Drop per-session bookkeeping of sessions that are no longer open."""
        self._warned = {key for key in self._warned if key[0] in open_ids}
        self._kept_alive = {k: v for k, v in self._kept_alive.items() if k in open_ids}
        self._status_asked = {k: v for k, v in self._status_asked.items() if k in open_ids}

    async def _tend(self, record: SessionRecord, now: datetime) -> None:
        if record.state is SessionState.LIVE:
            await self._tend_live(record, now)
        elif record.state is SessionState.ENDING:
            if record.next_stop_at is None or record.next_stop_at <= now:
                await self.service.retry_stop(record.id)
        elif (now - record.created_at).total_seconds() > self.pending_timeout_s:
            await self.service.store.fail_session(
                record.id, "The start never completed.", pending_only=True
            )

    async def _tend_live(self, record: SessionRecord, now: datetime) -> None:
        assert record.expires_at is not None
        left = (record.expires_at - now).total_seconds()
        idle = (now - record.last_activity_at).total_seconds()
        if left <= 0:
            await self.service.stop(record.id, "time is up")
        elif await self._vendor_ended_it(record):
            return
        elif idle >= self.idle_timeout_s:
            await self.service.stop(record.id, "nobody wrote for a while")
        else:
            self._warn_if_due(record, left, idle)
            await self._keep_alive_if_due(record)

    def _warn_if_due(self, record: SessionRecord, left: float, idle: float) -> None:
        if left <= self.warn_before_end_s and record.requested_s > self.warn_before_end_s:
            minutes = max(1, round(left / 60))
            self._warn_once(record, "end", f"{minutes} minute(s) left.", int(left))
        idle_left = self.idle_timeout_s - idle
        if idle_left <= 60:
            self._warn_once(
                record, f"idle@{record.last_activity_at.isoformat()}",
                "Nobody has written for a while: the session ends in a minute unless someone does.",
                int(idle_left),
            )

    def _warn_once(self, record: SessionRecord, key: str, text: str, seconds_left: int) -> None:
        if (record.id, key) in self._warned:
            return
        self._warned.add((record.id, key))
        self.service.events.publish(
            Warning(session_id=record.id, text=text, seconds_left=seconds_left)
        )

    async def _keep_alive_if_due(self, record: SessionRecord) -> None:
        prov = self.service.providers.get(record.provider)
        interval = prov.capabilities.keep_alive_interval_s if prov else None
        ps = record.provider_session()
        if prov is None or interval is None or ps is None:
            return
        last = self._kept_alive.get(record.id, 0.0)
        if time.monotonic() - last < interval:
            return
        try:
            await prov.keep_alive(ps)
            self._kept_alive[record.id] = time.monotonic()
        except ProviderSessionGone as exc:
            await self.service.vendor_ended(record.id, exc.reason, exc.ended_at)
        except ProviderError as exc:
            log.warning("keep-alive failed for %s: %r", record.id, exc)

    async def _vendor_ended_it(self, record: SessionRecord) -> bool:
        """End the session as vendor-ended if its vendor says it is closed; return whether.

        The vendor is asked at most every ``capabilities.status_interval_s`` seconds.
        """
        prov = self.service.providers.get(record.provider)
        ps = record.provider_session()
        if prov is None or ps is None or not isinstance(prov, SessionStatusSource):
            return False
        interval = prov.capabilities.status_interval_s
        if interval is None:
            return False
        if time.monotonic() - self._status_asked.get(record.id, float("-inf")) < interval:
            return False
        self._status_asked[record.id] = time.monotonic()
        try:
            status = await prov.status(ps)
        except ProviderSessionGone as exc:
            await self.service.vendor_ended(record.id, exc.reason, exc.ended_at)
            return True
        except ProviderError as exc:
            log.warning("could not ask %s about session %s: %r", record.provider, record.id, exc)
            return False
        if status.open:
            return False
        reason = status.reason or f"{prov.display_name} ended the session"
        await self.service.vendor_ended(record.id, reason, status.ended_at)
        return True

    # ------------------------------------------------------------------ orphans
    async def sweep_orphans(self, *, force: bool = False) -> list[str]:
        """Stop vendor sessions that no open session of ours owns; return their vendor ids."""
        if not force and time.monotonic() - self._last_sweep < self.orphan_sweep_s:
            return []
        self._last_sweep = time.monotonic()
        stopped = []
        for name, prov in self.service.providers.items():
            if not prov.capabilities.lists_sessions:
                continue
            self._listed.discard(name)
            try:
                listed = await prov.list_open_sessions() or []
            except ProviderError as exc:
                log.warning("could not list %s sessions: %r", name, exc)
                continue
            # Read our sessions only now: every vendor session in ``listed`` was opened here
            # before the vendor answered, so it is pending or recorded by now.
            open_records = await self.service.store.open_sessions()
            if any(r.provider == name and r.state is SessionState.PENDING for r in open_records):
                continue  # a start is in flight: its vendor id is not recorded yet
            known = {r.provider_session_id for r in open_records if r.provider == name}
            self._listed.add(name)
            keeper = self.service.bookings
            ours = await self.service.store.deployment_vendor_ids(name, keeper.deployment_id)
            for vendor_id in listed:
                if vendor_id not in known:
                    if vendor_id not in ours and not keeper.sweep_unknown:
                        continue  # maybe another deployment's (SWEEP_UNKNOWN_VENDOR_SESSIONS)
                    log.warning("stopping unknown %s session", name)
                    if await self._stop_quietly(name, _orphan(name, vendor_id, prov.capabilities)):
                        stopped.append(vendor_id)
        return stopped

    async def _stop_quietly(self, name: str, ps: ProviderSession) -> bool:
        try:
            await self.service.providers[name].stop(ps)
            return True
        except (ProviderError, TimeoutError) as exc:
            log.warning("could not stop %s session: %r", name, exc)
            return False


def _orphan(provider: str, vendor_id: str, caps: Capabilities) -> ProviderSession:
    return ProviderSession(
        session_id=f"orphan-{vendor_id}", provider=provider, provider_session_id=vendor_id,
        viewer=ViewerInfo(transport=caps.transport), expires_at=utcnow() + timedelta(seconds=1),
    )
