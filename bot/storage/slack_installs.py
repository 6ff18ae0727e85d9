"""Slack installations, OAuth states and handled event ids in the SQLite file (migration 0002).

Implements ``bot.core.ports.SlackInstallStore`` on the store's one writer, so these rows share
its file and its transactions. slack-bolt's default stores would write JSON files under
``~/.bolt-app-installation`` instead. The ``data`` column holds the tokens, so it is sealed
(``bot.storage.secrets``): the raw database file never holds a Slack token.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from typing import Any

from bot.storage.common import EVENT_MEMORY_S, install_key, open_data, seal_data
from bot.storage.secrets import SecretBox, mark_key
from bot.storage.sqlite import SqliteStore, _ensure_tenant

log = logging.getLogger(__name__)

#: Most event ids kept in memory. Slack retries a delivery three times, the last about five
#: minutes after the first; at 50,000 ids that is covered up to ~160 events/s sustained, in
#: ~6 MB. Older ids stay in the table for ``EVENT_MEMORY_S`` but are no longer consulted.
EVENT_MEMORY_MAX = 50_000
#: How long new ids wait before one batched write stores them (a crash forgets at most these).
EVENT_FLUSH_S = 1.0


class SqliteSlackInstallStore:
    """The Slack install port on a ``SqliteStore``.

    Args:
        store: the open store whose writer thread runs these statements.
        box: seals the rows' data; default: the key file next to the database (the composition
            root passes the one built from ``STORAGE_KEY``).
    """

    def __init__(self, store: SqliteStore, box: SecretBox | None = None) -> None:
        self._store = store
        self._box = box or SecretBox.from_settings(None, store.path)
        # Seen event ids (oldest first) with when they arrived; loaded from the table once.
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._unsaved: list[tuple[str, str | None, float]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None

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
        row = (
            client_id, install_key(enterprise_id), install_key(team_id), install_key(user_id),
            seal_data(self._box, data), float(installed_at),
        )

        def body(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO slack_installations VALUES (?, ?, ?, ?, ?, ?)", row)
            mark_key(c, self._box)
            if activate_tenant is not None:
                _ensure_tenant(c, activate_tenant)
                c.execute("UPDATE tenants SET active = 1 WHERE tenant = ?", (activate_tenant,))

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
        row = (
            client_id, install_key(enterprise_id), install_key(team_id), seal_data(self._box, data),
            float(installed_at),
        )

        def body(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO slack_bots VALUES (?, ?, ?, ?, ?)", row)
            mark_key(c, self._box)

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
        args = (client_id, install_key(enterprise_id), team)
        row = await self._store.run(
            lambda c: c.execute(
                "SELECT data FROM slack_bots WHERE client_id = ? AND enterprise_id = ? "
                "AND team_id = ?", args,
            ).fetchone()
        )
        return open_data(self._box, row[0] if row else None)

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
            "SELECT data FROM slack_installations WHERE client_id = ? AND enterprise_id = ? "
            "AND team_id = ?"
        )
        args: tuple[str, ...] = (client_id, install_key(enterprise_id), team)
        if user_id is not None:
            sql += " AND user_id = ?"
            args = (*args, user_id)
        sql += " ORDER BY installed_at DESC LIMIT 1"
        row = await self._store.run(lambda c: c.execute(sql, args).fetchone())
        return open_data(self._box, row[0] if row else None)

    async def delete_bot(
        self, client_id: str, *, enterprise_id: str | None, team_id: str | None
    ) -> None:
        """Forget the workspace's bot installation."""
        args = (client_id, install_key(enterprise_id), install_key(team_id))
        await self._store.write(
            lambda c: c.execute(
                "DELETE FROM slack_bots WHERE client_id = ? AND enterprise_id = ? AND team_id = ?",
                args,
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
            "DELETE FROM slack_installations WHERE client_id = ? AND enterprise_id = ? "
            "AND team_id = ?"
        )
        args: tuple[str, ...] = (client_id, install_key(enterprise_id), install_key(team_id))
        if user_id is not None:
            sql += " AND user_id = ?"
            args = (*args, user_id)
        await self._store.write(lambda c: c.execute(sql, args))

    async def issue_oauth_state(self, state: str, expires_in_s: float) -> None:
        """Record a new OAuth state valid for ``expires_in_s`` (expired ones are dropped)."""
        now = time.time()

        def body(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM slack_oauth_states WHERE expires_at < ?", (now,))
            c.execute("INSERT INTO slack_oauth_states VALUES (?, ?)", (state, now + expires_in_s))

        await self._store.write(body)

    async def consume_oauth_state(self, state: str) -> bool:
        """Whether the state was issued and has not expired; it is used up either way."""
        now = time.time()

        def body(c: sqlite3.Connection) -> bool:
            row = c.execute(
                "SELECT expires_at FROM slack_oauth_states WHERE state = ?", (state,)
            ).fetchone()
            c.execute("DELETE FROM slack_oauth_states WHERE state = ?", (state,))
            return row is not None and row[0] >= now

        return await self._store.write(body)

    async def remember_event(self, event_id: str, team_id: str | None) -> bool:
        """Record an Events API delivery; False when this event id was seen before.

        Answered from memory (no database round trip on the message path, issue 15): the ids
        of the last ``EVENT_MEMORY_S`` (at most ``EVENT_MEMORY_MAX``) are loaded from the table
        at the first call, and new ids are written to it in batches, so a redelivery is still
        recognised after a restart.
        """
        if not self._loaded:
            await self._load()
        now = time.time()
        seen = self._seen
        while seen:
            oldest, at = next(iter(seen.items()))
            if at >= now - EVENT_MEMORY_S and len(seen) < EVENT_MEMORY_MAX:
                break
            del seen[oldest]
        if event_id in seen:
            return False
        seen[event_id] = now
        self._unsaved.append((event_id, team_id, now))
        if self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(EVENT_FLUSH_S, self._flush_soon)
        return True

    async def _load(self) -> None:
        async with self._load_lock:
            if self._loaded:
                return
            since = time.time() - EVENT_MEMORY_S
            rows = await self._store.run(
                lambda c: c.execute(
                    "SELECT event_id, received_at FROM (SELECT event_id, received_at "
                    "FROM slack_events WHERE received_at >= ? ORDER BY received_at DESC "
                    "LIMIT ?) ORDER BY received_at", (since, EVENT_MEMORY_MAX),
                ).fetchall()
            )
            for event_id, at in rows:
                self._seen.setdefault(event_id, at)
            self._loaded = True

    def _flush_soon(self) -> None:
        self._flush_timer = None
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_logged(), name="slack-events")

    async def _flush_logged(self) -> None:
        try:
            await self.flush_events()
        except Exception:  # the ids stay in memory; the next batch retries
            log.exception("could not store seen Slack event ids")

    async def flush_events(self) -> None:
        """Store the event ids seen since the last batch, and drop expired ones, in one write."""
        if not self._unsaved:
            return
        batch, self._unsaved = self._unsaved, []
        cutoff = time.time() - EVENT_MEMORY_S

        def body(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM slack_events WHERE received_at < ?", (cutoff,))
            c.executemany("INSERT OR IGNORE INTO slack_events VALUES (?, ?, ?)", batch)

        try:
            await self._store.write(body)
        except BaseException:
            self._unsaved[:0] = batch
            raise

    async def aclose(self) -> None:
        """Store the ids not written yet; call before the store closes."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        await self.flush_events()


__all__ = ["EVENT_MEMORY_S", "SqliteSlackInstallStore"]
