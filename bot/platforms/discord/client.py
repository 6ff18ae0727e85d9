"""The Discord client: discord.py's gateway ``Client`` wired to the session service.

Sharding: with ``DISCORD_SHARD_COUNT`` set the client is discord.py's ``AutoShardedClient``
holding this process's shards (``DISCORD_SHARD_IDS``); Discord sends each guild's events only on
the shard ``(guild_id >> 22) % shard_count`` (docs/discord-sharding.md), so a worker hears only
its guilds, and its thread relay posts only into their threads.

Endpoints: discord.py has no per-instance REST base or gateway URL; ``apply_endpoints`` sets the
process-wide ones (through ``bot.compat.discord_compat``) from the settings just before
login/connect. When only ``DISCORD_API_BASE`` is overridden, the gateway is read from
``GET /gateway/bot`` on that base.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import discord
import yarl
from discord import app_commands

from bot.compat import discord_compat
from bot.core.links import ViewerLinks
from bot.core.pacing import LocalPacingGate, PacingGate
from bot.core.service import SessionService
from bot.core.tenants import ChatBindings, TenantService
from bot.platforms.discord.answers import guard
from bot.platforms.discord.commands import AvatarCommands, build_avatar_group, guild_tenant
from bot.platforms.discord.errors import reply_error
from bot.platforms.discord.names import NameResolver
from bot.platforms.discord.shards import IDENTIFY_INTERVAL_S, guild_shard, identify_bucket
from bot.platforms.discord.threads import ThreadRelay, route_message
from bot.platforms.intake import Intake
from bot.settings import Settings

log = logging.getLogger(__name__)
# At DEBUG discord.py logs every REST body it sends (viewer links), every gateway event it gets
# (message text, interaction tokens) and interaction callback URLs (the token is in the path):
# its loggers never go below INFO, even with LOG_LEVEL=DEBUG.
logging.getLogger("discord").setLevel(logging.INFO)

DEFAULT_API_BASE = "https://discord.com/api/v10"
MESSAGE_CONTENT_HELP = (
    "Discord refused the Message Content intent (gateway close 4014), so the bot cannot read "
    "messages in session threads.\n"
    "To enable it: open https://discord.com/developers/applications, pick this bot's "
    "application, go to 'Bot', turn on 'MESSAGE CONTENT INTENT' under 'Privileged Gateway "
    "Intents', save, and restart avatarbot. (Bots in 100 or more servers need Discord's "
    "approval for it.)\n"
    "Until then the bot keeps running in mention mode: slash commands work, and thread "
    "messages reach the avatar only when they @mention the bot."
)


SHARDED_MESSAGE_CONTENT_HELP = (
    "Discord refused the Message Content intent (gateway close 4014), so the bot cannot read "
    "messages in session threads, and a sharded bot does not fall back to mention mode.\n"
    "To enable it: open https://discord.com/developers/applications, pick this bot's "
    "application, go to 'Bot', turn on 'MESSAGE CONTENT INTENT' under 'Privileged Gateway "
    "Intents' (bots in 100 or more servers need Discord's approval for it), save, and restart "
    "avatarbot."
)


def bot_intents() -> discord.Intents:
    """Guilds, guild messages and message content (thread messages need the latter)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    return intents


def apply_endpoints(settings: Settings) -> None:
    """Point discord.py's REST base (and gateway, if set) at the configured URLs."""
    discord_compat.set_api_base(str(settings.discord_api_base).rstrip("/"))
    if settings.discord_gateway_url is not None:
        discord_compat.set_gateway(_ws_url(str(settings.discord_gateway_url)))


def _ws_url(url: str) -> yarl.URL:
    """Gateway URLs may be given as http(s); the WebSocket scheme is ws(s)."""
    parsed = yarl.URL(url)
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    return parsed.with_scheme(scheme)


