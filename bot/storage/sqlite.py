"""The SQLite store: tenants, limits, sessions, the two-phase credit ledger and chat bindings.

One connection on one thread (``bot.storage.writer.SqliteWriter``) is the one writer. Each
operation is a plain function run on that thread, so a read-then-write is one
``BEGIN IMMEDIATE`` transaction with no other coroutine interleaved (the same shape as
datasette's ``execute_write_fn``).

One read on the thread-message path, ``get_session`` (one row by its primary key), runs on a
second, read-only connection in the caller's thread instead: in WAL mode a reader never waits
for the writer, and the row takes microseconds to read, against about 100 us of CPU for the
hop to the writer's thread and back (issue 15). A reader that finds the file busy (a
checkpoint resetting the WAL) asks the writer's thread instead.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bot.core.bookings import BilledTo, Booking, BookingState
from bot.core.errors import (
    SessionNotFound,
    StoreFault,
    StoreUnavailable,
    TenantNotFound,
)
from bot.core.models import (
    Balance,
    ChatBinding,
    LedgerEntry,
    Limits,
    ProviderSession,
    SessionRecord,
    SessionState,
    TranscriptLine,
    utcnow,
)
from bot.core.ports import CredentialBox
from bot.core.rules import check_start
from bot.storage import bookings as bookings_sql
from bot.storage import secrets as sealed
from bot.storage.activity import ActivityBuffer
from bot.storage.common import (
    OPEN_STATES,
    check_grant,
    check_session_fields,
    merge_limits,
)
from bot.storage.migrations import apply_migrations
from bot.storage.writer import SqliteWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

_OPEN = OPEN_STATES
_JSON_FIELDS = ("handle", "viewer")
_TIME_FIELDS = (
    "created_at", "started_at", "expires_at", "ending_at", "ended_at", "last_activity_at",
    "next_stop_at",
)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _row_to_session(row: sqlite3.Row) -> SessionRecord:
    data = dict(row)
    for key in _JSON_FIELDS:
        data[key] = json.loads(data[key]) if data[key] else None
    data["handle"] = data["handle"] or {}
    return SessionRecord.model_validate(data)


def _assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``SET`` text and values of an update of a session's plain fields."""
    check_session_fields(fields)
    values = [_ts(v) if isinstance(v, datetime) else v for v in fields.values()]
    return ", ".join(f"{k} = ?" for k in fields), values


