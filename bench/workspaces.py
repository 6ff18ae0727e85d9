"""Sessions spread over Slack workspaces, for the benchmarks that need hundreds of them.

A workspace may hold at most 50 live sessions (``Limits.max_concurrent``'s highest value), so
``bench/scale.py`` (the core in one process) and ``bench/system.py`` (the real process, in
multi-workspace mode) put session number ``i`` in workspace ``team_of(i)``, and give each
workspace the credits and limits that let its 50 run for an hour.
"""

from __future__ import annotations

from typing import Any

PER_WORKSPACE = 50  # Limits.max_concurrent's highest value
CREDITS = 10**7  # the most one grant may add: far more than 50 one-hour sessions use
DAILY_USER_CREDITS = 1_000_000


def team_of(i: int) -> str:
    """The Slack team id of session number ``i``: ``T0`` for the first 50, ``T1`` after ..."""
    return f"T{i // PER_WORKSPACE}"


def workspaces_for(sessions: int) -> list[str]:
    """The team ids that ``sessions`` sessions numbered from 0 fill."""
    return [f"T{k}" for k in range((sessions + PER_WORKSPACE - 1) // PER_WORKSPACE)]


async def prepare_tenant(store: Any, tenant: str) -> None:
    """Credits and limits for a workspace's ``PER_WORKSPACE`` sessions (a ``SessionStore``)."""
    await store.grant(tenant, CREDITS, "bench")
    await store.set_limits(tenant, max_concurrent=PER_WORKSPACE,
                           daily_user_credits=DAILY_USER_CREDITS)