class AvatarBot(discord.Client):
    """The Discord adapter: ``/avatar`` commands, session threads and the Stop button.

    Args:
        settings: the process settings (token, endpoints).
        service: the session service every command calls.
        tenants: a server's limits, credits and activity.
        bindings: which thread belongs to which session.
        links: signs the viewer links put on the session message.
    """

    def __init__(self, *, settings: Settings, service: SessionService, tenants: TenantService,
                 bindings: ChatBindings, links: ViewerLinks, **options: Any) -> None:
        super().__init__(intents=bot_intents(), allowed_mentions=discord.AllowedMentions.none(),
                         **options)
        self.settings = settings
        self.service = service
        self.tenants = tenants
        self.bindings = bindings
        self.links = links
        self.mention_mode = False
        self.tree = GuardedTree(self)
        self.commands = AvatarCommands(self)
        self.tree.add_command(build_avatar_group(self.commands))
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        self.relay = ThreadRelay(self)
        self.names = NameResolver(self)
        # Thread messages' look-ups: bounded in number, in order per thread (docs/backpressure.md)
        self.intake = Intake()

    def holds_guild(self, guild_id: int) -> bool:
        """Whether this process's connection receives ``guild_id``'s events (always, unsharded)."""
        return True

    # ------------------------------------------------------------------ lifecycle
    async def login(self, token: str) -> None:
        """Apply the endpoint overrides, then log in."""
        apply_endpoints(self.settings)
        await super().login(token)

    async def setup_hook(self) -> None:
        """Register the persistent Stop button and start relaying avatar words."""
        from bot.platforms.discord.views import StopButton

        self.add_dynamic_items(StopButton)
        self.relay.start()

    async def connect(self, *, reconnect: bool = True) -> None:
        """Connect; on close 4014 explain the intent and reconnect without it (mention mode)."""
        await self._resolve_gateway()
        try:
            await super().connect(reconnect=reconnect)
        except discord.PrivilegedIntentsRequired:
            if not discord_compat.wants_message_content(self):
                raise
            if isinstance(self, discord.AutoShardedClient):
                # It has closed itself (discord.py's AutoShardedClient.connect): no retry here.
                log.error(SHARDED_MESSAGE_CONTENT_HELP)
                print(SHARDED_MESSAGE_CONTENT_HELP, file=sys.stderr)
                raise
            log.error(MESSAGE_CONTENT_HELP)
            print(MESSAGE_CONTENT_HELP, file=sys.stderr)
            discord_compat.drop_message_content(self)
            self.mention_mode = True
            await super().connect(reconnect=reconnect)

    async def _resolve_gateway(self) -> None:
        if self.settings.discord_gateway_url is not None:
            return
        if str(self.settings.discord_api_base).rstrip("/") == DEFAULT_API_BASE:
            return
        _shards, url, _concurrency = await discord_compat.bot_gateway(self)
        discord_compat.set_gateway(_ws_url(url))

    async def close(self) -> None:
        """Stop relaying, then close the gateway and HTTP session."""
        await self.relay.close()
        await super().close()

    # ------------------------------------------------------------------ events
    async def on_message(self, message: discord.Message) -> None:
        """Forward people's messages in session threads to the avatar."""
        await route_message(self, message)

    async def on_raw_thread_update(self, payload: discord.RawThreadUpdateEvent) -> None:
        """Archiving or locking a session's thread ends the session."""
        meta = payload.data.get("thread_metadata") or {}
        if meta.get("locked"):
            await self._end_for_thread(payload.thread_id, "thread locked")
        elif meta.get("archived"):
            await self._end_for_thread(payload.thread_id, "thread archived")

    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        """Deleting a session's thread ends the session."""
        await self._end_for_thread(payload.thread_id, "thread deleted")

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """The bot left or was removed from a server: end its sessions, mark it inactive."""
        tenant = guild_tenant(guild.id)
        log.info("removed from %s; ending its sessions", tenant)
        # Refuse new starts first: one that slipped in while earlier sessions were still
        # stopping would run on in a server the bot has left.
        await self.tenants.deactivate(tenant)
        await self.service.stop_all("the bot was removed from the server", tenant)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        """The bot was added to a server (again): a tenant removed earlier is active again."""
        await self.tenants.reactivate(guild_tenant(guild.id))

    async def _end_for_thread(self, thread_id: int, reason: str) -> None:
        binding = await self.bindings.for_thread("discord", str(thread_id))
        if binding is None:
            return
        record = await self.service.get(binding.session_id)
        if record.state.is_open:
            log.info("ending session %s: %s", record.id, reason)
            await self.service.stop(record.id, reason)

    async def on_stop_click(self, interaction: discord.Interaction, session_id: str) -> None:
        """The session message's Stop button was clicked (see ``views.StopButton``)."""
        guard(interaction)
        try:
            text = await self.commands.stop_session(interaction, session_id)
            await interaction.edit_original_response(content=text)
        # A button has no command tree's on_error: every failure becomes the clicker's reply
        # here, and reply_error logs the unexpected ones (discord.py would only log them).
        except Exception as exc:  # noqa: BLE001 - the button's catch-all error reply
            await reply_error(interaction, exc)

    async def _on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await reply_error(interaction, error)


