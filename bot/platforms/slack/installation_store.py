"""slack-bolt's async installation store and OAuth state store, kept in our SQLite database.

Both run their SQL through the store's one writer (``store.write`` / ``store.run``), so they
share its transactions and its file; nothing is written to disk elsewhere (slack-bolt's
defaults are JSON files under ``~/.bolt-app-installation``).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class SqlStore(Protocol):
    """The part of ``SqliteStore`` these stores use."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the writer's thread."""
        ...

    async def write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body(conn)`` in one transaction."""
        ...

    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if new."""
        ...

    async def set_tenant_active(self, tenant: str, active: bool) -> None:
        """Activate or deactivate a tenant."""
        ...


def _key(value: str | None) -> str:
    return value or ""


class SqliteInstallationStore(AsyncInstallationStore):
    """Bot and user installations per workspace, for slack-bolt's OAuth flow and ``authorize``.

    Saving an installation also (re)activates the workspace's tenant ``slack:<team id>``.

    Args:
        store: our SQLite store.
        client_id: the Slack app's client id (rows are kept per app).
    """

    def __init__(self, store: SqlStore, client_id: str) -> None:
        self._store = store
        self.client_id = client_id

    @property
    def logger(self) -> logging.Logger:
        """The logger slack-sdk expects every store to have."""
        return log

    async def async_save(self, installation: Installation) -> None:
        """Save an installation and its bot, then mark the workspace active."""
        data = json.dumps(installation.__dict__)
        row = (
            self.client_id, _key(installation.enterprise_id), _key(installation.team_id),
            _key(installation.user_id), data, float(installation.installed_at),
        )
        await self._store.write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO slack_installations VALUES (?, ?, ?, ?, ?, ?)", row
            )
        )
        await self.async_save_bot(installation.to_bot())
        if installation.team_id:
            tenant = f"slack:{installation.team_id}"
            await self._store.ensure_tenant(tenant)
            await self._store.set_tenant_active(tenant, True)
        log.info("slack workspace installed", extra={"tenant": f"slack:{installation.team_id}"})

    async def async_save_bot(self, bot: Bot) -> None:
        """Save a bot installation (skipped when it carries no bot token)."""
        if bot.bot_token is None:
            return
        row = (
            self.client_id, _key(bot.enterprise_id), _key(bot.team_id),
            json.dumps(bot.__dict__), float(bot.installed_at),
        )
        await self._store.write(
            lambda c: c.execute("INSERT OR REPLACE INTO slack_bots VALUES (?,?,?,?,?)", row)
        )

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        """The workspace's bot installation, if any."""
        team = "" if is_enterprise_install else _key(team_id)
        args = (self.client_id, _key(enterprise_id), team)
        row = await self._store.run(
            lambda c: c.execute(
                "SELECT data FROM slack_bots WHERE client_id = ? AND enterprise_id = ? "
                "AND team_id = ?", args,
            ).fetchone()
        )
        return Bot(**json.loads(row[0])) if row else None

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The user's installation, or the workspace's latest one when ``user_id`` is None."""
        team = "" if is_enterprise_install else _key(team_id)
        sql = (
            "SELECT data FROM slack_installations WHERE client_id = ? AND enterprise_id = ? "
            "AND team_id = ?"
        )
        args: tuple[str, ...] = (self.client_id, _key(enterprise_id), team)
        if user_id is not None:
            sql += " AND user_id = ?"
            args = (*args, user_id)
        sql += " ORDER BY installed_at DESC LIMIT 1"
        row = await self._store.run(lambda c: c.execute(sql, args).fetchone())
        if row is None:
            return None
        installation = Installation(**json.loads(row[0]))
        bot = await self.async_find_bot(
            enterprise_id=enterprise_id, team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        if bot is not None and installation.bot_token != bot.bot_token:
            # A user's row may predate the newest bot token (reinstall, rotation): use the bot's.
            installation.bot_token = bot.bot_token
            installation.bot_id = bot.bot_id
            installation.bot_user_id = bot.bot_user_id
            installation.bot_scopes = bot.bot_scopes
            installation.bot_refresh_token = bot.bot_refresh_token
            installation.bot_token_expires_at = bot.bot_token_expires_at
        return installation

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Forget the workspace's bot token."""
        args = (self.client_id, _key(enterprise_id), _key(team_id))
        await self._store.write(
            lambda c: c.execute(
                "DELETE FROM slack_bots WHERE client_id = ? AND enterprise_id = ? AND team_id = ?",
                args,
            )
        )

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """Forget one user's installation, or every installation of the workspace."""
        sql = (
            "DELETE FROM slack_installations WHERE client_id = ? AND enterprise_id = ? "
            "AND team_id = ?"
        )
        args: tuple[str, ...] = (self.client_id, _key(enterprise_id), _key(team_id))
        if user_id is not None:
            sql += " AND user_id = ?"
            args = (*args, user_id)
        await self._store.write(lambda c: c.execute(sql, args))


class SqliteOAuthStateStore(AsyncOAuthStateStore):
    """One-time OAuth ``state`` values that expire.

    Args:
        store: our SQLite store.
        expiration_seconds: how long an issued state may be used.
    """

    def __init__(self, store: SqlStore, expiration_seconds: int = 600) -> None:
        self._store = store
        self.expiration_seconds = expiration_seconds

    @property
    def logger(self) -> logging.Logger:
        """The logger slack-sdk expects every store to have."""
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        """Issue a new state (and drop expired ones)."""
        state = secrets.token_urlsafe(24)
        now = time.time()

        def body(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM slack_oauth_states WHERE expires_at < ?", (now,))
            c.execute(
                "INSERT INTO slack_oauth_states VALUES (?, ?)",
                (state, now + self.expiration_seconds),
            )

        await self._store.write(body)
        return state

    async def async_consume(self, state: str) -> bool:
        """Whether ``state`` was issued and not yet used or expired; it is used up either way."""
        if not state:
            return False
        now = time.time()

        def body(c: sqlite3.Connection) -> bool:
            row = c.execute(
                "SELECT expires_at FROM slack_oauth_states WHERE state = ?", (state,)
            ).fetchone()
            c.execute("DELETE FROM slack_oauth_states WHERE state = ?", (state,))
            return row is not None and row[0] >= now

        return await self._store.write(body)


async def remember_event(store: SqlStore, event_id: str, team_id: str | None) -> bool:
    """Record an Events API delivery; False when this event id was already handled."""
    now = time.time()

    def body(c: sqlite3.Connection) -> bool:
        # Slack redelivers for at most about an hour; older ids can go.
        c.execute("DELETE FROM slack_events WHERE received_at < ?", (now - 3 * 3600,))
        cur = c.execute(
            "INSERT OR IGNORE INTO slack_events VALUES (?, ?, ?)", (event_id, team_id, now)
        )
        return cur.rowcount == 1

    return await store.write(body)