def _tx(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``body`` inside one ``BEGIN IMMEDIATE`` transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return result


def _why(path: Path, exc: BaseException) -> str:
    """A plain cause for a failure to open the database (no traceback, no SQL)."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, FileNotFoundError) or not path.parent.is_dir():
        return f"its folder {path.parent} does not exist"
    if code == errno.EROFS:
        return "the file system is read-only"
    if isinstance(exc, PermissionError) or code == errno.EACCES or (
        path.exists() and not os.access(path, os.R_OK | os.W_OK)
    ):
        return "permission denied (check the owner and mode of the file and its folder)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return "the file is not a SQLite database or is corrupt"
    if "readonly" in text or "read-only" in text:
        return "the file or its folder is read-only (SQLite must write the file and its -wal)"
    if "unable to open" in text:
        return "the file cannot be opened"
    return text


class SqliteStore:
    """Async facade over one SQLite file; every public method is one transaction."""

    def __init__(self, writer: SqliteWriter, default_limits: Limits) -> None:
        self._writer: SqliteWriter | None = writer
        self.path = writer.path
        self._defaults = default_limits
        # Activity times noted but not stored yet (bot/storage/activity.py).
        self._activity = ActivityBuffer(self._write_activity)
        # The read-only connection of ``get_session``, used only from the opener's thread.
        self._reader: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path | str, default_limits: Limits | None = None) -> SqliteStore:
        """Open (or create, mode 0600) the database at ``path`` and apply pending migrations.

        Raises:
            StoreUnavailable: the file cannot be opened, is not a database, or cannot be
                written; no thread is left running.
        """
        writer = SqliteWriter(Path(path))
        store = cls(writer, default_limits or Limits())
        try:
            await writer.start()
            await writer.call(_configure)
            applied = await writer.call(apply_migrations)
        except (sqlite3.Error, OSError) as exc:
            await store.close()
            raise StoreUnavailable(str(path), _why(Path(path), exc)) from None
        except BaseException:
            await store.close()
            raise
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        store._reader = _open_reader(Path(path))
        return store

    async def close(self) -> None:
        """Store pending activity times, close the connection and end its thread (idempotent)."""
        if self._writer is not None:
            await self._activity.close()
            writer, self._writer = self._writer, None
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            await writer.close()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer's thread; extensions use this for their tables.

        Raises:
            StoreFault: the database failed the operation (locked, read-only, disk full,
                corrupt); its transaction was rolled back. Constraint errors pass unchanged.
        """
        if self._writer is None:
            raise RuntimeError("store is closed")
        try:
            return await self._writer.call(fn, *args)
        except sqlite3.OperationalError as exc:
            raise StoreFault(_why(self.path, exc)) from exc
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # IntegrityError and the like: a bug
                raise
            raise StoreFault(_why(self.path, exc)) from exc

    async def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body(conn)`` in one ``BEGIN IMMEDIATE`` transaction."""
        return await self.run(_tx, body)

    # --- tenants and limits
    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if it does not exist yet."""
        await self.write(lambda c: _ensure_tenant(c, tenant))

    async def tenant_exists(self, tenant: str) -> bool:
        """Whether the tenant has been seen."""
        return await self.run(_tenant_row, tenant) is not None

    async def tenant_active(self, tenant: str) -> bool:
        """Whether the tenant may start sessions (an unknown tenant may; it is created then)."""
        row = await self.run(_tenant_row, tenant)
        return row is None or bool(row["active"])

    async def list_tenants(self) -> list[str]:
        """Every tenant, sorted."""
        sql = "SELECT tenant FROM tenants ORDER BY 1"
        rows = await self.run(lambda c: c.execute(sql).fetchall())
        return [r[0] for r in rows]

    async def set_tenant_active(self, tenant: str, active: bool) -> None:
        """Mark a tenant active or inactive (e.g. an uninstalled Slack workspace)."""
        await self.write(
            lambda c: c.execute(
                "UPDATE tenants SET active = ? WHERE tenant = ?", (int(active), tenant)
            )
        )

    async def get_limits(self, tenant: str) -> Limits:
        """The tenant's limits, defaults filled in."""
        return await self.run(lambda c: _limits(c, tenant, self._defaults))

    async def set_limits(self, tenant: str, **changes: Any) -> Limits:
        """Change some of a tenant's limits; ``None`` restores the default."""
        return await self.write(lambda c: _set_limits(c, tenant, changes, self._defaults))

    async def default_avatar(self, tenant: str) -> str | None:
        """The tenant's default avatar (``provider:avatar id``), if an admin chose one."""
        row = await self.run(_tenant_row, tenant)
        return row["default_avatar"] if row is not None else None

    async def set_default_avatar(self, tenant: str, avatar: str | None) -> None:
        """Choose (or with ``None`` forget) the tenant's default avatar."""
        def body(c: sqlite3.Connection) -> None:
            _ensure_tenant(c, tenant)
            c.execute("UPDATE tenants SET default_avatar = ? WHERE tenant = ?", (avatar, tenant))

        await self.write(body)

    # --- ledger
    async def grant(self, tenant: str, amount: int, actor: str, note: str | None = None) -> Balance:
        """Credit ``amount`` to the tenant (creating it if new)."""
        check_grant(amount)
        return await self.write(lambda c: _grant(c, tenant, amount, actor, note))

    async def balance(self, tenant: str) -> Balance:
        """The tenant's cached balance."""
        return await self.run(_balance, tenant)

    async def history(self, tenant: str, limit: int = 50) -> list[LedgerEntry]:
        """The tenant's newest ledger entries first."""
        rows = await self.run(
            lambda c: c.execute(
                "SELECT * FROM ledger WHERE tenant = ? ORDER BY id DESC LIMIT ?", (tenant, limit)
            ).fetchall()
        )
        return [LedgerEntry.model_validate(dict(r)) for r in rows]

    async def user_spent_today(self, tenant: str, user: str) -> int:
        """Credits the user has reserved or used today (UTC)."""
        return await self.run(_user_spent_today, tenant, user, utcnow())

    # --- sessions
    async def open_session(self, record: SessionRecord, roles: Iterable[str] = ()) -> SessionRecord:
        """Insert a pending session and reserve its cost, if limits and credits allow."""
        roles = list(roles)
        return await self.write(lambda c: _open_session(c, record, roles, self._defaults))

    async def mark_live(self, session_id: str, ps: ProviderSession) -> SessionRecord:
        """Record the vendor session and move pending -> live."""
        return await self.write(lambda c: _mark_live(c, session_id, ps))

    async def fail_session(
        self, session_id: str, reason: str, *, pending_only: bool = False
    ) -> SessionRecord:
        """Move an open session to failed and release its whole reservation.

        With ``pending_only`` a session that is no longer pending is returned as is: a caller
        judging an older snapshot must not fail a session that has gone live meanwhile.
        """
        return await self.write(lambda c: _fail(c, session_id, reason, pending_only))

    async def begin_end(self, session_id: str, reason: str, at: datetime) -> SessionRecord:
        """Move pending/live -> ending (idempotent: an ending/ended session is returned as is)."""
        return await self.write(lambda c: _begin_end(c, session_id, reason, at))

    async def finish_session(self, session_id: str, settle: int) -> SessionRecord:
        """Move ending -> ended: settle ``settle`` credits, release the rest (idempotent)."""
        return await self.write(lambda c: _finish(c, session_id, settle))

    async def schedule_stop_retry(self, session_id: str, next_at: datetime) -> SessionRecord:
        """Count a failed vendor stop and set when to try again."""
        def body(c: sqlite3.Connection) -> SessionRecord:
            c.execute(
                "UPDATE sessions SET stop_attempts = stop_attempts + 1, next_stop_at = ? "
                "WHERE id = ?",
                (_ts(next_at), session_id),
            )
            return _get(c, session_id)

        return await self.write(body)

    async def update_session(self, session_id: str, **fields: Any) -> SessionRecord:
        """Set plain fields (mode, knowledge, last_activity_at) of a session."""
        assignments, values = _assignments(fields)

        def body(c: sqlite3.Connection) -> SessionRecord:
            c.execute(f"UPDATE sessions SET {assignments} WHERE id = ?", (*values, session_id))
            return _get(c, session_id)

        return self._activity.fresh(await self.write(body))

    async def set_session_fields(self, session_id: str, **fields: Any) -> None:
        """Like ``update_session`` without reading the row back (for callers that drop it)."""
        assignments, values = _assignments(fields)
        await self.write(
            lambda c: c.execute(
                f"UPDATE sessions SET {assignments} WHERE id = ?", (*values, session_id)
            )
        )

    def note_activity(self, session_id: str, at: datetime) -> None:
        """Record that people used the session at ``at``, without a database round trip.

        The time is stored by a batched write within ``ACTIVITY_FLUSH_S`` (and at ``close``);
        every read of the session sees it at once, so the idle rule is never misled.
        """
        self._activity.note(session_id, at)

    async def flush_activity(self) -> None:
        """Store the activity times noted so far in one transaction."""
        if self._writer is not None:
            await self._activity.flush()

    async def _write_activity(self, batch: dict[str, datetime]) -> None:
        rows = [(_ts(at), sid, _ts(at)) for sid, at in batch.items()]
        # Never move a time backwards (a later update_session may have stored a newer one).
        await self.write(lambda c: c.executemany(
            "UPDATE sessions SET last_activity_at = ? WHERE id = ? AND last_activity_at < ?",
            rows,
        ))

    async def get_session(self, session_id: str) -> SessionRecord:
        """The session, or ``SessionNotFound`` (read in this thread; see the module's notes)."""
        reader = self._reader
        if reader is not None and self._writer is not None:
            try:
                return self._activity.fresh(_get(reader, session_id))
            except sqlite3.Error:
                pass  # busy, or worse: the writer's thread reads it and reports the fault
        return self._activity.fresh(await self.run(_get, session_id))

    async def open_sessions_in(
        self, tenant: str, platform: str, channel_id: str
    ) -> list[SessionRecord]:
        """The tenant's open sessions bound to one platform channel, newest first.

        One indexed JOIN (``chat_bindings_channel``, migration 0005): its cost does not grow
        with the sessions of other channels.
        """
        sql = (
            "SELECT DISTINCT s.* FROM chat_bindings b JOIN sessions s ON s.id = b.session_id "
            "WHERE b.platform = ? AND b.channel_id = ? AND s.tenant = ? "
            "AND s.state IN ('pending', 'live', 'ending') ORDER BY s.created_at DESC"
        )
        rows = await self.run(
            lambda c: c.execute(sql, (platform, channel_id, tenant)).fetchall()
        )
        return [self._activity.fresh(_row_to_session(r)) for r in rows]

    async def open_states(self) -> dict[str, SessionState]:
        """Every open session's id and state (no row is validated: cheap at any size)."""
        rows = await self.run(
            lambda c: c.execute(
                "SELECT id, state FROM sessions WHERE state IN ('pending', 'live', 'ending')"
            ).fetchall()
        )
        return {r[0]: SessionState(r[1]) for r in rows}

    async def open_session_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` open sessions' ids greater than ``after``, in id order."""
        rows = await self.run(
            lambda c: c.execute(
                "SELECT id FROM sessions WHERE state IN ('pending', 'live', 'ending') "
                "AND id > ? ORDER BY id LIMIT ?", (after or "", max(1, int(limit))),
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def ping(self) -> None:
        """One trivial statement through the writer: raises when the store cannot answer."""
        await self.run(lambda c: c.execute("SELECT 1").fetchone())

    async def list_sessions(
        self,
        tenant: str | None = None,
        states: Iterable[SessionState] | None = None,
        limit: int = 50,
    ) -> list[SessionRecord]:
        """Sessions, newest first, filtered by tenant and states."""
        where, args = [], []
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if states is not None:
            wanted = [s.value for s in states]
            where.append(f"state IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        sql = "SELECT * FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        rows = await self.run(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [self._activity.fresh(_row_to_session(r)) for r in rows]

    async def open_sessions(self, tenant: str | None = None) -> list[SessionRecord]:
        """Every pending, live or ending session (of one tenant, filtered in SQL)."""
        states = [SessionState(s) for s in _OPEN]
        return await self.list_sessions(tenant=tenant, states=states, limit=1_000_000)

    # --- chat bindings
    async def bind_chat(self, binding: ChatBinding) -> None:
        """Remember which platform thread belongs to a session."""
        await self.write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO chat_bindings (session_id, platform, channel_id, "
                "thread_id, message_id, enterprise_id) VALUES (?, ?, ?, ?, ?, ?)",
                (binding.session_id, binding.platform, binding.channel_id, binding.thread_id,
                 binding.message_id, binding.enterprise_id),
            )
        )

    async def binding_for_thread(self, platform: str, thread_id: str) -> ChatBinding | None:
        """The binding of a platform thread, if any."""
        row = await self.run(
            lambda c: c.execute(
                "SELECT * FROM chat_bindings WHERE platform = ? AND thread_id = ?",
                (platform, thread_id),
            ).fetchone()
        )
        return ChatBinding.model_validate(dict(row)) if row else None

    async def bindings_for_session(self, session_id: str) -> list[ChatBinding]:
        """Every platform thread bound to a session."""
        rows = await self.run(
            lambda c: c.execute(
                "SELECT * FROM chat_bindings WHERE session_id = ?", (session_id,)
            ).fetchall()
        )
        return [ChatBinding.model_validate(dict(r)) for r in rows]

    # --- transcripts
    async def add_transcript_line(self, line: TranscriptLine) -> None:
        """Keep one final transcript line of a session."""
        await self.write(
            lambda c: c.execute(
                "INSERT INTO transcript_lines (session_id, at, speaker, text, author, intent)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (line.session_id, line.at, line.speaker, line.text, line.author, line.intent),
            )
        )

    async def add_transcript_lines(self, lines: Sequence[TranscriptLine]) -> None:
        """Keep several final transcript lines in one transaction, in order."""
        rows = [(line.session_id, line.at, line.speaker, line.text, line.author, line.intent)
                for line in lines]
        if rows:
            await self.write(
                lambda c: c.executemany(
                    "INSERT INTO transcript_lines (session_id, at, speaker, text, author, intent)"
                    " VALUES (?, ?, ?, ?, ?, ?)", rows,
                )
            )

    async def transcript(self, session_id: str, limit: int = 1000) -> list[TranscriptLine]:
        """The kept lines of a session, oldest first (the newest ``limit`` of them)."""
        rows = await self.run(
            lambda c: c.execute(
                "SELECT * FROM (SELECT * FROM transcript_lines WHERE session_id = ?"
                " ORDER BY id DESC LIMIT ?) ORDER BY id",
                (session_id, limit),
            ).fetchall()
        )
        return [TranscriptLine.model_validate({k: r[k] for k in r.keys() if k != "id"})
                for r in rows]

    async def prune_transcripts(self, before: float) -> int:
        """Forget lines older than ``before`` (epoch seconds); return how many went."""
        return await self.write(
            lambda c: c.execute("DELETE FROM transcript_lines WHERE at < ?", (before,)).rowcount
        )

    async def data_version(self) -> int:
        """SQLite's ``data_version``: it changes when another connection (process) commits.

        Our own commits do not change it, so a change means someone else wrote: the running
        server polls it to notice a stop made by ``avatarbot sessions stop`` in another process.
        """
        return await self.run(lambda c: c.execute("PRAGMA data_version").fetchone()[0])

    # --- meta
    async def get_meta(self, key: str) -> str | None:
        """A value of the meta table."""
        row = await self.run(
            lambda c: c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return row[0] if row else None

    async def get_or_set_meta(self, key: str, value: str) -> str:
        """The stored value of ``key``, storing ``value`` first if there is none."""
        def body(c: sqlite3.Connection) -> str:
            c.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            return c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

        return await self.write(body)

    # --- vendor bookings, the operator's ledger, idempotent grants (bot/storage/bookings.py)
    async def record_booking_intent(
        self, session_id: str, deployment_id: str, provider: str, tenant: str
    ) -> None:
        """Write the intent to book, before the vendor call."""
        await self.write(
            lambda c: bookings_sql.record_intent(c, session_id, deployment_id, provider, tenant)
        )

    async def record_booking_answer(self, session_id: str, ps: ProviderSession) -> None:
        """Write the vendor's answer to a booking call."""
        await self.write(lambda c: bookings_sql.record_answer(c, session_id, ps))

    async def resolve_booking(self, session_id: str, state: BookingState, note: str) -> None:
        """An intent or booking is settled: ``refused`` or ``released``."""
        await self.write(lambda c: bookings_sql.resolve(c, session_id, state, note))

    async def mark_booking_in_doubt(
        self, session_id: str, charge: int, billed_to: BilledTo, note: str
    ) -> None:
        """Record an unanswered intent the vendor cannot be asked about.

        The session is closed and its likely charge billed to the operator (its own ledger) or
        to the tenant (settled).
        """
        await self.write(lambda c: bookings_sql.mark_in_doubt(
            c, session_id, charge, billed_to, note, _fail, _begin_end, _finish, _get,
        ))

    async def get_booking(self, session_id: str) -> Booking | None:
        """The booking of a session, if one was written."""
        return await self.run(lambda c: bookings_sql.get_booking(c, session_id))

    async def list_bookings(self, states: tuple[BookingState, ...]) -> list[Booking]:
        """Bookings in ``states``, oldest first."""
        return await self.run(lambda c: bookings_sql.bookings(c, states))

    async def deployment_vendor_ids(self, provider: str, deployment_id: str) -> set[str]:
        """Vendor session ids this deployment ever booked at ``provider``."""
        return await self.run(
            lambda c: bookings_sql.deployment_vendor_ids(c, provider, deployment_id)
        )

    async def operator_charges(self) -> int:
        """The sum of the operator's ledger (in-doubt bookings it bears)."""
        return await self.run(bookings_sql.operator_total)

    async def grant_once(
        self, request_id: str, tenant: str, amount: int, actor: str
    ) -> tuple[Balance, bool]:
        """Grant once per platform request id; ``(balance, granted_now)``."""
        check_grant(amount)
        return await self.write(lambda c: bookings_sql.grant_once(
            c, request_id, tenant, amount, actor, _grant, _balance,
        ))

    async def remember_request(self, key: str, window_s: float) -> bool:
        """Record a handled signed request; False when it is a replay within ``window_s``."""
        return await self.write(lambda c: bookings_sql.remember_request(c, key, window_s))

    # --- sealed credentials (bot.core.ports.SecretsStore; docs/secrets.md)
    async def check_storage_key(self, box: CredentialBox) -> None:
        """Open the check value, or write it when a key exists and there is none yet.

        Raises:
            WrongStorageKey: the key is not the one the database was sealed with.
        """
        await self.write(lambda c: sealed.check_key(c, box))

    async def seal_plain_secrets(self, box: CredentialBox) -> int:
        """Seal the Slack rows still stored in plain text; how many."""
        return await self.write(lambda c: sealed.seal_plain(c, box))

    async def link_secret(self, box: CredentialBox, fresh: str) -> str:
        """The stored viewer-link secret, storing ``fresh`` sealed if there is none."""
        return await self.write(lambda c: sealed.link_secret(c, box, fresh))

    async def reseal_secrets(self, box: CredentialBox) -> int:
        """Seal every stored credential again with the box's current key; how many."""
        return await self.write(lambda c: sealed.reseal_all(c, box))

    # --- verification
    async def verify(self) -> list[str]:
        """Recompute every tenant from its entries; return every mismatch found."""
        return await self.run(_verify)


# ---------------------------------------------------------------- synchronous bodies


def _configure(c: sqlite3.Connection) -> None:
    # The first statement reads the file: a corrupt or foreign file fails here, at open.
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA foreign_keys=ON")
    c.execute("PRAGMA busy_timeout=5000")
    # Deleted and rewritten rows are overwritten with zeros, so a token from before encryption
    # (docs/secrets.md) does not linger in free pages.
    c.execute("PRAGMA secure_delete=ON")


def _open_reader(path: Path) -> sqlite3.Connection | None:
    """A read-only connection for quick reads in the event loop's thread, or None if refused.

    ``busy_timeout=0``: a read that would wait fails at once and goes to the writer's thread,
    so the loop never blocks on a lock.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA query_only=ON")
    except sqlite3.Error as exc:
        log.info("no read-only connection (%s); every read goes to the writer's thread", exc)
        return None
    return conn


def _tenant_row(c: sqlite3.Connection, tenant: str) -> sqlite3.Row | None:
    return c.execute("SELECT * FROM tenants WHERE tenant = ?", (tenant,)).fetchone()


def _ensure_tenant(c: sqlite3.Connection, tenant: str) -> None:
    c.execute(
        "INSERT OR IGNORE INTO tenants (tenant, created_at) VALUES (?, ?)", (tenant, _ts(utcnow()))
    )
    c.execute("INSERT OR IGNORE INTO balances (tenant) VALUES (?)", (tenant,))


def _limits(c: sqlite3.Connection, tenant: str, defaults: Limits) -> Limits:
    row = _tenant_row(c, tenant)
    if row is None:
        return defaults
    data = defaults.model_dump()
    for key in ("max_concurrent", "max_minutes", "daily_user_credits"):
        if row[key] is not None:
            data[key] = row[key]
    for key in ("allowed_roles", "allowed_users"):
        if row[key] is not None:
            data[key] = json.loads(row[key])
    return Limits.model_validate(data)


def _set_limits(
    c: sqlite3.Connection, tenant: str, changes: dict[str, Any], defaults: Limits
) -> Limits:
    if _tenant_row(c, tenant) is None:
        raise TenantNotFound(tenant)
    checked = merge_limits(_limits(c, tenant, defaults), changes, defaults)
    for key, value in changes.items():
        stored = None if value is None else getattr(checked, key)
        if isinstance(stored, list):
            stored = json.dumps(stored)
        c.execute(f"UPDATE tenants SET {key} = ? WHERE tenant = ?", (stored, tenant))
    return checked


def _balance(c: sqlite3.Connection, tenant: str) -> Balance:
    row = c.execute(
        "SELECT granted, settled, pending FROM balances WHERE tenant = ?", (tenant,)
    ).fetchone()
    if row is None:
        raise TenantNotFound(tenant)
    return Balance(granted=row[0], settled=row[1], pending=row[2])


def _append(
    c: sqlite3.Connection,
    tenant: str,
    kind: str,
    amount: int,
    session_id: str | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> None:
    c.execute(
        "INSERT INTO ledger (tenant, kind, amount, session_id, actor, note, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (tenant, kind, amount, session_id, actor, note, _ts(utcnow())),
    )
    column, sign = {
        "grant": ("granted", 1), "reserve": ("pending", 1), "release": ("pending", -1),
    }.get(kind, ("settled", 1))
    if kind == "settle":
        c.execute(
            "UPDATE balances SET settled = settled + ?, pending = pending - ? WHERE tenant = ?",
            (amount, amount, tenant),
        )
    else:
        c.execute(
            f"UPDATE balances SET {column} = {column} + ? WHERE tenant = ?", (sign * amount, tenant)
        )


def _grant(
    c: sqlite3.Connection, tenant: str, amount: int, actor: str, note: str | None
) -> Balance:
    _ensure_tenant(c, tenant)
    _append(c, tenant, "grant", amount, actor=actor, note=note)
    return _balance(c, tenant)


def _day_start(now: datetime) -> str:
    return now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()


def _user_spent_today(c: sqlite3.Connection, tenant: str, user: str, now: datetime) -> int:
    row = c.execute(
        "SELECT COALESCE(SUM(CASE WHEN state IN ('pending','live','ending') THEN reserved "
        "ELSE COALESCE(settled, 0) END), 0) FROM sessions "
        "WHERE tenant = ? AND started_by = ? AND created_at >= ?",
        (tenant, user, _day_start(now)),
    ).fetchone()
    return int(row[0])


def _check_start(
    c: sqlite3.Connection, rec: SessionRecord, roles: list[str], limits: Limits
) -> None:
    tenant_row = _tenant_row(c, rec.tenant)
    running = c.execute(
        "SELECT COUNT(*) FROM sessions WHERE tenant = ? AND state IN ('pending','live','ending')",
        (rec.tenant,),
    ).fetchone()[0]
    check_start(
        limits=limits, active=tenant_row is None or bool(tenant_row["active"]), running=running,
        spent_today=_user_spent_today(c, rec.tenant, rec.started_by, rec.created_at),
        available=_balance(c, rec.tenant).available, cost=rec.reserved,
        minutes=rec.requested_s / 60, user=rec.started_by, roles=roles,
    )


def _open_session(
    c: sqlite3.Connection, rec: SessionRecord, roles: list[str], defaults: Limits
) -> SessionRecord:
    _ensure_tenant(c, rec.tenant)
    _check_start(c, rec, roles, _limits(c, rec.tenant, defaults))
    data = rec.model_dump(mode="json", exclude={"viewer"})
    data["handle"] = json.dumps(data["handle"])
    cols = ", ".join(data)
    c.execute(
        f"INSERT INTO sessions ({cols}, viewer) VALUES ({', '.join('?' * len(data))}, NULL)",
        tuple(data.values()),
    )
    _append(c, rec.tenant, "reserve", rec.reserved, session_id=rec.id, actor=rec.started_by)
    return _get(c, rec.id)


def _get(c: sqlite3.Connection, session_id: str) -> SessionRecord:
    row = c.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    return _row_to_session(row)


def _mark_live(c: sqlite3.Connection, session_id: str, ps: ProviderSession) -> SessionRecord:
    rec = _get(c, session_id)
    if rec.state is not SessionState.PENDING:
        return rec
    now = utcnow()
    c.execute(
        "UPDATE sessions SET state = 'live', started_at = ?, expires_at = ?, last_activity_at = ?, "
        "provider_session_id = ?, handle = ?, viewer = ? WHERE id = ?",
        (_ts(now), _ts(ps.expires_at), _ts(now), ps.provider_session_id, json.dumps(ps.handle),
         ps.viewer.model_dump_json(), session_id),
    )
    return _get(c, session_id)


def _fail(
    c: sqlite3.Connection, session_id: str, reason: str, pending_only: bool = False
) -> SessionRecord:
    rec = _get(c, session_id)
    if not rec.state.is_open or (pending_only and rec.state is not SessionState.PENDING):
        return rec
    _append(c, rec.tenant, "release", rec.reserved, session_id=session_id, note=reason[:200])
    c.execute(
        "UPDATE sessions SET state = 'failed', failure_reason = ?, ended_at = ?, settled = 0 "
        "WHERE id = ?",
        (reason[:500], _ts(utcnow()), session_id),
    )
    return _get(c, session_id)


def _begin_end(c: sqlite3.Connection, session_id: str, reason: str, at: datetime) -> SessionRecord:
    rec = _get(c, session_id)
    if rec.state in (SessionState.PENDING, SessionState.LIVE):
        c.execute(
            "UPDATE sessions SET state = 'ending', ending_at = ?, end_reason = ? WHERE id = ?",
            (_ts(at), reason[:200], session_id),
        )
        rec = _get(c, session_id)
    return rec


def _finish(c: sqlite3.Connection, session_id: str, settle: int) -> SessionRecord:
    rec = _get(c, session_id)
    if rec.state is not SessionState.ENDING:
        return rec
    settle = max(0, min(settle, rec.reserved))
    if settle:
        _append(c, rec.tenant, "settle", settle, session_id=session_id)
    if rec.reserved - settle:
        _append(c, rec.tenant, "release", rec.reserved - settle, session_id=session_id)
    c.execute(
        "UPDATE sessions SET state = 'ended', ended_at = ?, settled = ?, "
        "next_stop_at = NULL WHERE id = ?",
        (_ts(utcnow()), settle, session_id),
    )
    return _get(c, session_id)


def _verify(c: sqlite3.Connection) -> list[str]:
    problems: list[str] = []
    sums = {
        r["tenant"]: r
        for r in c.execute(
            "SELECT tenant, "
            "SUM(CASE kind WHEN 'grant' THEN amount ELSE 0 END) AS granted, "
            "SUM(CASE kind WHEN 'settle' THEN amount ELSE 0 END) AS settled, "
            "SUM(CASE kind WHEN 'reserve' THEN amount WHEN 'settle' THEN -amount "
            "WHEN 'release' THEN -amount ELSE 0 END) AS pending "
            "FROM ledger GROUP BY tenant"
        )
    }
    for row in c.execute("SELECT * FROM balances"):
        tenant = row["tenant"]
        s = sums.get(tenant)
        derived = (s["granted"], s["settled"], s["pending"]) if s else (0, 0, 0)
        cached = (row["granted"], row["settled"], row["pending"])
        if derived != cached:
            problems.append(f"{tenant}: cached {cached} != from entries {derived}")
        if derived[2] < 0 or derived[0] - derived[1] - derived[2] < 0:
            problems.append(f"{tenant}: negative pending or available {derived}")
    problems.extend(_verify_sessions(c))
    return problems


def _verify_sessions(c: sqlite3.Connection) -> list[str]:
    problems = []
    rows = c.execute(
        "SELECT s.id, s.tenant, s.state, s.reserved, s.settled, "
        "SUM(CASE l.kind WHEN 'reserve' THEN l.amount ELSE 0 END) AS r, "
        "SUM(CASE l.kind WHEN 'settle' THEN l.amount ELSE 0 END) AS st, "
        "SUM(CASE l.kind WHEN 'release' THEN l.amount ELSE 0 END) AS rl "
        "FROM sessions s LEFT JOIN ledger l ON l.session_id = s.id GROUP BY s.id"
    )
    for row in rows:
        sid, state = row["id"], row["state"]
        if row["r"] != row["reserved"]:
            problems.append(f"session {sid}: reserved {row['reserved']} but entries say {row['r']}")
        closed = state in ("ended", "failed")
        if closed and row["st"] + row["rl"] != row["r"]:
            problems.append(f"session {sid}: {state} but settle+release != reserve")
        if closed and row["settled"] != row["st"]:
            problems.append(f"session {sid}: settled {row['settled']} but entries say {row['st']}")
        if not closed and row["st"] + row["rl"] != 0:
            problems.append(f"session {sid}: {state} but already settled or released")
    return problems



class SyncLedger:
    """The store's own ledger transactions, run synchronously on a plain ``sqlite3`` connection.

    A bench-only hook: ``bench/ledger.py`` measures ``SqliteStore`` against this, the same SQL
    bodies with no writer thread and no event loop in between. It is not part of the store port
    and nothing in the product uses it. The file is configured and migrated as ``SqliteStore``
    does, and each call is one ``BEGIN IMMEDIATE`` transaction, as there.
    """

    def __init__(self, path: Path, default_limits: Limits) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._defaults = default_limits
        _configure(self._conn)
        apply_migrations(self._conn)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def grant(self, tenant: str, amount: int, actor: str) -> Balance:
        """As ``SqliteStore.grant``."""
        return _tx(self._conn, lambda c: _grant(c, tenant, amount, actor, None))

    def open_session(self, record: SessionRecord) -> SessionRecord:
        """As ``SqliteStore.open_session`` (no roles)."""
        return _tx(self._conn, lambda c: _open_session(c, record, [], self._defaults))

    def begin_end(self, session_id: str, reason: str, at: datetime) -> SessionRecord:
        """As ``SqliteStore.begin_end``."""
        return _tx(self._conn, lambda c: _begin_end(c, session_id, reason, at))

    def finish_session(self, session_id: str, settle: int) -> SessionRecord:
        """As ``SqliteStore.finish_session``."""
        return _tx(self._conn, lambda c: _finish(c, session_id, settle))


__all__ = ["SqliteStore", "SyncLedger"]