class GuardedTree(app_commands.CommandTree[Any]):
    """The command tree; every command is answered or deferred in time (``answers.guard``)."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Arm the interaction's deferral guard; every interaction may go on."""
        guard(interaction)
        return True


class ShardedAvatarBot(AvatarBot, discord.AutoShardedClient):
    """``AvatarBot`` on discord.py's ``AutoShardedClient``: one gateway connection per shard held.

    Args:
        shard_count: the bot's total number of shards (every worker's ``DISCORD_SHARD_COUNT``).
        shard_ids: the shards this process holds.
        identify_gate: paces IDENTIFYs by Discord's buckets (``bot/platforms/discord/shards.py``);
            the Redis one when several workers share the bot, else this process's own.
        (the others as for ``AvatarBot``)
    """

    def __init__(self, *, settings: Settings, service: SessionService, tenants: TenantService,
                 bindings: ChatBindings, links: ViewerLinks, shard_count: int,
                 shard_ids: list[int], identify_gate: PacingGate | None = None,
                 **options: Any) -> None:
        super().__init__(settings=settings, service=service, tenants=tenants, bindings=bindings,
                         links=links, shard_count=shard_count, shard_ids=list(shard_ids),
                         **options)
        self.held_shards = frozenset(shard_ids)
        self.identify_gate: PacingGate = identify_gate or LocalPacingGate(IDENTIFY_INTERVAL_S)
        self.max_concurrency = 1

    async def _resolve_gateway(self) -> None:
        """Read Discord's shard advice and IDENTIFY concurrency (and the gateway, as unsharded)."""
        try:
            recommended, url, concurrency = await discord_compat.bot_gateway(self)
        except discord.DiscordException as exc:  # discord.py wraps its HTTPException in this
            log.warning("GET /gateway/bot failed (%s); identifying one shard at a time",
                        getattr(exc.__cause__, "status", type(exc).__name__))
            await super()._resolve_gateway()
            return
        self.max_concurrency = max(1, concurrency)
        assert self.shard_count is not None  # set by __init__
        if recommended > self.shard_count:
            log.warning(
                "Discord recommends %d shards for this bot; DISCORD_SHARD_COUNT is %d "
                "(each shard can hold at most 2,500 servers)", recommended, self.shard_count)
        if self.settings.discord_gateway_url is None and \
                str(self.settings.discord_api_base).rstrip("/") != DEFAULT_API_BASE:
            discord_compat.set_gateway(_ws_url(url))

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait for the shard's IDENTIFY bucket (instead of discord.py's flat 5 s sleep)."""
        await self.identify_gate.wait(identify_bucket(shard_id or 0, self.max_concurrency))

    def holds_guild(self, guild_id: int) -> bool:
        """Whether ``guild_id``'s shard is one of this process's."""
        assert self.shard_count is not None  # set by __init__
        return guild_shard(guild_id, self.shard_count) in self.held_shards


def build_discord_client(
    *, settings: Settings, service: SessionService, tenants: TenantService,
    bindings: ChatBindings, links: ViewerLinks, identify_gate: PacingGate | None = None,
    **options: Any,
) -> AvatarBot:
    """The Discord client the composition root starts with ``await client.start(token)``.

    Sharded (``ShardedAvatarBot``) when ``DISCORD_SHARD_COUNT`` is set, else one connection.
    """
    shards = settings.discord_shards()
    if shards is None:
        return AvatarBot(settings=settings, service=service, tenants=tenants,
                         bindings=bindings, links=links, **options)
    count, ids = shards
    log.info("Discord: holding shard(s) %s of %d", ",".join(map(str, ids)), count)
    return ShardedAvatarBot(settings=settings, service=service, tenants=tenants,
                            bindings=bindings, links=links, shard_count=count, shard_ids=ids,
                            identify_gate=identify_gate, **options)
