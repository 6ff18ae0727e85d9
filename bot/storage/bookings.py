"""SQL of vendor bookings, the operator's ledger, idempotent grants and seen Slack requests.

Plain functions run on the store's writer thread (``SqliteStore.run``/``write``); the async
methods that call them are on ``SqliteStore``. Schema: ``migrations/0006_bookings.sql``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from bot.core.bookings import BilledTo, Booking, BookingState
from bot.core.models import Balance, ProviderSession, SessionState, utcnow

_UNRESOLVED = ("intent", "booked")


def _now() -> str:
    return utcnow().isoformat()


def row_to_booking(row: sqlite3.Row) -> Booking:
    """A booking from its row."""
    data = dict(row)
    data["handle"] = json.loads(data.get("handle") or "{}")
    return Booking.model_validate(data)


def _select(where: str) -> str:
    return (
        "SELECT b.*, s.state AS session_state, s.requested_s AS requested_s "
        f"FROM bookings b LEFT JOIN sessions s ON s.id = b.session_id {where}"
    )


def record_intent(
    c: sqlite3.Connection, session_id: str, deployment_id: str, provider: str, tenant: str
) -> None:
    """Write the intent to book."""
    now = _now()
    c.execute(
        "INSERT OR IGNORE INTO bookings (session_id, deployment_id, provider, tenant, state, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, 'intent', ?, ?)",
        (session_id, deployment_id, provider, tenant, now, now),
    )


def record_answer(c: sqlite3.Connection, session_id: str, ps: ProviderSession) -> None:
    """Write the vendor's answer."""
    handle = {"expires_at": ps.expires_at.isoformat(), "transport": ps.viewer.transport,
              **ps.handle}
    c.execute(
        "UPDATE bookings SET state = 'booked', vendor_session_id = ?, handle = ?, updated_at = ? "
        "WHERE session_id = ? AND state IN ('intent', 'in_doubt')",
        (ps.provider_session_id, json.dumps(handle), _now(), session_id),
    )


def resolve(c: sqlite3.Connection, session_id: str, state: BookingState, note: str) -> None:
    """Mark an open booking refused or released."""
    c.execute(
        "UPDATE bookings SET state = ?, note = ?, updated_at = ? WHERE session_id = ? "
        "AND state IN ('intent', 'booked')",
        (state, note[:200], _now(), session_id),
    )


def mark_in_doubt(
    c: sqlite3.Connection, session_id: str, charge: int, billed_to: BilledTo, note: str,
    fail: Any, begin_end: Any, finish: Any, get: Any,
) -> None:
    """Mark a booking in doubt and close its session, in one transaction.

    The tenant's reservation is released (the operator bears the charge: one
    ``operator_ledger`` row) or settled (the tenant bears it).
    """
    row = c.execute(
        "SELECT * FROM bookings WHERE session_id = ? AND state = 'intent'", (session_id,)
    ).fetchone()
    if row is None:
        return
    rec = get(c, session_id)
    if billed_to == "tenant" and rec.state in (SessionState.PENDING, SessionState.LIVE):
        begin_end(c, session_id, "the vendor may have booked it (in doubt)", utcnow())
        finish(c, session_id, charge)
    else:
        if rec.state.is_open:
            fail(c, session_id, note)
        billed_to = "operator"
        c.execute(
            "INSERT OR IGNORE INTO operator_ledger (kind, amount, session_id, tenant, provider, "
            "note, created_at) VALUES ('in_doubt', ?, ?, ?, ?, ?, ?)",
            (charge, session_id, row["tenant"], row["provider"], note[:200], _now()),
        )
    c.execute(
        "UPDATE bookings SET state = 'in_doubt', likely_charge = ?, billed_to = ?, note = ?, "
        "updated_at = ? WHERE session_id = ?",
        (charge, billed_to, note[:200], _now(), session_id),
    )


def bookings(c: sqlite3.Connection, states: tuple[str, ...]) -> list[Booking]:
    """Bookings in ``states``, oldest first."""
    marks = ",".join("?" * len(states))
    rows = c.execute(_select(f"WHERE b.state IN ({marks}) ORDER BY b.created_at"), states)
    return [row_to_booking(r) for r in rows]


def get_booking(c: sqlite3.Connection, session_id: str) -> Booking | None:
    """The booking of a session."""
    row = c.execute(_select("WHERE b.session_id = ?"), (session_id,)).fetchone()
    return row_to_booking(row) if row else None


def deployment_vendor_ids(c: sqlite3.Connection, provider: str, deployment_id: str) -> set[str]:
    """Vendor ids one deployment booked at a provider."""
    rows = c.execute(
        "SELECT vendor_session_id FROM bookings WHERE provider = ? AND deployment_id = ? "
        "AND vendor_session_id IS NOT NULL", (provider, deployment_id),
    )
    return {r[0] for r in rows}


def operator_total(c: sqlite3.Connection) -> int:
    """The operator ledger's sum."""
    return int(c.execute("SELECT COALESCE(SUM(amount), 0) FROM operator_ledger").fetchone()[0])


def grant_once(
    c: sqlite3.Connection, request_id: str, tenant: str, amount: int, actor: str,
    grant: Any, balance: Any,
) -> tuple[Balance, bool]:
    """Grant unless this request id was granted already; ``(balance, granted_now)``."""
    # The insert is the check (as on PostgreSQL): no row added means the id was granted before.
    added = c.execute(
        "INSERT OR IGNORE INTO grant_requests VALUES (?, ?, ?, ?, ?)",
        (request_id, tenant, amount, actor, _now()),
    ).rowcount
    if not added:
        return balance(c, tenant), False
    return grant(c, tenant, amount, actor, f"request {request_id[:40]}"), True


def remember_request(c: sqlite3.Connection, key: str, window_s: float) -> bool:
    """Record a handled request; False when it was seen within the window (a replay)."""
    now = time.time()
    c.execute("DELETE FROM seen_requests WHERE seen_at < ?", (now - window_s,))
    cur = c.execute("INSERT OR IGNORE INTO seen_requests VALUES (?, ?)", (key, now))
    return cur.rowcount == 1
