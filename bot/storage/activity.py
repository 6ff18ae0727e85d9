"""Activity times held in memory and stored in batches: shared by both store backends.

A thread message must not cost a write transaction (issue 15). ``note_activity`` therefore
only remembers the time here; a timer stores what was noted within ``ACTIVITY_FLUSH_S`` in one
write, and the store's close stores the rest. Until then every read of a session goes through
``fresh``, so the idle rule sees the newest time at once. A crash loses at most
``ACTIVITY_FLUSH_S`` of activity, which only makes an idle end come that much sooner.

The backend supplies ``write_rows``: one transaction storing ``{session id: time}``, never
moving a stored time backwards (a later ``update_session`` may have stored a newer one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from bot.core.models import SessionRecord

log = logging.getLogger(__name__)

#: How long activity times wait in memory before one batched write stores them.
ACTIVITY_FLUSH_S = 2.0

WriteRows = Callable[[dict[str, datetime]], Awaitable[None]]


class ActivityBuffer:
    """Noted activity times, the timer that stores them, and the overlay reads go through.

    Args:
        write_rows: stores one batch in one transaction (the backend's SQL).
        flush_s: how long a noted time may wait before its batch is written (default
            ``ACTIVITY_FLUSH_S``, read when the buffer is made).
    """

    def __init__(self, write_rows: WriteRows, flush_s: float | None = None) -> None:
        self._write_rows = write_rows
        self._flush_s = ACTIVITY_FLUSH_S if flush_s is None else flush_s
        # Times not stored yet, and those of a batch being written right now.
        self._noted: dict[str, datetime] = {}
        self._writing: dict[str, datetime] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def note(self, session_id: str, at: datetime) -> None:
        """Remember that people used the session at ``at``; a batch stores it soon."""
        self._noted[session_id] = at
        self._arm()

    def fresh(self, record: SessionRecord) -> SessionRecord:
        """``record`` with its activity time not yet stored, if there is a newer one."""
        noted = self._noted.get(record.id) or self._writing.get(record.id)
        if noted is not None and noted > record.last_activity_at:
            return record.model_copy(update={"last_activity_at": noted})
        return record

    async def flush(self) -> None:
        """Store the times noted so far in one transaction (nothing happens if none are)."""
        if not self._noted:
            return
        batch, self._noted = self._noted, {}
        self._writing.update(batch)
        try:
            await self._write_rows(batch)
        except BaseException:
            # Kept for the next batch, unless a newer time was noted meanwhile.
            for sid, at in batch.items():
                if sid not in self._noted or self._noted[sid] < at:
                    self._noted[sid] = at
            raise
        finally:
            for sid, at in batch.items():
                if self._writing.get(sid) == at:
                    del self._writing[sid]

    async def close(self) -> None:
        """Stop the timer and store what is left; a failure is logged, closing goes on."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.flush()
        except Exception:
            log.exception("could not store the last activity times")

    def _arm(self) -> None:
        if self._timer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._flush_s, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_logged(), name="activity")

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:  # kept in memory and retried with the next batch
            log.exception("could not store activity times; retrying later")
        if self._noted:  # a failed batch, or times noted while it was being written
            self._arm()


__all__ = ["ACTIVITY_FLUSH_S", "ActivityBuffer"]
