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
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from bot.core.ports import SlackInstallStore

log = logging.getLogger(__name__)


class _Lookups:
    """The bot installations one request has looked up, while its checks run."""

    def __init__(self) -> None:
        self.open = True
        self.found: dict[tuple[str | None, str | None, bool], dict[str, Any] | None] = {}


_LOOKUPS: ContextVar[_Lookups | None] = ContextVar("slack_bot_lookups", default=None)


@contextlib.contextmanager
def one_lookup_per_request() -> Iterator[None]:
    """Within this block, each bot installation is read from the store once.

    The gate (``SlackAdapter.gate``) looks the workspace's installation up to refuse unknown
    workspaces, and slack-bolt's ``authorize``, run inside the gate's ``next()``, asks for the
    same row again: with this around ``next()`` the second ask is answered from the first
    (issue 15: one installation read per event). Kept per request (a context variable, set and
    reset by the request's own task) and only while the block runs, so nothing is cached
    across requests.
    """
    lookups = _Lookups()
    token = _LOOKUPS.set(lookups)
    try:
        yield
    finally:
        lookups.open = False  # tasks started inside (listeners) inherit it: they read afresh
        _LOOKUPS.reset(token)


class SlackInstallationStore(AsyncInstallationStore):
    """Bot and user installations per workspace, for slack-bolt's OAuth flow and ``authorize``.

    Saving an installation also (re)activates the workspace's tenant ``slack:<team id>``.

    Args:
        installs: the Slack install port.
        client_id: the Slack app's client id (rows are kept per app).
    """

    def __init__(self, installs: SlackInstallStore, client_id: str) -> None:
        self._installs = installs
        self.client_id = client_id

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
        key = (enterprise_id, team_id, bool(is_enterprise_install))
        lookups = _LOOKUPS.get()
        if lookups is not None and lookups.open and key in lookups.found:
            data = lookups.found[key]
        else:
            data = await self._installs.find_bot(
                self.client_id, enterprise_id=enterprise_id, team_id=team_id,
                is_enterprise_install=bool(is_enterprise_install),
            )
            if lookups is not None and lookups.open:
                lookups.found[key] = data
        return Bot(**data) if data is not None else None

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
        await self._installs.delete_bot(
            self.client_id, enterprise_id=enterprise_id, team_id=team_id
        )

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """Forget one user's installation, or every installation of the workspace."""
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
