"""The PostgreSQL store: the same port as ``SqliteStore``, for several workers on one database.

Chosen by ``DATABASE_URL=postgresql://…`` (``docs/architecture.md``, "Choosing the database").
Driver: asyncpg, with its connection pool. Each public method is one transaction on one pooled
connection, at READ COMMITTED (PostgreSQL's default), made safe for concurrent workers by row
locks rather than by one writer:

- a start locks its tenant's ``balances`` row (``SELECT … FOR UPDATE``) before it reads the
  figures the start rules judge, so two workers' starts for one tenant run one after the other
  and the second sees the first's reservation (each statement after the lock reads the newest
  committed rows);
- a session's transitions (live, failed, ending, ended) lock the session's row first, so a
  settlement and a release happen once however many workers try at the same moment;
- the schema backs both with constraints: CHECKs refuse a negative pending or available
  balance, and a unique index allows one reserve, settle and release per session.

A deadlock or serialization failure (which these lock orders should not produce) is retried a
few times with the whole transaction; a server that goes away mid-call is ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.core.bookings import BilledTo, Booking, BookingState
from bot.core.errors import SessionNotFound, StoreUnavailable, TenantNotFound
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
from bot.storage.activity import ActivityBuffer
from bot.storage.common import (
    EVENT_MEMORY_S,
    OPEN_STATES,
    check_grant,
    check_session_fields,
    install_key,
    merge_limits,
    open_data,
    seal_data,
)
from bot.storage.pg_migrations import apply_migrations
from bot.storage.secrets import (
    CHECK_KEY,
    CHECK_VALUE,
    LINK_SECRET_KEY,
    PREFIX,
    WrongStorageKey,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_OPEN = list(OPEN_STATES)
_RETRIES = 5
#: NOTIFY channel of session closes (ended or failed), heard by every worker's data_version.
CLOSED_CHANNEL = "avatarbot_session_closed"
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# The connection broke under a running call (server stopped, network gone).
_GONE = (OSError, asyncpg.ConnectionDoesNotExistError, asyncpg.CannotConnectNowError)

#: A connection as the store uses it: one of a pool's (its proxy) or one of its own.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
Row: TypeAlias = asyncpg.Record


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs (a malformed URL too).

    The credentials end at the last ``@`` before the query, so a password holding an unencoded
    ``@`` or ``/`` is still cut out whole.
    """
    scheme, sep, rest = url.partition("://")
    head, question, query = rest.partition("?")
    at = head.rfind("@")
    if not sep or at < 0 or ":" not in head[:at]:
        return url
    user = head[:at].split(":", 1)[0]
    return f"{scheme}://{user}@{head[at + 1:]}{question}{query}"


def _why(url: str, exc: BaseException) -> str:
    """A plain cause for a failure to reach the database (no traceback, no password)."""
    if isinstance(exc, ValueError):  # the URL itself (a port that is not a number ...)
        return f"the URL is malformed ({exc})"
    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        name = parts.path.lstrip("/") or "(default)"
        return f"the database {name} does not exist on the server (create it: createdb {name})"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return "the server refused the user name or password"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return "the server refused this user (check the user name and pg_hba.conf)"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return "the server has no free connections (max_connections)"
    if isinstance(exc, ConnectionRefusedError):
        return f"no PostgreSQL server answers at {where} (is it running?)"
    if isinstance(exc, TimeoutError):
        return f"the server at {where} did not answer in time"
    if isinstance(exc, OSError):
        return f"cannot reach {where}: {exc.strerror or exc}"
    if isinstance(exc, asyncpg.PostgresError):
        return f"the server said: {exc.args[0] if exc.args else type(exc).__name__}"
    return str(exc) or type(exc).__name__


async def _init_connection(conn: Conn) -> None:
    # jsonb columns read and write plain Python objects.
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``UPDATE sessions SET … WHERE id = $n`` of a session's plain fields, and their values."""
    check_session_fields(fields)
    values = [_plain(v) for v in fields.values()]
    # Column names come from ``SESSION_FIELDS``, never from the caller's text.
    assignments = ", ".join(f"{k} = ${i}" for i, k in enumerate(fields, start=1))
    return f"UPDATE sessions SET {assignments} WHERE id = ${len(values) + 1}", values


def _row_to_session(row: Row) -> SessionRecord:
    data = dict(row)
    data["handle"] = data["handle"] or {}
    return SessionRecord.model_validate(data)


