"""slack-bolt's async installation store and OAuth state store, on our Slack install port.

The rows live in our database through ``bot.core.ports.SlackInstallStore`` (implemented in
``bot/storage``); these classes only translate between slack-sdk's ``Installation``/``Bot`` and
that port. Nothing is written to disk elsewhere (slack-bolt's defaults are JSON files under
``~/.bolt-app-installation``).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from bot.core.ports import SlackInstallStore

log = logging.getLogger(__name__)

# How long a bot installation read from the store answers again from memory. The gate reads it
# on every request (issue 15: a store read and a decryption each); changes made by this process
# clear it at once, a reinstall or uninstall made on another worker is seen within this time.
BOT_MEMORY_S = 10.0
BOT_MEMORY_MAX = 10_000


class BotLookups:
    """The bot installations one request has read, by the row they were read from."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], dict[str, Any] | None] = {}


_LOOKUPS: ContextVar[BotLookups | None] = ContextVar("slack_bot_lookups", default=None)
LOOKUPS_KEY = "avatarbot_bot_lookups"  # where the gate leaves a request's lookups in its context


@contextlib.contextmanager
def reading_through(lookups: BotLookups) -> Iterator[None]:
    """Within this block, a bot installation already in ``lookups`` is not read again.

    The gate (``SlackAdapter.gate``) reads the workspace's installation to refuse unknown
    workspaces, and slack-bolt's ``authorize`` (a separate middleware, run after it) reads the
    same row: both run inside this block with the request's own ``lookups`` (kept in its bolt
    context), so the row is read once per request (issue 15). A context variable set and reset
    by the running task: nothing is cached across requests.
    """
    token = _LOOKUPS.set(lookups)
    try:
        yield
    finally:
        _LOOKUPS.reset(token)


class OneReadAuthorize(AsyncInstallationStoreAuthorize):
    """slack-bolt's installation-store ``authorize``, reading through the gate's lookups."""

    async def __call__(self, *, context: Any, **kwargs: Any) -> AuthorizeResult | None:
        """Authorize as slack-bolt does; the installation the gate read is not read again."""
        lookups = context.get(LOOKUPS_KEY) if context is not None else None
        if not isinstance(lookups, BotLookups):
            return await super().__call__(context=context, **kwargs)
        with reading_through(lookups):
            return await super().__call__(context=context, **kwargs)


class SlackInstallationStore(AsyncInstallationStore):
    """Bot and user installations per workspace, for slack-bolt's OAuth flow and ``authorize``.

    Saving an installation also (re)activates the workspace's tenant ``slack:<team id>``.

    Args:
        installs: the Slack install port.
        client_id: the Slack app's client id (rows are kept per app).
    """

    def __init__(self, installs: SlackInstallStore, client_id: str,
                 remember_s: float = BOT_MEMORY_S) -> None:
        self._installs = installs
        self.client_id = client_id
        self._remember_s = remember_s
        # Bot installations found lately, by row: read and decrypted once, not on every event.
        self._found: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    @property
    def logger(self) -> logging.Logger:
        """The logger slack-sdk expects every store to have."""
        return log

    async def async_save(self, installation: Installation) -> None:
        """Save the installation's bot, then the installation, marking the workspace active."""
        await self.async_save_bot(installation.to_bot())
        team = installation.team_id
        tenant = f"slack:{team}" if team else None
        await self._installs.save_installation(
            self.client_id, enterprise_id=installation.enterprise_id, team_id=team,
            user_id=installation.user_id, data=dict(installation.__dict__),
            installed_at=float(installation.installed_at), activate_tenant=tenant,
        )
        log.info("slack workspace installed", extra={"tenant": f"slack:{team}"})

    async def async_save_bot(self, bot: Bot) -> None:
        """Save a bot installation (skipped when it carries no bot token)."""
        if bot.bot_token is None:
            return
        self._found.clear()
        await self._installs.save_bot(
            self.client_id, enterprise_id=bot.enterprise_id, team_id=bot.team_id,
            data=dict(bot.__dict__), installed_at=float(bot.installed_at),
        )

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        """The workspace's bot installation, if any."""
        # The row asked for: an org-wide install's has no team (as the store keys it).
        key = (enterprise_id or "", "" if is_enterprise_install else team_id or "")
        lookups = _LOOKUPS.get()
        if lookups is not None and key in lookups.found:
            data = lookups.found[key]
        else:
            data = await self._read_bot(key, enterprise_id, team_id, bool(is_enterprise_install))
            if lookups is not None:
                lookups.found[key] = data
        return Bot(**data) if data is not None else None

    async def _read_bot(self, key: tuple[str, str], enterprise_id: str | None,
                        team_id: str | None, is_enterprise_install: bool) -> dict[str, Any] | None:
        """The bot row, from memory if found within ``remember_s``.

        Only rows that exist are remembered: a workspace installed on another worker is served
        at once.
        """
        now = time.monotonic()
        found = self._found.get(key)
        if found is not None and now - found[0] < self._remember_s:
            return found[1]
        data = await self._installs.find_bot(
            self.client_id, enterprise_id=enterprise_id, team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        if data is None:
            self._found.pop(key, None)
        else:
            if len(self._found) >= BOT_MEMORY_MAX:
                self._found.clear()
            self._found[key] = (now, data)
        return data

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The user's installation, or the workspace's latest one when ``user_id`` is None."""
        data = await self._installs.find_installation(
            self.client_id, enterprise_id=enterprise_id, team_id=team_id, user_id=user_id,
            is_enterprise_install=bool(is_enterprise_install),
        )
        if data is None:
            return None
        installation = Installation(**data)
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
        self._found.clear()
        await self._installs.delete_bot(
            self.client_id, enterprise_id=enterprise_id, team_id=team_id
        )

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """Forget one user's installation, or every installation of the workspace."""
        self._found.clear()
        await self._installs.delete_installations(
            self.client_id, enterprise_id=enterprise_id, team_id=team_id, user_id=user_id
        )


class SlackOAuthStateStore(AsyncOAuthStateStore):
    """One-time OAuth ``state`` values that expire.

    Args:
        installs: the Slack install port.
        expiration_seconds: how long an issued state may be used.
    """

    def __init__(self, installs: SlackInstallStore, expiration_seconds: int = 600) -> None:
        self._installs = installs
        self.expiration_seconds = expiration_seconds

    @property
    def logger(self) -> logging.Logger:
        """The logger slack-sdk expects every store to have."""
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        """Issue a new state (and drop expired ones)."""
        state = secrets.token_urlsafe(24)
        await self._installs.issue_oauth_state(state, self.expiration_seconds)
        return state

    async def async_consume(self, state: str) -> bool:
        """Whether ``state`` was issued and not yet used or expired; it is used up either way."""
        if not state:
            return False
        return await self._installs.consume_oauth_state(state)
