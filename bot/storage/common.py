"""What the SQLite and PostgreSQL stores share: limits, open states, Slack row keys, sealed data.

One place, so the two backends cannot drift apart on a rule both must apply the same way.
"""

from __future__ import annotations

import json
from typing import Any

from bot.core.errors import InvalidRequest
from bot.core.models import Limits
from bot.core.ports import CredentialBox

#: The largest single grant.
MAX_GRANT = 10_000_000
#: The states of a session that still holds a reservation.
OPEN_STATES = ("pending", "live", "ending")
#: The plain fields of a session that ``update_session`` may set.
SESSION_FIELDS = frozenset({"mode", "knowledge", "last_activity_at", "avatar_name"})
# Slack redelivers an event for at most about an hour; ids older than this can go.
EVENT_MEMORY_S = 3 * 3600


def check_grant(amount: int) -> None:
    """Refuse a grant that is not a whole number from 1 to ``MAX_GRANT``."""
    if not isinstance(amount, int) or amount <= 0 or amount > MAX_GRANT:
        raise InvalidRequest(f"A grant must be a whole number from 1 to {MAX_GRANT:,}.")


def check_session_fields(fields: dict[str, Any]) -> None:
    """Refuse an update of no field or of one outside ``SESSION_FIELDS`` (a caller's bug)."""
    if not fields or set(fields) - SESSION_FIELDS:
        raise ValueError(f"cannot update {sorted(set(fields) - SESSION_FIELDS)}")


def merge_limits(current: Limits, changes: dict[str, Any], defaults: Limits) -> Limits:
    """The limits after ``changes`` (a None value goes back to the default), checked.

    The store writes ``None`` for a reset and the checked value otherwise; what this returns is
    what a read gives afterwards, so no read follows the write.

    Raises:
        InvalidRequest: an unknown limit or a bad value.
    """
    unknown = set(changes) - set(Limits.model_fields)
    if unknown:
        raise InvalidRequest(f"Unknown limit(s): {', '.join(sorted(unknown))}.")
    merged = current.model_dump() | {
        k: getattr(defaults, k) if v is None else v for k, v in changes.items()
    }
    try:
        return Limits.model_validate(merged)
    except ValueError as exc:
        raise InvalidRequest(f"Bad limit value: {exc}.") from None


def install_key(value: str | None) -> str:
    """A Slack installation key part (enterprise, team, user) as stored: absent is ``''``."""
    return value or ""


def seal_data(box: CredentialBox, data: dict[str, Any]) -> str:
    """A Slack row's data as stored: JSON sealed with ``box``."""
    return box.seal(json.dumps(data))


def open_data(box: CredentialBox, stored: Any) -> dict[str, Any] | None:
    """A row's data: a sealed JSON string opened, a plain (older) JSON object as it is."""
    if stored is None:
        return None
    if isinstance(stored, str):
        data: dict[str, Any] = json.loads(box.open(stored))
        return data
    return dict(stored)