class PostgresStore:
    """Async store over a PostgreSQL database; every public method is one transaction.

    Args:
        pool: an open asyncpg pool whose connections have the jsonb codec.
        url: the database URL (kept for messages, shown without its password).
        default_limits: the limits a tenant has unless an admin changed them.
    """

    def __init__(self, pool: asyncpg.Pool, url: str, default_limits: Limits) -> None:
        self._pool: asyncpg.Pool | None = pool
        self._url = url
        self._defaults = default_limits
        # data_version: closes heard on CLOSED_CHANNEL, by a connection opened on first use.
        self._listener: Conn | None = None
        self._version = 0
        # Activity times noted but not stored yet (bot/storage/activity.py).
        self._activity = ActivityBuffer(self._write_activity)

    @classmethod
    async def open(
        cls,
        url: str,
        default_limits: Limits | None = None,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
    ) -> PostgresStore:
        """Connect a pool to ``url`` and apply pending migrations.

        Raises:
            StoreUnavailable: no server answers, the database does not exist, the user is
                refused, or a migration failed; no connection is left open.
        """
        shown = redact(url)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, timeout=connect_timeout_s,
                init=_init_connection,
            )
        except (
            OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError
        ) as exc:
            raise StoreUnavailable(shown, _why(url, exc)) from None
        store = cls(pool, url, default_limits or Limits())
        try:
            async with pool.acquire() as conn:
                applied = await apply_migrations(conn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await store.close()
            raise StoreUnavailable(shown, _why(url, exc)) from None
        except BaseException:
            await store.close()
            raise
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        return store

    async def close(self) -> None:
        """Store pending activity times, close every connection (idempotent)."""
        if self._pool is not None:
            await self._activity.close()
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def url(self) -> str:
        """The database URL without its password."""
        return redact(self._url)

    def _live_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is closed")
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """One connection inside one transaction; extensions use this for their tables."""
        async with self._live_pool().acquire() as conn, conn.transaction():
            yield conn

    async def write(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``await body(conn)`` in one transaction, retried on a deadlock or conflict."""
        for attempt in range(_RETRIES):
            try:
                async with self.transaction() as conn:
                    return await body(conn)
            except _RETRYABLE:
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.005 * 2**attempt)
            except _GONE as exc:
                raise StoreUnavailable(self.url, _why(self._url, exc)) from None
        raise AssertionError("unreachable")

    async def read(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``await body(conn)`` on a pooled connection (statements autocommit)."""
        try:
            async with self._live_pool().acquire() as conn:
                return await body(conn)
        except _GONE as exc:
            raise StoreUnavailable(self.url, _why(self._url, exc)) from None

    # --- tenants and limits
    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if it does not exist yet."""
        await self.write(lambda c: _ensure_tenant(c, tenant))

    async def tenant_exists(self, tenant: str) -> bool:
        """Whether the tenant has been seen."""
        return await self.read(lambda c: _tenant_row(c, tenant)) is not None

    async def tenant_active(self, tenant: str) -> bool:
        """Whether the tenant may start sessions (an unknown tenant may; it is created then)."""
        row = await self.read(lambda c: _tenant_row(c, tenant))
        return row is None or bool(row["active"])

    async def list_tenants(self) -> list[str]:
        """Every tenant, sorted."""
        rows = await self.read(lambda c: c.fetch("SELECT tenant FROM tenants ORDER BY 1"))
        return [r[0] for r in rows]

    async def set_tenant_active(self, tenant: str, active: bool) -> None:
        """Mark a tenant active or inactive (e.g. an uninstalled Slack workspace)."""
        await self.write(
            lambda c: c.execute("UPDATE tenants SET active = $1 WHERE tenant = $2", active, tenant)
        )

    async def get_limits(self, tenant: str) -> Limits:
        """The tenant's limits, defaults filled in."""
        return await self.read(lambda c: _limits(c, tenant, self._defaults))

    async def set_limits(self, tenant: str, **changes: Any) -> Limits:
        """Change some of a tenant's limits; ``None`` restores the default."""
        return await self.write(lambda c: _set_limits(c, tenant, changes, self._defaults))

    async def default_avatar(self, tenant: str) -> str | None:
        """The tenant's default avatar (``provider:avatar id``), if an admin chose one."""
        row = await self.read(lambda c: _tenant_row(c, tenant))
        return row["default_avatar"] if row is not None else None

    async def set_default_avatar(self, tenant: str, avatar: str | None) -> None:
        """Choose (or with ``None`` forget) the tenant's default avatar."""
        async def body(c: Conn) -> None:
            await _ensure_tenant(c, tenant)
            await c.execute(
                "UPDATE tenants SET default_avatar = $1 WHERE tenant = $2", avatar, tenant
            )

        await self.write(body)

    # --- ledger
    async def grant(self, tenant: str, amount: int, actor: str, note: str | None = None) -> Balance:
        """Credit ``amount`` to the tenant (creating it if new)."""
        check_grant(amount)

        async def body(c: Conn) -> Balance:
            await _ensure_tenant(c, tenant)
            await _append(c, tenant, "grant", amount, actor=actor, note=note)
            return await _balance(c, tenant)

        return await self.write(body)

    async def balance(self, tenant: str) -> Balance:
        """The tenant's cached balance."""
        return await self.read(lambda c: _balance(c, tenant))

    async def history(self, tenant: str, limit: int = 50) -> list[LedgerEntry]:
        """The tenant's newest ledger entries first."""
        rows = await self.read(
            lambda c: c.fetch(
                "SELECT * FROM ledger WHERE tenant = $1 ORDER BY id DESC LIMIT $2", tenant, limit
            )
        )
        return [LedgerEntry.model_validate(dict(r)) for r in rows]

    async def user_spent_today(self, tenant: str, user: str) -> int:
        """Credits the user has reserved or used today (UTC)."""
        return await self.read(lambda c: _user_spent_today(c, tenant, user, utcnow()))

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
        return await self.write(
            lambda c: _update(
                c,
                "UPDATE sessions SET stop_attempts = stop_attempts + 1, next_stop_at = $1 "
                "WHERE id = $2",
                next_at, session_id,
            )
        )

    async def update_session(self, session_id: str, **fields: Any) -> SessionRecord:
        """Set plain fields (mode, knowledge, last_activity_at, avatar_name) of a session."""
        sql, values = _assignments(fields)
        record = await self.write(lambda c: _update(c, sql, *values, session_id))
        return self._activity.fresh(record)

    async def set_session_fields(self, session_id: str, **fields: Any) -> None:
        """Like ``update_session`` without reading the row back (for callers that drop it)."""
        sql, values = _assignments(fields)
        await self.write(lambda c: c.execute(sql, *values, session_id))

    def note_activity(self, session_id: str, at: datetime) -> None:
        """Record that people used the session at ``at``, without a database round trip.

        The time is stored by a batched write within ``ACTIVITY_FLUSH_S`` (and at ``close``);
        every read of the session sees it at once, so the idle rule is never misled.
        """
        self._activity.note(session_id, at)

    async def flush_activity(self) -> None:
        """Store the activity times noted so far in one transaction."""
        if self._pool is not None:
            await self._activity.flush()

    async def _write_activity(self, batch: dict[str, datetime]) -> None:
        ids, times = list(batch), list(batch.values())
        # One statement for the batch; never move a time backwards (a later update_session, on
        # this worker or another, may have stored a newer one).
        await self.write(lambda c: c.execute(
            "UPDATE sessions SET last_activity_at = v.at "
            "FROM unnest($1::text[], $2::timestamptz[]) AS v(id, at) "
            "WHERE sessions.id = v.id AND sessions.last_activity_at < v.at",
            ids, times,
        ))

    async def get_session(self, session_id: str) -> SessionRecord:
        """The session, or ``SessionNotFound``."""
        return self._activity.fresh(await self.read(lambda c: _get(c, session_id)))

    async def open_sessions_in(
        self, tenant: str, platform: str, channel_id: str
    ) -> list[SessionRecord]:
        """The tenant's open sessions bound to one platform channel, newest first.

        One statement, a semi-join of sessions on ``chat_bindings_channel`` (migration 0003):
        its cost does not grow with the sessions of other channels, and a session bound twice
        in the channel comes once.
        """
        rows = await self.read(lambda c: c.fetch(
            "SELECT s.* FROM sessions s WHERE s.tenant = $3 AND s.state = ANY($4::text[]) "
            "AND EXISTS (SELECT 1 FROM chat_bindings b WHERE b.session_id = s.id "
            "AND b.platform = $1 AND b.channel_id = $2) ORDER BY s.created_at DESC",
            platform, channel_id, tenant, _OPEN,
        ))
        return [self._activity.fresh(_row_to_session(r)) for r in rows]

    async def open_states(self) -> dict[str, SessionState]:
        """Every open session's id and state (no row is validated: cheap at any size)."""
        rows = await self.read(lambda c: c.fetch(
            "SELECT id, state FROM sessions WHERE state = ANY($1::text[])", _OPEN
        ))
        return {r[0]: SessionState(r[1]) for r in rows}

    async def open_session_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` open sessions' ids greater than ``after``, in id order."""
        rows = await self.read(lambda c: c.fetch(
            "SELECT id FROM sessions WHERE state = ANY($1::text[]) AND id > $2 "
            "ORDER BY id LIMIT $3", _OPEN, after or "", max(1, int(limit)),
        ))
        return [r[0] for r in rows]

    async def ping(self) -> None:
        """One trivial statement on a pooled connection: raises when the server cannot answer."""
        await self.read(lambda c: c.fetchval("SELECT 1"))

    async def list_sessions(
        self,
        tenant: str | None = None,
        states: Iterable[SessionState] | None = None,
        limit: int = 50,
    ) -> list[SessionRecord]:
        """Sessions, newest first, filtered by tenant and states."""
        where: list[str] = []
        args: list[Any] = []
        if tenant is not None:
            args.append(tenant)
            where.append(f"tenant = ${len(args)}")
        if states is not None:
            args.append([s.value for s in states])
            where.append(f"state = ANY(${len(args)}::text[])")
        sql = "SELECT * FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(limit)
        sql += f" ORDER BY created_at DESC LIMIT ${len(args)}"
        rows = await self.read(lambda c: c.fetch(sql, *args))
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
                "INSERT INTO chat_bindings (session_id, platform, channel_id, thread_id, "
                "message_id, enterprise_id) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (platform, thread_id) DO UPDATE SET session_id = EXCLUDED.session_id, "
                "channel_id = EXCLUDED.channel_id, message_id = EXCLUDED.message_id, "
                "enterprise_id = EXCLUDED.enterprise_id",
                binding.session_id, binding.platform, binding.channel_id, binding.thread_id,
                binding.message_id, binding.enterprise_id,
            )
        )

    async def binding_for_thread(self, platform: str, thread_id: str) -> ChatBinding | None:
        """The binding of a platform thread, if any."""
        row = await self.read(
            lambda c: c.fetchrow(
                "SELECT * FROM chat_bindings WHERE platform = $1 AND thread_id = $2",
                platform, thread_id,
            )
        )
        return ChatBinding.model_validate(dict(row)) if row else None

    async def bindings_for_session(self, session_id: str) -> list[ChatBinding]:
        """Every platform thread bound to a session."""
        rows = await self.read(
            lambda c: c.fetch("SELECT * FROM chat_bindings WHERE session_id = $1", session_id)
        )
        return [ChatBinding.model_validate(dict(r)) for r in rows]

    # --- transcripts
    async def add_transcript_line(self, line: TranscriptLine) -> None:
        """Keep one final transcript line of a session."""
        await self.write(
            lambda c: c.execute(
                "INSERT INTO transcript_lines (session_id, at, speaker, text, author, intent) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                line.session_id, _when(line.at), line.speaker, line.text, line.author,
                line.intent,
            )
        )

    async def add_transcript_lines(self, lines: Sequence[TranscriptLine]) -> None:
        """Keep several final transcript lines in one transaction, in order."""
        rows = [(line.session_id, _when(line.at), line.speaker, line.text, line.author,
                 line.intent) for line in lines]
        if rows:
            await self.write(
                lambda c: c.executemany(
                    "INSERT INTO transcript_lines (session_id, at, speaker, text, author, intent) "
                    "VALUES ($1, $2, $3, $4, $5, $6)", rows,
                )
            )

    async def transcript(self, session_id: str, limit: int = 1000) -> list[TranscriptLine]:
        """The kept lines of a session, oldest first (the newest ``limit`` of them)."""
        rows = await self.read(
            lambda c: c.fetch(
                "SELECT * FROM (SELECT session_id, extract(epoch FROM at)::float8 AS at, "
                "speaker, text, author, intent, id FROM transcript_lines WHERE session_id = $1 "
                "ORDER BY id DESC LIMIT $2) newest ORDER BY id",
                session_id, limit,
            )
        )
        return [
            TranscriptLine.model_validate({k: v for k, v in r.items() if k != "id"})
            for r in rows
        ]

    async def prune_transcripts(self, before: float) -> int:
        """Forget lines older than ``before`` (epoch seconds); return how many went."""
        status: str = await self.write(
            lambda c: c.execute("DELETE FROM transcript_lines WHERE at < $1", _when(before))
        )
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <count>"

    async def data_version(self) -> int:
        """A number that moves after a session closes, on this worker or another.

        ``_finish`` and ``_fail`` send ``NOTIFY`` on ``CLOSED_CHANNEL``, which PostgreSQL
        delivers only once that transaction has committed; a connection of this store listens
        and counts them. So when the number moves, the close is already visible to a query.
        (Unlike SQLite's ``data_version``, this process's own closes move it too: the service
        then finds nothing new to do.) A lost listening connection is opened again, and the
        number moves then, as a close may have gone unheard meanwhile.
        """
        listener = self._listener
        if listener is None or listener.is_closed():
            await self._listen()
        return self._version

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        listener = await asyncpg.connect(self._url, timeout=10)

        def heard(*_: object) -> None:
            self._version += 1

        await listener.add_listener(CLOSED_CHANNEL, heard)
        self._listener = listener
        self._version += 1

    # --- vendor bookings, the operator's ledger, idempotent grants (docs/bookings.md)
    async def record_booking_intent(
        self, session_id: str, deployment_id: str, provider: str, tenant: str
    ) -> None:
        """Write the intent to book, before the vendor call."""
        now = utcnow()
        await self.write(lambda c: c.execute(
            "INSERT INTO bookings (session_id, deployment_id, provider, tenant, state, "
            "created_at, updated_at) VALUES ($1, $2, $3, $4, 'intent', $5, $5) "
            "ON CONFLICT (session_id) DO NOTHING",
            session_id, deployment_id, provider, tenant, now,
        ))

    async def record_booking_answer(self, session_id: str, ps: ProviderSession) -> None:
        """Write the vendor's answer to a booking call."""
        handle = {"expires_at": ps.expires_at.isoformat(), "transport": ps.viewer.transport,
                  **ps.handle}
        await self.write(lambda c: c.execute(
            "UPDATE bookings SET state = 'booked', vendor_session_id = $1, handle = $2, "
            "updated_at = $3 WHERE session_id = $4 AND state IN ('intent', 'in_doubt')",
            ps.provider_session_id, handle, utcnow(), session_id,
        ))

    async def resolve_booking(self, session_id: str, state: BookingState, note: str) -> None:
        """An intent or booking is settled: ``refused`` or ``released``."""
        await self.write(lambda c: c.execute(
            "UPDATE bookings SET state = $1, note = $2, updated_at = $3 WHERE session_id = $4 "
            "AND state IN ('intent', 'booked')",
            state, note[:200], utcnow(), session_id,
        ))

    async def mark_booking_in_doubt(
        self, session_id: str, charge: int, billed_to: BilledTo, note: str
    ) -> None:
        """Record an unanswered intent the vendor cannot be asked about.

        The session is closed and its likely charge billed to the operator (its own ledger) or
        to the tenant (settled).
        """
        await self.write(
            lambda c: _mark_in_doubt(c, session_id, charge, billed_to, note)
        )

    async def get_booking(self, session_id: str) -> Booking | None:
        """The booking of a session, if one was written."""
        row = await self.read(
            lambda c: c.fetchrow(_BOOKING_SELECT + "WHERE b.session_id = $1", session_id)
        )
        return _row_to_booking(row) if row is not None else None

    async def list_bookings(self, states: tuple[BookingState, ...]) -> list[Booking]:
        """Bookings in ``states``, oldest first."""
        rows = await self.read(lambda c: c.fetch(
            _BOOKING_SELECT + "WHERE b.state = ANY($1::text[]) ORDER BY b.created_at",
            list(states),
        ))
        return [_row_to_booking(r) for r in rows]

    async def deployment_vendor_ids(self, provider: str, deployment_id: str) -> set[str]:
        """Vendor session ids this deployment ever booked at ``provider``."""
        rows = await self.read(lambda c: c.fetch(
            "SELECT vendor_session_id FROM bookings WHERE provider = $1 AND deployment_id = $2 "
            "AND vendor_session_id IS NOT NULL", provider, deployment_id,
        ))
        return {r[0] for r in rows}

    async def operator_charges(self) -> int:
        """The sum of the operator's ledger (in-doubt bookings it bears)."""
        total = await self.read(
            lambda c: c.fetchval("SELECT COALESCE(SUM(amount), 0) FROM operator_ledger")
        )
        return int(total)

    async def grant_once(
        self, request_id: str, tenant: str, amount: int, actor: str
    ) -> tuple[Balance, bool]:
        """Grant once per platform request id; ``(balance, granted_now)``."""
        check_grant(amount)

        async def body(c: Conn) -> tuple[Balance, bool]:
            # The insert is the check: a concurrent replay waits on the key, then finds it.
            added = await c.fetchval(
                "INSERT INTO grant_requests VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (request_id) DO NOTHING RETURNING 1",
                request_id, tenant, amount, actor, utcnow(),
            )
            if added is None:
                return await _balance(c, tenant), False
            await _ensure_tenant(c, tenant)
            await _append(c, tenant, "grant", amount, actor=actor,
                          note=f"request {request_id[:40]}")
            return await _balance(c, tenant), True

        return await self.write(body)

    async def remember_request(self, key: str, window_s: float) -> bool:
        """Record a handled signed request; False when it is a replay within ``window_s``."""
        async def body(c: Conn) -> bool:
            now = utcnow()
            await c.execute(
                "DELETE FROM seen_requests WHERE seen_at < $1", now - timedelta(seconds=window_s)
            )
            added = await c.fetchval(
                "INSERT INTO seen_requests VALUES ($1, $2) ON CONFLICT (key) DO NOTHING "
                "RETURNING 1", key, now,
            )
            return added is not None

        return await self.write(body)

    # --- meta
    async def get_meta(self, key: str) -> str | None:
        """A value of the meta table."""
        value: str | None = await self.read(
            lambda c: c.fetchval("SELECT value FROM meta WHERE key = $1", key)
        )
        return value

    async def get_or_set_meta(self, key: str, value: str) -> str:
        """The stored value of ``key``, storing ``value`` first if there is none."""
        async def body(c: Conn) -> str:
            await c.execute(
                "INSERT INTO meta VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value
            )
            stored: str = await c.fetchval("SELECT value FROM meta WHERE key = $1", key)
            return stored

        return await self.write(body)

    # --- sealed credentials (bot.core.ports.SecretsStore; docs/secrets.md)
    async def check_storage_key(self, box: CredentialBox) -> None:
        """Open the check value, or write it when a key exists and there is none yet.

        Raises:
            WrongStorageKey: the key is not the one the database was sealed with.
        """
        async def body(c: Conn) -> None:
            stored = await c.fetchval("SELECT value FROM meta WHERE key = $1", CHECK_KEY)
            if stored is not None:
                if box.open(stored) != CHECK_VALUE:
                    raise WrongStorageKey(box.source)
            elif box.has_key():
                await _mark_key(c, box)

        await self.write(body)

    async def seal_plain_secrets(self, box: CredentialBox) -> int:
        """Seal the Slack rows still stored in plain text (a JSON object); how many."""
        return await self.write(lambda c: _reseal_rows(c, box, plain_only=True))

    async def link_secret(self, box: CredentialBox, fresh: str) -> str:
        """The stored viewer-link secret, storing ``fresh`` sealed if there is none.

        A plain one (kept by a version that did not seal it) is sealed in place. Workers starting
        together agree: the first insert wins and the others read it.
        """
        async def body(c: Conn) -> str:
            select = "SELECT value FROM meta WHERE key = $1 FOR UPDATE"
            stored: str | None = await c.fetchval(select, LINK_SECRET_KEY)
            if stored is None:
                inserted = await c.fetchval(
                    "INSERT INTO meta VALUES ($1, $2) ON CONFLICT (key) DO NOTHING "
                    "RETURNING TRUE",
                    LINK_SECRET_KEY, box.seal(fresh),
                )
                if inserted:
                    await _mark_key(c, box)
                    return fresh
                stored = await c.fetchval(select, LINK_SECRET_KEY)  # another worker's
                assert stored is not None
            plain = box.open(stored)
            if not stored.startswith(PREFIX):
                await c.execute("UPDATE meta SET value = $1 WHERE key = $2",
                                box.seal(plain), LINK_SECRET_KEY)
                await _mark_key(c, box)
            return plain

        return await self.write(body)

    async def reseal_secrets(self, box: CredentialBox) -> int:
        """Seal every stored credential again with the box's current key; how many."""
        async def body(c: Conn) -> int:
            count = await _reseal_rows(c, box, plain_only=False)
            for key in (LINK_SECRET_KEY, CHECK_KEY):
                stored = await c.fetchval(
                    "SELECT value FROM meta WHERE key = $1 FOR UPDATE", key
                )
                if stored is not None:
                    await c.execute("UPDATE meta SET value = $1 WHERE key = $2",
                                    box.reseal(stored), key)
                    count += key == LINK_SECRET_KEY
            await _mark_key(c, box)
            return count

        return await self.write(body)

    # --- verification
    async def verify(self) -> list[str]:
        """Recompute every tenant from its entries; return every mismatch found."""
        async def body(c: Conn) -> list[str]:
            # One snapshot for both queries, however many workers write meanwhile.
            async with c.transaction(isolation="repeatable_read", readonly=True):
                return await _verify(c)

        return await self.read(body)


# ---------------------------------------------------------------- transaction bodies


async def _tenant_row(c: Conn, tenant: str) -> Row | None:
    row: Row | None = await c.fetchrow("SELECT * FROM tenants WHERE tenant = $1", tenant)
    return row


async def _ensure_tenant(c: Conn, tenant: str) -> None:
    await c.execute(
        "INSERT INTO tenants (tenant, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        tenant, utcnow(),
    )
    await c.execute("INSERT INTO balances (tenant) VALUES ($1) ON CONFLICT DO NOTHING", tenant)


async def _limits(c: Conn, tenant: str, defaults: Limits) -> Limits:
    return _limits_of(await _tenant_row(c, tenant), defaults)


def _limits_of(row: Row | None, defaults: Limits) -> Limits:
    if row is None:
        return defaults
    data = defaults.model_dump()
    for key in ("max_concurrent", "max_minutes", "daily_user_credits", "allowed_roles",
                "allowed_users"):
        if row[key] is not None:
            data[key] = row[key]
    return Limits.model_validate(data)


async def _set_limits(c: Conn, tenant: str, changes: dict[str, Any], defaults: Limits) -> Limits:
    row = await c.fetchrow("SELECT tenant FROM tenants WHERE tenant = $1 FOR UPDATE", tenant)
    if row is None:
        raise TenantNotFound(tenant)
    checked = merge_limits(await _limits(c, tenant, defaults), changes, defaults)
    for key, value in changes.items():
        stored = None if value is None else getattr(checked, key)
        # ``key`` is one of Limits' fields (checked by merge_limits), never free text.
        await c.execute(f"UPDATE tenants SET {key} = $1 WHERE tenant = $2", stored, tenant)
    return checked


async def _balance(c: Conn, tenant: str, *, lock: bool = False) -> Balance:
    sql = "SELECT granted, settled, pending FROM balances WHERE tenant = $1"
    row = await c.fetchrow(sql + (" FOR UPDATE" if lock else ""), tenant)
    if row is None:
        raise TenantNotFound(tenant)
    return Balance(granted=row[0], settled=row[1], pending=row[2])


async def _append(
    c: Conn,
    tenant: str,
    kind: str,
    amount: int,
    session_id: str | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> None:
    column = {
        "grant": "granted = granted + $3", "reserve": "pending = pending + $3",
        "release": "pending = pending - $3", "settle": "settled = settled + $3, "
        "pending = pending - $3",
    }[kind]
    # The entry and the cached balance it changes, in one statement (one round trip).
    await c.execute(
        "WITH entry AS (INSERT INTO ledger "
        "(tenant, kind, amount, session_id, actor, note, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)) "
        f"UPDATE balances SET {column} WHERE tenant = $1",
        tenant, kind, amount, session_id, actor, note, utcnow(),
    )


def _day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def _user_spent_today(c: Conn, tenant: str, user: str, now: datetime) -> int:
    value = await c.fetchval(
        "SELECT COALESCE(SUM(CASE WHEN state = ANY($4::text[]) THEN reserved "
        "ELSE COALESCE(settled, 0) END), 0)::bigint FROM sessions "
        "WHERE tenant = $1 AND started_by = $2 AND created_at >= $3",
        tenant, user, _day_start(now), _OPEN,
    )
    return int(value)


_START_FIGURES = (
    "SELECT t.*, "
    "(SELECT COUNT(*) FROM sessions WHERE tenant = $1 AND state = ANY($2::text[])) AS running, "
    "(SELECT COALESCE(SUM(CASE WHEN state = ANY($2::text[]) THEN reserved "
    "ELSE COALESCE(settled, 0) END), 0)::bigint FROM sessions "
    "WHERE tenant = $1 AND started_by = $3 AND created_at >= $4) AS spent_today "
    "FROM tenants t WHERE t.tenant = $1"
)


async def _open_session(
    c: Conn, rec: SessionRecord, roles: list[str], defaults: Limits
) -> SessionRecord:
    # The tenant's lock: every start of this tenant, on any worker, waits here for the one
    # before it to commit, so the figures read after it include that one's reservation.
    try:
        balance = await _balance(c, rec.tenant, lock=True)
    except TenantNotFound:
        await _ensure_tenant(c, rec.tenant)
        balance = await _balance(c, rec.tenant, lock=True)
    row = await c.fetchrow(
        _START_FIGURES, rec.tenant, _OPEN, rec.started_by, _day_start(rec.created_at)
    )
    if row is None:  # not after the lock above; said for the type checker
        raise TenantNotFound(rec.tenant)
    check_start(
        limits=_limits_of(row, defaults), active=bool(row["active"]), running=row["running"],
        spent_today=row["spent_today"], available=balance.available, cost=rec.reserved,
        minutes=rec.requested_s / 60, user=rec.started_by, roles=roles,
    )
    data = {k: _plain(v) for k, v in rec.model_dump(exclude={"viewer"}).items()}
    cols = ", ".join(data)
    marks = ", ".join(f"${i}" for i in range(1, len(data) + 1))
    inserted = await c.fetchrow(
        f"INSERT INTO sessions ({cols}, viewer) VALUES ({marks}, NULL) RETURNING *",
        *data.values(),
    )
    if inserted is None:  # INSERT … RETURNING gives the row or raises
        raise SessionNotFound(rec.id)
    await _append(c, rec.tenant, "reserve", rec.reserved, session_id=rec.id, actor=rec.started_by)
    return _row_to_session(inserted)


async def _get(c: Conn, session_id: str, *, lock: bool = False) -> SessionRecord:
    sql = "SELECT * FROM sessions WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row = await c.fetchrow(sql, session_id)
    if row is None:
        raise SessionNotFound(session_id)
    return _row_to_session(row)


async def _notify_closed(c: Conn, session_id: str) -> None:
    # Delivered to the listeners only if and when this transaction commits.
    await c.execute("SELECT pg_notify($1, $2)", CLOSED_CHANNEL, session_id)


async def _update(c: Conn, sql: str, *args: Any) -> SessionRecord:
    """Run one ``UPDATE sessions … WHERE id = …`` and return the row as it now is."""
    row = await c.fetchrow(sql + " RETURNING *", *args)
    if row is None:
        raise SessionNotFound(str(args[-1]))
    return _row_to_session(row)


async def _mark_live(c: Conn, session_id: str, ps: ProviderSession) -> SessionRecord:
    rec = await _get(c, session_id, lock=True)
    if rec.state is not SessionState.PENDING:
        return rec
    now = utcnow()
    return await _update(
        c,
        "UPDATE sessions SET state = 'live', started_at = $1, expires_at = $2, "
        "last_activity_at = $1, provider_session_id = $3, handle = $4, viewer = $5 WHERE id = $6",
        now, ps.expires_at, ps.provider_session_id, ps.handle, ps.viewer.model_dump(mode="json"),
        session_id,
    )


async def _fail(c: Conn, session_id: str, reason: str, pending_only: bool) -> SessionRecord:
    rec = await _get(c, session_id, lock=True)
    if not rec.state.is_open or (pending_only and rec.state is not SessionState.PENDING):
        return rec
    await _append(c, rec.tenant, "release", rec.reserved, session_id=session_id, note=reason[:200])
    await _notify_closed(c, session_id)
    return await _update(
        c,
        "UPDATE sessions SET state = 'failed', failure_reason = $1, ended_at = $2, settled = 0 "
        "WHERE id = $3",
        reason[:500], utcnow(), session_id,
    )


async def _begin_end(c: Conn, session_id: str, reason: str, at: datetime) -> SessionRecord:
    rec = await _get(c, session_id, lock=True)
    if rec.state in (SessionState.PENDING, SessionState.LIVE):
        rec = await _update(
            c,
            "UPDATE sessions SET state = 'ending', ending_at = $1, end_reason = $2 WHERE id = $3",
            at, reason[:200], session_id,
        )
    return rec


async def _finish(c: Conn, session_id: str, settle: int) -> SessionRecord:
    rec = await _get(c, session_id, lock=True)
    if rec.state is not SessionState.ENDING:
        return rec
    settle = max(0, min(settle, rec.reserved))
    if settle:
        await _append(c, rec.tenant, "settle", settle, session_id=session_id)
    if rec.reserved - settle:
        await _append(c, rec.tenant, "release", rec.reserved - settle, session_id=session_id)
    await _notify_closed(c, session_id)
    return await _update(
        c,
        "UPDATE sessions SET state = 'ended', ended_at = $1, settled = $2, next_stop_at = NULL "
        "WHERE id = $3",
        utcnow(), settle, session_id,
    )


_BOOKING_SELECT = (
    "SELECT b.*, s.state AS session_state, s.requested_s AS requested_s "
    "FROM bookings b LEFT JOIN sessions s ON s.id = b.session_id "
)


def _row_to_booking(row: Row) -> Booking:
    data = dict(row)
    data["handle"] = data["handle"] or {}
    return Booking.model_validate(data)


async def _mark_in_doubt(
    c: Conn, session_id: str, charge: int, billed_to: BilledTo, note: str
) -> None:
    """Mark an intent in doubt and close its session, in one transaction (as SQLite's)."""
    row = await c.fetchrow(
        "SELECT * FROM bookings WHERE session_id = $1 AND state = 'intent' FOR UPDATE",
        session_id,
    )
    if row is None:
        return
    rec = await _get(c, session_id, lock=True)
    if billed_to == "tenant" and rec.state in (SessionState.PENDING, SessionState.LIVE):
        await _begin_end(c, session_id, "the vendor may have booked it (in doubt)", utcnow())
        await _finish(c, session_id, charge)
    else:
        if rec.state.is_open:
            await _fail(c, session_id, note, False)
        billed_to = "operator"
        await c.execute(
            "INSERT INTO operator_ledger (kind, amount, session_id, tenant, provider, note, "
            "created_at) VALUES ('in_doubt', $1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (session_id) DO NOTHING",
            charge, session_id, row["tenant"], row["provider"], note[:200], utcnow(),
        )
    await c.execute(
        "UPDATE bookings SET state = 'in_doubt', likely_charge = $1, billed_to = $2, note = $3, "
        "updated_at = $4 WHERE session_id = $5",
        charge, billed_to, note[:200], utcnow(), session_id,
    )


async def _verify(c: Conn) -> list[str]:
    problems: list[str] = []
    sums = {
        r["tenant"]: r
        for r in await c.fetch(
            "SELECT tenant, "
            "SUM(CASE kind WHEN 'grant' THEN amount ELSE 0 END)::bigint AS granted, "
            "SUM(CASE kind WHEN 'settle' THEN amount ELSE 0 END)::bigint AS settled, "
            "SUM(CASE kind WHEN 'reserve' THEN amount WHEN 'settle' THEN -amount "
            "WHEN 'release' THEN -amount ELSE 0 END)::bigint AS pending "
            "FROM ledger GROUP BY tenant"
        )
    }
    for row in await c.fetch("SELECT * FROM balances ORDER BY tenant"):
        tenant = row["tenant"]
        s = sums.get(tenant)
        derived = (s["granted"], s["settled"], s["pending"]) if s else (0, 0, 0)
        cached = (row["granted"], row["settled"], row["pending"])
        if derived != cached:
            problems.append(f"{tenant}: cached {cached} != from entries {derived}")
        if derived[2] < 0 or derived[0] - derived[1] - derived[2] < 0:
            problems.append(f"{tenant}: negative pending or available {derived}")
    problems.extend(await _verify_sessions(c))
    return problems


async def _verify_sessions(c: Conn) -> list[str]:
    problems = []
    rows = await c.fetch(
        "SELECT s.id, s.tenant, s.state, s.reserved, s.settled, "
        "COALESCE(SUM(CASE l.kind WHEN 'reserve' THEN l.amount ELSE 0 END), 0)::bigint AS r, "
        "COALESCE(SUM(CASE l.kind WHEN 'settle' THEN l.amount ELSE 0 END), 0)::bigint AS st, "
        "COALESCE(SUM(CASE l.kind WHEN 'release' THEN l.amount ELSE 0 END), 0)::bigint AS rl "
        "FROM sessions s LEFT JOIN ledger l ON l.session_id = s.id GROUP BY s.id ORDER BY s.id"
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


# ---------------------------------------------------------------- Slack installations


# ---------------------------------------------------------------- sealed credentials
# The Slack rows' ``data`` is JSONB: a sealed value is stored as a JSON string
# (``"fernet:<token>"``), while a row written before sealing holds the JSON object itself; any
# value that is not such a string is plain (no migration needed; docs/secrets.md).
#: (table, key columns) of every row whose ``data`` is sealed.
_SEALED_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("slack_bots", ("client_id", "enterprise_id", "team_id")),
    ("slack_installations", ("client_id", "enterprise_id", "team_id", "user_id")),
)


async def _mark_key(c: Conn, box: CredentialBox) -> None:
    """Record the check value for the key that just sealed something (first use)."""
    await c.execute(
        "INSERT INTO meta VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        CHECK_KEY, box.seal(CHECK_VALUE),
    )


async def _reseal_rows(c: Conn, box: CredentialBox, *, plain_only: bool) -> int:
    """Seal the Slack rows' data with the current key (only the plain ones if ``plain_only``)."""
    count = 0
    for table, keys in _SEALED_TABLES:
        where = (" WHERE NOT (jsonb_typeof(data) = 'string' AND data #>> '{}' LIKE 'fernet:%')"
                 if plain_only else "")
        rows = await c.fetch(f"SELECT {', '.join(keys)}, data FROM {table}{where} FOR UPDATE")
        match = " AND ".join(f"{k} = ${i}" for i, k in enumerate(keys, 2))
        for row in rows:
            value = row["data"]
            sealed = box.reseal(value) if isinstance(value, str) else seal_data(box, value)
            await c.execute(f"UPDATE {table} SET data = $1 WHERE {match}",
                            sealed, *(row[k] for k in keys))
            count += 1
    if count:
        await _mark_key(c, box)
    return count


def _when(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(float(epoch_s), UTC)


class PostgresSlackInstallStore:
    """The Slack install port (``bot.core.ports.SlackInstallStore``) on a ``PostgresStore``.

    Installations, OAuth states and handled event ids live in the shared database, so any
    worker answers ``/slack/events`` and the OAuth redirect, and a redelivered event is
    handled once whichever worker it reaches. Expiry uses the server's clock (``now()``), one
    clock for every worker.

    The rows' ``data`` holds the tokens, so it is sealed with ``box`` as on SQLite: the
    database never holds a Slack token in plain text (docs/secrets.md).

    Args:
        store: the open store whose pool runs these statements.
        box: seals and opens the rows' data.
    """

    def __init__(self, store: PostgresStore, box: CredentialBox) -> None:
        self._store = store
        self._box = box

    async def save_installation(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        data: dict[str, Any],
        installed_at: float,
        activate_tenant: str | None = None,
    ) -> None:
        """Insert or replace one user's installation; create and (re)activate a tenant with it."""
        sealed = seal_data(self._box, data)

        async def body(c: Conn) -> None:
            await c.execute(
                "INSERT INTO slack_installations VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (client_id, enterprise_id, team_id, user_id) "
                "DO UPDATE SET data = EXCLUDED.data, installed_at = EXCLUDED.installed_at",
                client_id, install_key(enterprise_id), install_key(team_id),
                install_key(user_id), sealed, _when(installed_at),
            )
            await _mark_key(c, self._box)
            if activate_tenant is not None:
                await _ensure_tenant(c, activate_tenant)
                await c.execute(
                    "UPDATE tenants SET active = TRUE WHERE tenant = $1", activate_tenant
                )

        await self._store.write(body)

    async def save_bot(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        data: dict[str, Any],
        installed_at: float,
    ) -> None:
        """Insert or replace the workspace's bot installation."""
        sealed = seal_data(self._box, data)

        async def body(c: Conn) -> None:
            await c.execute(
                "INSERT INTO slack_bots VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (client_id, enterprise_id, team_id) "
                "DO UPDATE SET data = EXCLUDED.data, installed_at = EXCLUDED.installed_at",
                client_id, install_key(enterprise_id), install_key(team_id), sealed,
                _when(installed_at),
            )
            await _mark_key(c, self._box)

        await self._store.write(body)

    async def find_bot(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool = False,
    ) -> dict[str, Any] | None:
        """The bot row's data (an org-wide install is looked up with team ``''``)."""
        team = "" if is_enterprise_install else install_key(team_id)
        stored = await self._store.read(
            lambda c: c.fetchval(
                "SELECT data FROM slack_bots WHERE client_id = $1 AND enterprise_id = $2 "
                "AND team_id = $3",
                client_id, install_key(enterprise_id), team,
            )
        )
        return open_data(self._box, stored)

    async def find_installation(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool = False,
    ) -> dict[str, Any] | None:
        """The user's installation data, or the workspace's newest when ``user_id`` is None."""
        team = "" if is_enterprise_install else install_key(team_id)
        sql = (
            "SELECT data FROM slack_installations WHERE client_id = $1 AND enterprise_id = $2 "
            "AND team_id = $3"
        )
        args: list[str] = [client_id, install_key(enterprise_id), team]
        if user_id is not None:
            sql += " AND user_id = $4"
            args.append(user_id)
        sql += " ORDER BY installed_at DESC LIMIT 1"
        stored = await self._store.read(lambda c: c.fetchval(sql, *args))
        return open_data(self._box, stored)

    async def delete_bot(
        self, client_id: str, *, enterprise_id: str | None, team_id: str | None
    ) -> None:
        """Forget the workspace's bot installation."""
        await self._store.write(
            lambda c: c.execute(
                "DELETE FROM slack_bots WHERE client_id = $1 AND enterprise_id = $2 "
                "AND team_id = $3",
                client_id, install_key(enterprise_id), install_key(team_id),
            )
        )

    async def delete_installations(
        self,
        client_id: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
    ) -> None:
        """Forget one user's installation, or all of the workspace's when ``user_id`` is None."""
        sql = (
            "DELETE FROM slack_installations WHERE client_id = $1 AND enterprise_id = $2 "
            "AND team_id = $3"
        )
        args: list[str] = [client_id, install_key(enterprise_id), install_key(team_id)]
        if user_id is not None:
            sql += " AND user_id = $4"
            args.append(user_id)
        await self._store.write(lambda c: c.execute(sql, *args))

    async def issue_oauth_state(self, state: str, expires_in_s: float) -> None:
        """Record a new OAuth state valid for ``expires_in_s`` (expired ones are dropped)."""
        async def body(c: Conn) -> None:
            await c.execute("DELETE FROM slack_oauth_states WHERE expires_at < now()")
            await c.execute(
                "INSERT INTO slack_oauth_states VALUES ($1, now() + $2::interval)",
                state, timedelta(seconds=float(expires_in_s)),
            )

        await self._store.write(body)

    async def consume_oauth_state(self, state: str) -> bool:
        """Whether the state was issued and has not expired; it is used up either way."""
        valid = await self._store.write(
            lambda c: c.fetchval(
                "DELETE FROM slack_oauth_states WHERE state = $1 "
                "RETURNING expires_at >= clock_timestamp()",
                state,
            )
        )
        return bool(valid)

    async def remember_event(self, event_id: str, team_id: str | None) -> bool:
        """Record an Events API delivery; False when this event id was seen before."""
        async def body(c: Conn) -> bool:
            await c.execute(
                "DELETE FROM slack_events WHERE received_at < now() - $1::interval",
                timedelta(seconds=EVENT_MEMORY_S),
            )
            inserted = await c.fetchval(
                "INSERT INTO slack_events VALUES ($1, $2, now()) ON CONFLICT DO NOTHING "
                "RETURNING TRUE",
                event_id, team_id,
            )
            return bool(inserted)

        return await self._store.write(body)

    async def aclose(self) -> None:
        """Nothing is held in memory here: every event id is stored as it arrives."""


__all__ = [
    "CLOSED_CHANNEL", "EVENT_MEMORY_S", "PostgresSlackInstallStore", "PostgresStore", "redact",
]
