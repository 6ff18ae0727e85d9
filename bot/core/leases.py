"""Leases: which worker does a session's upkeep (and the cluster-wide chores) right now.

With one process every lease is always held (``SoleWorker``). With several workers sharing one
database, ``bot/cluster/leases.py`` implements ``LeaseManager`` over Redis: a lease is held by one
worker at a time and expires unless renewed, so when a worker dies another takes over within
``LEASE_TTL_S`` plus one reaper tick. See docs/scale-out.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

# The lease of the chores that must run on one worker at a time: the startup reconciliation and
# the orphan sweep.
GLOBAL_LEASE = "global"


def session_lease(session_id: str) -> str:
    """The name of the lease over one session's upkeep."""
    return f"session:{session_id}"


class LeaseManager(Protocol):
    """Claims and renews named leases for this worker."""

    async def claim(self, names: Iterable[str]) -> set[str]:
        """Take or renew each lease that is free or already ours; return those now held."""
        ...

    def holds(self, name: str) -> bool:
        """Whether the lease was ours at the last claim and has not run out since."""
        ...

    async def release(self, names: Iterable[str], *, hand_over: bool = False) -> None:
        """Give up leases held here (others may take them at once).

        ``hand_over``: the work goes on elsewhere (this worker is leaving), so the leases are
        listed by ``lapsed`` at once; without it the work is done (the session ended).
        """
        ...

    async def lapsed(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` leases named ``prefix…`` that nobody holds but whose work is not done.

        Those that ran out because their holder stopped renewing them (it died), and those
        handed over. What the other workers should take over, without reading every session.
        """
        ...


class SoleWorker:
    """The one-process default: every lease is this worker's."""

    async def claim(self, names: Iterable[str]) -> set[str]:
        """Every lease asked for."""
        return set(names)

    def holds(self, name: str) -> bool:
        """Always."""
        return True

    async def release(self, names: Iterable[str], *, hand_over: bool = False) -> None:
        """Nothing to give up."""

    async def lapsed(self, prefix: str, limit: int) -> list[str]:
        """None: nothing is ever left behind by another worker."""
        return []
