"""Live gauges of the open sessions, kept from the session events instead of loading sessions.

``/metrics`` and the home page read these counts; at 500 sessions loading and validating every
open row per request took 24–114 ms (issue 15). The counts are loaded once from the store
(``SessionStore.open_states``, ids and states only) and then follow every ``StateChanged`` and
``Ended`` event the service publishes.
"""

from __future__ import annotations

from collections import Counter

from bot.core.events import AnyEvent, Ended, EventHub, StateChanged
from bot.core.models import SessionState
from bot.core.ports import SessionStore


class SessionCounts:
    """How many sessions are pending, live and ending now.

    Args:
        store: where the counts are loaded from once.
        events: the hub whose state events keep them current.
    """

    def __init__(self, store: SessionStore, events: EventHub) -> None:
        self._store = store
        self._states: dict[str, SessionState] = {}
        self._by_state: Counter[SessionState] = Counter()
        self._loaded = False
        # Ids that changed while the load was in flight: the event is newer than the snapshot.
        self._touched: set[str] | None = None
        events.listen(self._on_event)

    @property
    def loaded(self) -> bool:
        """Whether ``load`` has run (before that the counts miss older sessions)."""
        return self._loaded

    async def load(self) -> None:
        """Read every open session's state once; events keep the counts current from then on."""
        self._touched = set()
        try:
            snapshot = await self._store.open_states()
        finally:
            touched, self._touched = self._touched, None
        for session_id, state in snapshot.items():
            if session_id not in touched:
                self._set(session_id, state)
        self._loaded = True

    def count(self, state: SessionState) -> int:
        """Open sessions in ``state``."""
        return self._by_state[state]

    @property
    def open(self) -> int:
        """Pending, live and ending sessions together."""
        return len(self._states)

    def _on_event(self, event: AnyEvent) -> None:
        if isinstance(event, StateChanged):
            state: SessionState | None = event.state
        elif isinstance(event, Ended):
            state = None
        else:
            return
        if self._touched is not None:
            self._touched.add(event.session_id)
        self._set(event.session_id, state if state is not None and state.is_open else None)

    def _set(self, session_id: str, state: SessionState | None) -> None:
        old = self._states.pop(session_id, None)
        if old is not None:
            self._by_state[old] -= 1
        if state is not None:
            self._states[session_id] = state
            self._by_state[state] += 1


__all__ = ["SessionCounts"]
