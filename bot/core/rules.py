"""The start rules: one pure function, used inside the store's transaction and by fast pre-checks.

The store calls ``check_start`` with the figures it read in the same ``BEGIN IMMEDIATE``
transaction that then reserves the credits, so its answer is authoritative. A platform that must
answer within a deadline (Discord's 3 seconds) may call it earlier with figures read a moment
before: the refusal it gets is the same error with the same words, only possibly stale.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.core.errors import InsufficientCredits, LimitReached, NotAllowed
from bot.core.models import Limits


def check_start(
    *,
    limits: Limits,
    active: bool,
    running: int,
    spent_today: int,
    available: int,
    cost: int,
    minutes: float,
    user: str,
    roles: Iterable[str],
) -> None:
    """Raise the typed refusal for a start, or return when every rule allows it.

    Args:
        limits: the tenant's limits.
        active: whether the tenant is active (an uninstalled workspace or left server is not).
        running: the tenant's open sessions (pending, live or ending).
        spent_today: credits ``user`` reserved or used today (UTC).
        available: the tenant's available credits.
        cost: credits the new session reserves.
        minutes: the session's requested length.
        user: who starts it.
        roles: the user's role ids on the platform.
    """
    if not active:
        raise NotAllowed("The bot was removed from this server or workspace; add it again first.")
    if (limits.allowed_roles or limits.allowed_users) and user not in limits.allowed_users \
            and not set(roles) & set(limits.allowed_roles):
        raise NotAllowed(
            "You are not among the roles or people allowed to start sessions here; "
            "ask an admin to allow you."
        )
    if minutes > limits.max_minutes:
        raise LimitReached(f"Sessions here last at most {limits.max_minutes} minutes.")
    if running >= limits.max_concurrent:
        raise LimitReached(
            f"{running} session(s) already running here (limit {limits.max_concurrent}); "
            "stop one first."
        )
    if spent_today + cost > limits.daily_user_credits:
        raise LimitReached(
            f"Your daily limit is {limits.daily_user_credits} credits; you have used "
            f"{spent_today} today and this session needs {cost}."
        )
    if available < cost:
        raise InsufficientCredits(available=available, required=cost)
