"""The reaper: upkeep of open sessions so that no paid vendor session is left running by us.

It ends sessions at expiry or when idle, keeps vendor sessions alive, retries vendor stops until
they are confirmed, closes vendor sessions we do not know, and at startup finishes what a crash
left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from datetime import UTC, datetime, timedelta

from bot.compat.cancel import cancel_and_wait
from bot.core.errors import AvatarBotError, ProviderError, ProviderSessionGone, SessionNotFound
from bot.core.events import AnyEvent, Ended, StateChanged, VendorEnded, Warning
from bot.core.leases import GLOBAL_LEASE, LeaseManager, session_lease
from bot.core.models import (
    Capabilities,
    ProviderSession,
    SessionRecord,
    SessionState,
    VendorStatus,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import AvatarProvider, PlannedVendorEnd, SessionStatusSource
from bot.core.service import SessionService

log = logging.getLogger(__name__)

# Posted into a relay vendor's thread when its home worker died (messages may have waited there).
RELAY_LOST_NOTICE = (
    "The server passing messages to the avatar stopped and another took over: anything sent in "
    "the last moments may not have reached it. If the avatar did not answer, send it again."
)

#: Longest run of reaper work between two yields to the event loop (issue 15: < 5 ms stalls).
YIELD_AFTER_S = 0.002
#: Most leases claimed in one Redis call by a rescan or a takeover (redis-py packs a call's
#: arguments in Python: 250 keys took 1.5 ms of CPU, several ms of loop lag on a busy machine).
CLAIM_BATCH = 100
#: Open session ids read per query by the rescan.
RESCAN_PAGE = 1000


class SessionReaper:
    """Periodic upkeep of open sessions, from an index of what is due next.

    Each open session has one entry in a heap keyed by the time its next duty falls due (expiry,
    the vendor's own planned end, the end warning, the idle warning and end, a keep-alive, a
    vendor status poll, a stop retry, the pending timeout). A tick pops only the entries that
    are due, reads those sessions afresh and tends them, then files each under its next due
    time. The heap is built from the store once (the first tick, or ``reconcile`` at startup)
    and a session enters it when the service publishes its state; activity only moves a due
    time later, which the popped session's fresh read finds. Scanning and validating every
    open session each tick blocked the loop for 12–24 ms at 500 sessions (issue 15).

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
        leases: with several workers, which of them tends which session and does the global
            chores (``bot/core/leases.py``); ``None`` for one process, which does everything.
        takeover_grace_s: with leases, a session opened less than this long ago whose lease is
            free is tended, not treated as left behind by a dead worker (its starter claims it).
        rescan_s: with leases, how often every open session is read to find any whose lease
            nobody took (a start whose worker died before claiming it, leases lost with Redis's
            data). Leases that ran out are found each tick without reading the sessions.
        takeover_batch: with leases, at most this many lapsed leases taken per tick.

    With leases (several workers) the index holds only the sessions whose lease this worker
    holds: those it starts, and those it takes over. Their changes reach it as events, local or
    from the other workers through the bus (``bot/cluster/bus.py``); a lost remote event is
    caught when the session's next duty falls due (each due session is read afresh) or by the
    periodic rescan. See docs/scale-out.md.
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
        leases: LeaseManager | None = None,
        takeover_grace_s: float = 30.0,
        rescan_s: float = 60.0,
        takeover_batch: int = 5000,
    ) -> None:
        self.leases = leases
        self.takeover_grace_s = takeover_grace_s
        self.rescan_s = rescan_s
        self.takeover_batch = takeover_batch
        # With leases: the sessions this worker tends (it holds their lease), each in the index.
        self._tended_here: set[str] = set()
        # Of those, the ones claimed from elsewhere and not read yet: maybe left by a dead worker.
        self._adopted: set[str] = set()
        # Sessions dropped here because this worker's own lease ran out (a late renewal): taken
        # again, they are not "left by a dead worker" (a local avatar rendered here must not end).
        self._lost: set[str] = set()
        # Ended sessions whose lease goes back at the next tick (the listener cannot await).
        self._to_release: set[str] = set()
        # Sessions started here whose lease ``claim_own_starts`` is to claim (filled by a
        # listener, which never misses an event the way a queue subscriber can).
        self._to_claim: set[str] = set()
        self._claim_wanted = asyncio.Event()
        self._last_rescan = float("-inf")
        self.service = service
        self.idle_timeout_s = idle_timeout_s
        self.warn_before_end_s = warn_before_end_s
        self.interval_s = interval_s
        self.orphan_sweep_s = orphan_sweep_s
        self.pending_timeout_s = pending_timeout_s
        self._warned: dict[str, set[str]] = {}
        self._kept_alive: dict[str, float] = {}
        self._status_asked: dict[str, float] = {}
        self._last_sweep = 0.0
        self._listed: set[str] = set()  # providers the last sweep could list
        self.transcript_retention_s = transcript_retention_s
        self.prune_every_s = prune_every_s
        self._last_prune = 0.0
        # (due as a POSIX time, tie-breaker, session id); ``_due`` holds each id's live entry,
        # older entries of the same id are skipped when popped.
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = 0
        # Per session: the vendor's own planned end, if its provider has one (computed once).
        self._planned: dict[str, VendorStatus | None] = {}
        # Per provider name: whether it is polled for status (a runtime protocol check costs
        # ~10 µs, too much to repeat for every session at every due time).
        self._polled: dict[str, SessionStatusSource | None] = {}
        self._indexed = False
        # The last snapshot of each indexed session (for keep-alives and status polls, which
        # need no fresh read: any state change drops it).
        self._records: dict[str, SessionRecord] = {}
        service.events.listen(self._on_event)
        if leases is not None:
            service.events.listen(self._on_local_event, remote=False)

    async def run(self, *, reconcile_first: bool = True) -> None:
        """Tick forever (until cancelled), after the startup reconciliation unless done already."""
        if reconcile_first:
            await self.reconcile()
        watcher = asyncio.create_task(self.watch_vendor_ends(), name="vendor-ends")
        claimer = asyncio.create_task(self.claim_own_starts(), name="claim-starts")
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await self.tick()
                except Exception:
                    log.exception("reaper tick failed")
        finally:
            for task in (watcher, claimer):
                await cancel_and_wait(task)
            if self.leases is not None:
                with contextlib.suppress(Exception):
                    await self._release_done()
                    # The sessions go on: the other workers take them over at their next tick.
                    await self.leases.release(
                        [GLOBAL_LEASE, *(session_lease(s) for s in self._tended_here)],
                        hand_over=True,
                    )

    def _on_local_event(self, event: AnyEvent) -> None:
        """A session this worker published a state of (it started it): claim its lease."""
        if (
            isinstance(event, StateChanged) and event.state.is_open
            and event.session_id not in self._tended_here
        ):
            self._to_claim.add(event.session_id)
            self._claim_wanted.set()

    async def claim_own_starts(self) -> None:
        """With leases, claim a session's lease as soon as this worker starts it.

        Starts that arrive together are claimed in one call.
        """
        if self.leases is None:
            return
        while True:
            await self._claim_wanted.wait()
            self._claim_wanted.clear()
            await self._claim_new()

    async def _claim_new(self) -> None:
        """Claim the leases of the sessions started here since the last call."""
        assert self.leases is not None
        wanted = [s for s in self._to_claim if s not in self._tended_here]
        self._to_claim.clear()
        for at in range(0, len(wanted), CLAIM_BATCH):
            batch = wanted[at:at + CLAIM_BATCH]
            try:
                held = await self.leases.claim(session_lease(s) for s in batch)
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.warning("could not claim %d new session(s): %r", len(batch), exc)
                self._to_claim.update(wanted[at:])
                return
            for session_id in batch:
                if session_lease(session_id) in held:
                    self._adopt(session_id, time.time(), left_behind=False)

    async def watch_vendor_ends(self) -> None:
        """End a session as soon as its provider reports that the vendor ended it."""
        async with self.service.events.subscribe(None, want=_vendor_ended) as queue:
            while True:
                event = await queue.get()
                if isinstance(event, VendorEnded):
                    await self.end_for_vendor(event)

    async def end_for_vendor(self, event: VendorEnded) -> None:
        """End the session the vendor ended, settling at the event's time.

        A session no longer live is left as it is.
        """
        if self.leases is not None and not await self.leases.claim(
            [session_lease(event.session_id)]
        ):
            return  # another worker tends it, and hears the same event
        try:
            at = datetime.fromtimestamp(event.at, tz=UTC)
            await self.service.vendor_ended(event.session_id, event.reason, at)
        except AvatarBotError as exc:
            log.warning("could not end session %s the vendor ended: %r", event.session_id, exc)
        if self.leases is not None and event.session_id not in self._tended_here:
            # Claimed for this end only (the worker that tended it is gone): not renewed on.
            with contextlib.suppress(Exception):
                await self.leases.release([session_lease(event.session_id)])

    # ------------------------------------------------------------------ startup
    async def reconcile(self) -> None:
        """Finish what a crash left: pending sessions fail, lost sessions end, stops resume.

        With leases, only one worker at a time reconciles, and only sessions no live worker
        holds (a session another worker tends is not left behind).

        Vendor bookings are resolved first (``bot/core/bookings.py``): what was booked but not
        recorded on its session is ended, unanswered bookings are swept or recorded in doubt.
        A booking whose open session another live worker holds is that worker's to finish.
        """
        records = await self.service.store.open_sessions()
        if self.leases is not None:
            if not await self.leases.claim([GLOBAL_LEASE]):
                return
            held = await self.leases.claim(session_lease(r.id) for r in records)
            others = {r.id for r in records if session_lease(r.id) not in held}
            records = [r for r in records if session_lease(r.id) in held]
            self._tended_here |= {r.id for r in records}
        else:
            others = set()
        keeper = self.service.bookings
        to_sweep = await keeper.resolve_after_crash(self.service.providers, skip=others)
        # Resolving may have closed some (a booking in doubt closes its session): read again,
        # and tell the closes (the open-session counts and the threads follow the events).
        still_open = await self.service.store.open_states()
        for record in records:
            if record.id not in still_open:
                self.service.publish_state(await self.service.store.get_session(record.id))
        for record in [r for r in records if r.id in still_open]:
            try:
                await self._reconcile_one(record)
            except AvatarBotError:
                log.exception("could not reconcile session %s", record.id)
        swept_at = utcnow()
        await self.sweep_orphans(force=True)
        for name in to_sweep:
            if name in self._listed:
                await keeper.released_after_sweep(name, swept_at)
        await self._rebuild(utcnow())

    async def _reconcile_one(self, record: SessionRecord) -> None:
        prov = self.service.providers.get(record.provider)
        if record.state is SessionState.PENDING:
            # The vendor may have started it; if so the orphan sweep (or its expiry) ends it.
            ps = record.provider_session()
            await self.service.fail_session(
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
            ending = await self.service.store.begin_end(
                record.id, "the server restarted", min(utcnow(), idle_end)
            )
            self.service.publish_state(ending)
            await self.service.retry_stop(record.id)
        elif record.state is SessionState.ENDING:
            await self.service.retry_stop(record.id)

    # ------------------------------------------------------------------ periodic
    async def tick(self, now: datetime | None = None) -> None:
        """Tend every session with a duty due at ``now`` (by default: now)."""
        now = now or utcnow()
        if self.leases is not None:
            await self._tick_cluster(now)
            return
        if not self._indexed:
            await self._rebuild(now)
        await self._run_due(now)
        await self.sweep_orphans()
        await self.prune_transcripts(now)

    async def _run_due(self, now: datetime) -> None:
        """Tend the indexed sessions whose next duty is due at ``now``; file each anew."""
        stamp = now.timestamp()
        ran_since = time.perf_counter()
        while self._heap and self._heap[0][0] <= stamp:
            due, _, session_id = heapq.heappop(self._heap)
            if self._due.get(session_id) != due:
                continue  # superseded by a later entry of the same session
            del self._due[session_id]
            if self.leases is not None and not self.leases.holds(session_lease(session_id)):
                # Not renewed in time, or another worker has it: whoever holds it tends it (a
                # lease that ran out is listed as lapsed and taken again, maybe by us).
                self._forget(session_id, release=False)
                self._lost.add(session_id)
                continue
            cached = self._records.get(session_id)
            if cached is not None and self._fixed_due(cached) > stamp:
                # Only a keep-alive or a status poll is due: the snapshot has what they need.
                await self._poll(cached, stamp)
            else:
                await self._tend_fresh(session_id, now)
            if time.perf_counter() - ran_since > YIELD_AFTER_S:
                # Many sessions can fall due together (a status poll each 5 s): let the loop
                # serve requests in between so the reaper never stalls it for long.
                await asyncio.sleep(0)
                ran_since = time.perf_counter()

    async def _tick_cluster(self, now: datetime) -> None:
        """A tick with several workers: the due sessions among those this worker holds.

        Per tick: one Redis read for leases that lapsed (a dead worker's, or handed over by one
        leaving), one claim of the global lease, and the due sessions; not a read of every open
        session (that is the rescan, every ``rescan_s``). A lease that lapsed is found at the
        first tick after it ran out: a takeover within ``LEASE_TTL_S`` plus one tick.
        """
        assert self.leases is not None
        await self._release_done()
        stamp = now.timestamp()
        try:
            await self._claim_new()  # also what a claim failed for meanwhile
            if not self._indexed or time.monotonic() - self._last_rescan >= self.rescan_s:
                await self._rescan(stamp)
            else:
                lapsed = await self.leases.lapsed("session:", self.takeover_batch)
                await self._claim_left([n.removeprefix("session:") for n in lapsed], stamp)
        except Exception as exc:  # noqa: BLE001 - Redis away: what is held is still tended
            log.warning("could not look for sessions to take over: %r", exc)
        await self._run_due(now)
        try:
            chores = bool(await self.leases.claim([GLOBAL_LEASE]))
        except Exception as exc:  # noqa: BLE001 - the chores wait for Redis
            log.warning("could not claim the global lease: %r", exc)
            chores = False
        if chores:
            await self.sweep_orphans()
            await self.prune_transcripts(now)

    async def _rescan(self, stamp: float) -> None:
        """Read which sessions are open (ids only) and claim those whose lease nobody holds.

        A page of ids at a time (``RESCAN_PAGE``): at 5,000 sessions reading them all at once
        held the loop for about 8 ms.
        """
        tended_before = set(self._tended_here)  # not those claimed while the pages are read
        open_ids: set[str] = set()
        after: str | None = None
        while True:
            page = await self.service.store.open_session_ids(after, RESCAN_PAGE)
            open_ids.update(page)
            await self._claim_left([s for s in page if s not in self._tended_here], stamp)
            if len(page) < RESCAN_PAGE:
                break
            after = page[-1]
        for session_id in (tended_before & self._tended_here) - open_ids:
            self._forget(session_id)  # ended without this worker hearing of it
        self._lost &= open_ids
        await self._release_done()
        self._indexed = True
        self._last_rescan = time.monotonic()

    async def _claim_left(self, session_ids: list[str], stamp: float) -> None:
        """Claim the leases of these sessions; index those won that were not tended here."""
        assert self.leases is not None
        for at in range(0, len(session_ids), CLAIM_BATCH):
            # In batches: neither this loop nor Redis (one script at a time) is held up long.
            batch = session_ids[at:at + CLAIM_BATCH]
            held = await self.leases.claim(session_lease(s) for s in batch)
            for session_id in batch:
                if session_lease(session_id) in held and session_id not in self._tended_here:
                    # Due at once: read afresh this tick, taken over if left by a dead worker.
                    self._adopt(session_id, stamp, left_behind=session_id not in self._lost)
                    self._lost.discard(session_id)

    def _adopt(self, session_id: str, due: float, *, left_behind: bool) -> None:
        """Tend a session whose lease this worker now holds, from ``due`` on."""
        self._tended_here.add(session_id)
        self._to_release.discard(session_id)
        if left_behind:
            self._adopted.add(session_id)
        self._records.pop(session_id, None)
        self._schedule(session_id, due)

    async def _release_done(self) -> None:
        """Give back the leases of sessions that ended (they are no longer renewed)."""
        assert self.leases is not None
        done = self._to_release - self._tended_here
        self._to_release = set()
        if not done:
            return
        try:
            await self.leases.release(session_lease(s) for s in done)
        except Exception as exc:  # noqa: BLE001 - tried again next tick
            log.warning("could not release %d lease(s): %r", len(done), exc)
            self._to_release |= done

    async def prune_transcripts(self, now: datetime | None = None, *, force: bool = False) -> int:
        """Forget transcript lines past the retention period; how many went."""
        if self.transcript_retention_s is None:
            return 0
        if not force and time.monotonic() - self._last_prune < self.prune_every_s:
            return 0
        self._last_prune = time.monotonic()
        before = (now or utcnow()).timestamp() - self.transcript_retention_s
        return await self.service.store.prune_transcripts(before)

    async def _poll(self, record: SessionRecord, stamp: float) -> None:
        try:
            if not await self._vendor_ended_it(record):
                await self._keep_alive_if_due(record)
        except AvatarBotError as exc:
            log.warning("reaper could not tend session %s: %r", record.id, exc)
        if record.id in self._records:  # not ended meanwhile
            self._schedule(record.id, self._next_due(record, stamp))

    async def _tend_fresh(self, session_id: str, now: datetime) -> None:
        stamp = now.timestamp()
        try:
            record = await self.service.store.get_session(session_id)
            if session_id in self._adopted:
                age = (now - record.created_at).total_seconds()
                if record.state.is_open and age > self.takeover_grace_s:
                    # Its lease was free: the worker that tended it stopped renewing (it died).
                    log.warning("taking over session %s from a worker that stopped", session_id)
                    await self._reconcile_one(record)
                    # What survived its worker (a vendor session) is tended from now on.
                    record = await self.service.store.get_session(session_id)
                    self._notice_lost_relay(record)
                self._adopted.discard(session_id)
            if record.state.is_open:
                await self._tend(record, now)
                # Read again: tending may have ended it or set its next stop retry.
                record = await self.service.store.get_session(session_id)
        except SessionNotFound:
            self._forget(session_id)
            return
        except AvatarBotError as exc:
            log.warning("reaper could not tend session %s: %r", session_id, exc)
            self._schedule(session_id, stamp + self.interval_s)
            return
        if record.state.is_open:
            self._records[session_id] = record
            self._schedule(session_id, self._next_due(record, stamp))
        else:
            self._forget(session_id)

    def _notice_lost_relay(self, record: SessionRecord) -> None:
        """Say so when a session relayed through the viewer page outlived its home worker.

        Its messages waited in the dead worker's outbox for the page (docs/scale-out.md,
        "Sessions with a home"); nobody can tell which, so the people are asked to resend.
        """
        prov = self.service.providers.get(record.provider)
        if record.state is SessionState.LIVE and prov is not None \
                and prov.capabilities.control == "viewer":
            self.service.events.publish(Warning(session_id=record.id, text=RELAY_LOST_NOTICE))

    def due_at(self, session_id: str) -> float | None:
        """When the reaper next tends a session (a POSIX time), or None when it is not indexed."""
        return self._due.get(session_id)

    @property
    def indexed(self) -> int:
        """How many sessions the index holds (each open session once)."""
        return len(self._due)

    async def _rebuild(self, now: datetime) -> None:
        """Index every open session from the store (once: at startup or the first tick).

        With leases, only those this worker holds (``reconcile`` claimed them).
        """
        self._heap, self._due, self._records = [], {}, {}
        stamp = now.timestamp()
        tended_before = set(self._tended_here)
        records = await self.service.store.open_sessions()
        if self.leases is not None:
            for session_id in (tended_before & self._tended_here) - {r.id for r in records}:
                self._forget(session_id)
            records = [r for r in records if r.id in self._tended_here]
            self._last_rescan = time.monotonic()
        for record in records:
            self._records[record.id] = record
            self._schedule(record.id, self._next_due(record, stamp, first=True))
        self._indexed = True

    def _on_event(self, event: AnyEvent) -> None:
        """A session changed state: tend it at the next tick (or forget it once closed).

        With leases, only sessions tended here count; their events may come from any worker.
        """
        if self.leases is not None and event.session_id not in self._tended_here:
            return
        if isinstance(event, Ended) or (
            isinstance(event, StateChanged) and not event.state.is_open
        ):
            self._forget(event.session_id)
        elif isinstance(event, StateChanged):
            self._records.pop(event.session_id, None)
            self._schedule(event.session_id, time.time())

    def _schedule(self, session_id: str, due: float) -> None:
        """File the session under ``due``, or earlier if it is already filed earlier."""
        current = self._due.get(session_id)
        if current is not None and current <= due:
            return
        self._due[session_id] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, session_id))

    def _forget(self, session_id: str, *, release: bool = True) -> None:
        """Drop the per-session bookkeeping of a session that is no longer open (or tended here).

        With leases, ``release`` gives its lease back at the next tick.
        """
        self._due.pop(session_id, None)  # its heap entry is skipped when popped
        self._records.pop(session_id, None)
        self._warned.pop(session_id, None)
        self._kept_alive.pop(session_id, None)
        self._status_asked.pop(session_id, None)
        self._planned.pop(session_id, None)
        self._adopted.discard(session_id)
        if session_id in self._tended_here:
            self._tended_here.discard(session_id)
            if release:
                self._to_release.add(session_id)

    def _next_due(self, record: SessionRecord, now: float, *, first: bool = False) -> float:
        """When the session next needs the reaper, as a POSIX time after ``now``.

        With ``first`` (building the index) a duty already due counts as due now.
        """
        if record.state is SessionState.PENDING:
            due = record.created_at.timestamp() + self.pending_timeout_s + 0.001
        elif record.state is SessionState.ENDING:
            due = record.next_stop_at.timestamp() if record.next_stop_at else now
        else:
            due = self._next_live_due(record)
        if first:
            return due
        # Never due again in the same tick: a duty that could not be done waits one interval.
        return due if due > now else now + self.interval_s

    def _next_live_due(self, record: SessionRecord) -> float:
        """The earliest duty of a live session not done yet (it may be due already)."""
        due = self._fixed_due(record)
        prov = self.service.providers.get(record.provider)
        if prov is not None and record.provider_session() is not None:
            # Keep-alives and status polls run on the monotonic clock: convert what is left.
            wall, mono = time.time(), time.monotonic()
            keep = prov.capabilities.keep_alive_interval_s
            if keep is not None:
                due = min(due, wall + keep - (mono - self._kept_alive.get(record.id, 0.0)))
            status = prov.capabilities.status_interval_s
            if status is not None and self._status_source(prov) is not None:
                asked = self._status_asked.get(record.id, float("-inf"))
                due = min(due, wall + status - (mono - asked))
        return due

    def _status_source(self, prov: AvatarProvider) -> SessionStatusSource | None:
        """``prov`` if the reaper asks it about its sessions, else None (judged once).

        Asked: a ``SessionStatusSource`` with a ``status_interval_s``.
        """
        if prov.name not in self._polled:
            source = prov if isinstance(prov, SessionStatusSource) else None
            asked = prov.capabilities.status_interval_s is not None
            self._polled[prov.name] = source if asked else None
        return self._polled[prov.name]

    def _planned_end(self, record: SessionRecord) -> VendorStatus | None:
        """The vendor's own end of a live session, known in advance (``PlannedVendorEnd``)."""
        if record.id in self._planned:
            return self._planned[record.id]
        prov = self.service.providers.get(record.provider)
        ps = record.provider_session()
        end = (prov.planned_end(ps) if isinstance(prov, PlannedVendorEnd) and ps is not None
               else None)
        if ps is not None:  # a vendor session's handle does not change once it is live
            self._planned[record.id] = end
        return end

    def _fixed_due(self, record: SessionRecord) -> float:
        """The earliest of a session's duties that a fresh read must judge.

        Expiry, the end warning, the idle warning and the idle end: activity since the snapshot
        only moves the idle times later, so a snapshot never makes them late.
        """
        if record.state is not SessionState.LIVE:
            return float("-inf")
        warned = self._warned.get(record.id, set())
        candidates = []
        if record.expires_at is not None:
            expires = record.expires_at.timestamp()
            candidates.append(expires)
            if record.requested_s > self.warn_before_end_s and "end" not in warned:
                candidates.append(expires - self.warn_before_end_s)
        idle_end = record.last_activity_at.timestamp() + self.idle_timeout_s
        candidates.append(idle_end)
        if f"idle@{record.last_activity_at.isoformat()}" not in warned:
            candidates.append(idle_end - 60)
        planned = self._planned_end(record)
        if planned is not None and planned.ended_at is not None:
            candidates.append(planned.ended_at.timestamp())
        return min(candidates)

    async def _tend(self, record: SessionRecord, now: datetime) -> None:
        if record.state is SessionState.LIVE:
            await self._tend_live(record, now)
        elif record.state is SessionState.ENDING:
            if record.next_stop_at is None or record.next_stop_at <= now:
                await self.service.retry_stop(record.id)
        elif (now - record.created_at).total_seconds() > self.pending_timeout_s:
            await self.service.fail_session(
                record.id, "The start never completed.", pending_only=True
            )

    async def _tend_live(self, record: SessionRecord, now: datetime) -> None:
        assert record.expires_at is not None
        left = (record.expires_at - now).total_seconds()
        idle = (now - record.last_activity_at).total_seconds()
        planned = self._planned_end(record)
        if left <= 0:
            await self.service.stop(record.id, "time is up")
        elif planned is not None and planned.ended_at is not None and planned.ended_at <= now:
            await self.service.vendor_ended(
                record.id, planned.reason or "the vendor ended the session", planned.ended_at)
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
        warned = self._warned.setdefault(record.id, set())
        if key in warned:
            return
        warned.add(key)
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
        source = self._status_source(prov) if prov is not None else None
        ps = record.provider_session()
        if prov is None or source is None or ps is None:
            return False
        interval = prov.capabilities.status_interval_s or 0.0  # set: ``_status_source``
        if time.monotonic() - self._status_asked.get(record.id, float("-inf")) < interval:
            return False
        self._status_asked[record.id] = time.monotonic()
        try:
            status = await source.status(ps)
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


def _vendor_ended(event: AnyEvent) -> bool:
    return isinstance(event, VendorEnded)
