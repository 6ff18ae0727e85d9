"""The ``/avatar`` command group (guild-only) and what each command does.

Commands are defined once by ``build_avatar_group``; the running client passes its
``AvatarCommands`` so the callbacks reach the session service, and ``sync.py`` passes ``None``
(definitions only).
Every refusal is raised as an ``AvatarBotError`` and turned into an ephemeral reply by
``errors.reply_error`` (the tree's error handler), so no command answers errors on its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands

from bot.core.errors import InvalidRequest, NotAllowed
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    ChatBinding,
    Mode,
    SessionRecord,
    TenantId,
    limit_bounds,
)
from bot.core.service import StartCommand
from bot.platforms.discord.answers import answer, defer
from bot.platforms.discord.permissions import NEEDED_PERMISSIONS
from bot.platforms.discord.views import session_view
from bot.platforms.readable import discord_readable

if TYPE_CHECKING:
    from bot.platforms.discord.client import AvatarBot

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Time the pre-defer checks may spend on a vendor's avatar list (Discord wants a first answer
# within 3 s; past this, the authoritative checks run after the defer instead).
QUICK_S = 1.5
PRECHECK_S = 2.0
AUTOCOMPLETE_S = 2.0
THREAD_ARCHIVE_MIN: Literal[60] = 60  # one of the durations Discord accepts
# Option ranges Discord's client enforces, read from the one home of each bound.
CONCURRENT_MIN, CONCURRENT_MAX = limit_bounds("max_concurrent")
MINUTES_MIN, MINUTES_MAX = limit_bounds("max_minutes")
DAILY_MIN, DAILY_MAX = limit_bounds("daily_user_credits")
# The default every provider's text bound starts from (the service checks the session's own).
TEXT_MAX = Capabilities.model_fields["max_text_chars"].default


def guild_tenant(guild_id: int | str) -> TenantId:
    """The tenant of a Discord server."""
    return TenantId(platform="discord", id=str(guild_id))


def user_key(user_id: int | str) -> str:
    """A Discord user as the ledger names who granted credits."""
    return str(TenantId(platform="discord", id=str(user_id)))


def tenant_of(interaction: discord.Interaction) -> TenantId:
    """The tenant of the guild the interaction came from."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    return guild_tenant(interaction.guild_id)


def role_ids(user: discord.abc.User) -> list[str]:
    """The caller's role ids (strings, as ``Limits.allowed_roles`` holds them)."""
    roles = getattr(user, "roles", [])
    return [str(r.id) for r in roles if not r.is_default()]


def require_admin(interaction: discord.Interaction) -> None:
    """Refuse unless the caller has Manage Server (a real check, not Discord's hint)."""
    if not interaction.permissions.manage_guild:
        raise NotAllowed("Only members with the Manage Server permission can use admin commands.")


class AvatarCommands:
    """The command implementations, bound to a running client."""

    def __init__(self, bot: AvatarBot) -> None:
        self.bot = bot
        self.service = bot.service
        self.tenants = bot.tenants
        self.bindings = bot.bindings

    # ------------------------------------------------------------------ start
    async def start(
        self, interaction: discord.Interaction, avatar: str | None, provider: str | None,
        minutes: int | None, mode: str, knowledge: str | None,
    ) -> None:
        """Quick checks, defer, start the session, post the public message, open the thread."""
        cmd = StartCommand(
            tenant=tenant_of(interaction), user=str(interaction.user.id), provider=provider,
            avatar=avatar, minutes=minutes, mode=Mode.parse(mode), knowledge=knowledge,
            roles=role_ids(interaction.user),
        )
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            raise InvalidRequest("Start sessions in a text channel (not in a thread or a DM).")
        self._check_bot_permissions(interaction.app_permissions)
        try:
            info = await asyncio.wait_for(self._precheck(cmd), PRECHECK_S)
        except TimeoutError:
            info = None  # never miss the deadline: the service checks everything again
        await defer(interaction)
        record = await self.service.start(cmd)
        try:
            url, thread = await self._post_session(interaction, channel, record, info)
        except BaseException:
            await asyncio.shield(self.service.stop(record.id, "could not open the Discord thread"))
            raise
        await interaction.edit_original_response(
            content=f"Started **{record.avatar_name}**. Talk to it in {thread.mention}; "
                    f"watch it here: {url}",
            allowed_mentions=NO_MENTIONS,
        )

    @staticmethod
    def _check_bot_permissions(perms: discord.Permissions) -> None:
        missing = [label for name, label in NEEDED_PERMISSIONS.items() if not getattr(perms, name)]
        if missing:
            raise NotAllowed(
                f"I am missing these permissions in this channel: {', '.join(missing)}. "
                "Ask a server admin to grant them to my role, then try again."
            )

    async def _precheck(self, cmd: StartCommand) -> AvatarInfo | None:
        """The refusals SQLite can answer in milliseconds, before Discord's 3-second deadline.

        ``service.start`` repeats them atomically; these only make the common refusals quick.
        """
        try:
            info = await asyncio.wait_for(
                self.service.start_avatar(cmd.tenant, cmd.avatar, cmd.provider), QUICK_S
            )
        except TimeoutError:
            return None  # a slow vendor list: the service resolves it after the defer
        await self.service.precheck(cmd, info)
        return info

    async def _post_session(
        self, interaction: discord.Interaction, channel: discord.TextChannel,
        record: SessionRecord, info: AvatarInfo | None,
    ) -> tuple[str, discord.Thread]:
        assert record.expires_at is not None  # a live record always has one
        url = self.bot.links.url(record.id, record.expires_at.timestamp())
        if info is None:
            info = await self.service.find_avatar(record.avatar_id, record.provider)
        embed = self._embed(record, info, interaction.user)
        message = await channel.send(
            embed=embed, view=session_view(record.id, url), allowed_mentions=NO_MENTIONS
        )
        thread = await message.create_thread(
            name=f"{record.avatar_name} · {record.id[:6]}"[:100],
            auto_archive_duration=THREAD_ARCHIVE_MIN,
        )
        await self.bindings.bind(ChatBinding(
            session_id=record.id, platform="discord", channel_id=str(channel.id),
            thread_id=str(thread.id), message_id=str(message.id),
        ))
        return url, thread

    def _embed(self, record: SessionRecord, info: AvatarInfo,
               user: discord.abc.User) -> discord.Embed:
        prov = self.service.provider(record.provider)
        ends = int(record.expires_at.timestamp()) if record.expires_at else 0
        verb = "asks" if record.mode is Mode.ASK else "has said aloud"
        embed = discord.Embed(
            title=f"{record.avatar_name} is live",
            description=(
                f"Write in the thread below: each message {verb} the avatar "
                "(start a message with `!say` or `!ask` to switch once)."
            ),
            colour=discord.Colour.blurple(),
        )
        embed.add_field(name="Vendor", value=prov.display_name)
        embed.add_field(name="Length", value=f"{record.requested_s // 60} min")
        embed.add_field(name="Ends", value=f"<t:{ends}:R>")
        embed.add_field(name="Started by", value=user.mention)
        if info.preview_url:
            embed.set_thumbnail(url=info.preview_url)
        embed.set_footer(text=f"session {record.id}")
        return embed

    async def autocomplete_avatar(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """Avatars of the chosen (or every) provider matching what was typed; never slow."""
        provider = getattr(interaction.namespace, "provider", None)
        if provider not in self.service.providers:
            provider = None
        try:
            avatars = await asyncio.wait_for(self.service.list_avatars(provider), AUTOCOMPLETE_S)
        except Exception:  # a slow or failing vendor: offer nothing rather than fail
            log.warning("avatar autocomplete failed", exc_info=True)
            return []
        wanted = current.strip().lower()
        return [
            app_commands.Choice(name=f"{a.name} ({a.provider})"[:100],
                                value=f"{a.provider}:{a.id}"[:100])
            for a in avatars
            if wanted in a.name.lower() or wanted in a.id.lower()
        ][:25]

    async def autocomplete_provider(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The configured providers (read at run time, so no re-sync after config changes)."""
        return [
            app_commands.Choice(name=prov.display_name, value=name)
            for name, prov in self.service.providers.items()
            if current.lower() in name.lower()
        ][:25]

    # ------------------------------------------------------------------ running sessions
    async def session_here(self, interaction: discord.Interaction) -> SessionRecord:
        """The session a command means: this thread's, else the only one in this channel.

        Never a session of another channel (issue 16: it may be in a private one).
        """
        tenant = tenant_of(interaction)
        binding = await self.bindings.for_thread("discord", str(interaction.channel_id))
        if binding is not None:
            return await self.service.get(binding.session_id, tenant=tenant)
        here = await self.service.open_sessions_in(tenant, "discord", str(interaction.channel_id))
        candidates = here
        if len(candidates) == 1:
            return candidates[0]
        mine = [r for r in candidates if r.started_by == str(interaction.user.id)]
        if len(mine) == 1:
            return mine[0]
        if not candidates:
            raise InvalidRequest(
                "No avatar session is running here. Start one with `/avatar start`."
            )
        raise InvalidRequest(
            "Several sessions are running; use this command in the session's thread."
        )

    async def stop_session(self, interaction: discord.Interaction, session_id: str) -> str:
        """Stop a session if the caller started it or manages the server; returns the reply."""
        tenant = tenant_of(interaction)
        record = await self.service.get(session_id, tenant=tenant)
        starter = record.started_by == str(interaction.user.id)
        if not starter and not interaction.permissions.manage_guild:
            raise NotAllowed(
                "Only the person who started this session or a server manager can stop it."
            )
        await defer(interaction)  # unless a button's guard did already
        summary = await self.service.stop(
            session_id, f"stopped by {interaction.user.display_name}", tenant=tenant
        )
        return (f"Stopped {summary.avatar_name}: credits used {summary.settled}, "
                f"refunded {summary.released}.")

    async def stop(self, interaction: discord.Interaction) -> None:
        """``/avatar stop``."""
        record = await self.session_here(interaction)
        text = await self.stop_session(interaction, record.id)
        await interaction.edit_original_response(content=text)

    async def drive(self, interaction: discord.Interaction, mode: Mode, text: str) -> None:
        """``/avatar say`` and ``/avatar ask``."""
        record = await self.session_here(interaction)
        await defer(interaction)
        method = self.service.say if mode is Mode.SAY else self.service.ask
        await method(record.id, await self.readable(interaction, text),
                     author=interaction.user.display_name,
                     tenant=tenant_of(interaction))
        await interaction.edit_original_response(
            content=f"Sent to {record.avatar_name} ({mode.value}).", allowed_mentions=NO_MENTIONS
        )

    async def readable(self, interaction: discord.Interaction, text: str) -> str:
        """Command text as a reader would say it (names for mentions, no markdown)."""
        guild = interaction.guild
        if guild is None:  # an uncached server: no names to look up, neutral words instead
            return discord_readable(text)
        return await self.bot.names.readable(guild, text)

    async def set_mode(self, interaction: discord.Interaction, mode: str) -> None:
        """``/avatar mode``."""
        record = await self.session_here(interaction)
        parsed = Mode.parse(mode)
        await self.service.set_mode(record.id, parsed, tenant=tenant_of(interaction))
        await answer(
            interaction,
            f"Messages in the thread now make {record.avatar_name} {parsed.value}."
        )

    async def interrupt(self, interaction: discord.Interaction) -> None:
        """``/avatar interrupt``."""
        record = await self.session_here(interaction)
        await defer(interaction)
        await self.service.interrupt(record.id, tenant=tenant_of(interaction))
        await interaction.edit_original_response(content=f"{record.avatar_name} stopped talking.")

    async def link(self, interaction: discord.Interaction) -> None:
        """``/avatar link``: the viewer link again, only for the caller."""
        record = await self.session_here(interaction)
        record = await self.service.live(record.id, tenant=tenant_of(interaction))
        assert record.expires_at is not None
        url = self.bot.links.url(record.id, record.expires_at.timestamp())
        await answer(
            interaction,
            f"Viewer for {record.avatar_name}: {url}",
            view=session_view(record.id, url),
        )

    # ------------------------------------------------------------------ information
    async def avatars(self, interaction: discord.Interaction) -> None:
        """``/avatar avatars``."""
        await defer(interaction)
        found = await self.service.list_avatars()
        lines = [f"`{a.provider}:{a.id}` {a.name}" for a in found[:40]]
        await interaction.edit_original_response(
            content="Avatars:\n" + "\n".join(lines) if lines else "No avatar is available.",
            allowed_mentions=NO_MENTIONS,
        )

    async def credits(self, interaction: discord.Interaction) -> None:
        """``/avatar credits``: the guild's balance and the caller's use today."""
        report = await self.tenants.credits(tenant_of(interaction), str(interaction.user.id))
        bal = report.balance
        await answer(
            interaction,
            f"This server has **{bal.available}** credits available ({bal.pending} reserved by "
            f"running sessions, {bal.settled} used of {bal.granted} granted). You used "
            f"{report.used_today_by_user} of your {report.daily_user_credits} daily credits today.",
        )

    # ------------------------------------------------------------------ admin
    async def grant(self, interaction: discord.Interaction, amount: int) -> None:
        """``/avatar admin grant``."""
        require_admin(interaction)
        # Only the operator mints credits (bot/core/tenants.py AdminPolicy), once per
        # interaction id: a redelivered interaction grants nothing more.
        balance = await self.tenants.admin_grant(
            self.bot.settings.admin_policy(), tenant_of(interaction), amount,
            user_key(interaction.user.id), "/avatar admin grant",
            request_id=f"discord:{interaction.id}",
        )
        await answer(
            interaction,
            f"Granted {amount} credits; {balance.available} available now."
        )

    async def limits(self, interaction: discord.Interaction, **changes: int | None) -> None:
        """``/avatar admin limits``: show, or change the given limits."""
        require_admin(interaction)
        tenant = tenant_of(interaction)
        wanted = {k: v for k, v in changes.items() if v is not None}
        limits = await (
            self.tenants.admin_set_limits(
                self.bot.settings.admin_policy(), tenant, user_key(interaction.user.id), **wanted
            ) if wanted else self.tenants.limits(tenant)
        )
        roles = ", ".join(f"<@&{r}>" for r in limits.allowed_roles) or "everyone"
        await answer(
            interaction,
            f"Limits: {limits.max_concurrent} sessions at once, {limits.max_minutes} min each, "
            f"{limits.daily_user_credits} credits per person per day; who may start: {roles}.",
            allowed_mentions=NO_MENTIONS,
        )

    async def set_role(self, interaction: discord.Interaction, role: discord.Role,
                       allow: bool) -> None:
        """``/avatar admin allow-role`` / ``deny-role``."""
        require_admin(interaction)
        tenant = tenant_of(interaction)
        current = set((await self.tenants.limits(tenant)).allowed_roles)
        current = current | {str(role.id)} if allow else current - {str(role.id)}
        limits = await self.tenants.set_limits(tenant, allowed_roles=sorted(current))
        roles = ", ".join(f"<@&{r}>" for r in limits.allowed_roles) or "everyone"
        await answer(
            interaction,
            f"Who may start sessions: {roles}.", allowed_mentions=NO_MENTIONS
        )

    async def default_avatar(self, interaction: discord.Interaction, avatar: str | None) -> None:
        """``/avatar admin default-avatar``: show, or choose, what a bare start uses."""
        require_admin(interaction)
        tenant = tenant_of(interaction)
        if avatar is None:
            info = await self.service.start_avatar(tenant, None)
            text = f"`/avatar start` with no avatar starts **{info.name}** ({info.provider})."
        else:
            chosen = await self.service.set_default_avatar(tenant, avatar)
            assert chosen is not None  # a named avatar comes back (None only when forgetting)
            text = (
                f"`/avatar start` with no avatar now starts **{chosen.name}** ({chosen.provider})."
            )
        await answer(interaction, text)

    async def sessions(self, interaction: discord.Interaction) -> None:
        """``/avatar admin sessions``: the guild's open sessions."""
        require_admin(interaction)
        running = await self.service.open_sessions(tenant_of(interaction))
        lines = [
            f"`{r.id}` {r.avatar_name} ({r.provider}, {r.state.value}) by <@{r.started_by}>, "
            f"{r.seconds_left() // 60} min left"
            for r in running
        ]
        await answer(
            interaction,
            "\n".join(lines) or "No session is running.",
            allowed_mentions=NO_MENTIONS,
        )


def build_avatar_group(impl: AvatarCommands | None) -> app_commands.Group:
    """The ``/avatar`` group; ``impl`` is ``None`` when only syncing the definitions."""
    group = app_commands.Group(
        name="avatar", description="Talk with a real-time avatar", guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(guild=True),
    )
    admin = app_commands.Group(
        name="admin", description="Credits, limits and access (Manage Server only)", parent=group
    )

    def run() -> AvatarCommands:
        if impl is None:  # pragma: no cover - sync-only trees never receive interactions
            raise RuntimeError("commands built for syncing cannot run")
        return impl

    @group.command(name="start", description="Start an avatar session with its own thread")
    @app_commands.describe(
        avatar="Which avatar (type to search)", provider="Which vendor",
        minutes="How long, in minutes", mode="What a thread message does: ask or say",
        knowledge="Text the avatar answers from",
    )
    async def start(
        interaction: discord.Interaction, avatar: str | None = None,
        provider: str | None = None,
        minutes: app_commands.Range[int, MINUTES_MIN, MINUTES_MAX] | None = None,
        mode: Literal["ask", "say"] = "ask",
        knowledge: app_commands.Range[str, 1, 4000] | None = None,
    ) -> None:
        await run().start(interaction, avatar, provider, minutes, mode, knowledge)

    @start.autocomplete("avatar")
    async def _avatar_ac(interaction: discord.Interaction, current: str):  # noqa: ANN202
        return await run().autocomplete_avatar(interaction, current)

    @start.autocomplete("provider")
    async def _provider_ac(interaction: discord.Interaction, current: str):  # noqa: ANN202
        return await run().autocomplete_provider(interaction, current)

    @group.command(name="stop", description="End the session of this thread or channel")
    async def stop(interaction: discord.Interaction) -> None:
        await run().stop(interaction)

    @group.command(name="say", description="Make the avatar say this, word for word")
    async def say(interaction: discord.Interaction,
                  text: app_commands.Range[str, 1, TEXT_MAX]) -> None:
        await run().drive(interaction, Mode.SAY, text)

    @group.command(name="ask", description="Ask the avatar something")
    async def ask(interaction: discord.Interaction,
                  text: app_commands.Range[str, 1, TEXT_MAX]) -> None:
        await run().drive(interaction, Mode.ASK, text)

    @group.command(name="mode", description="What a thread message does: ask or say")
    async def mode(interaction: discord.Interaction, mode: Literal["ask", "say"]) -> None:
        await run().set_mode(interaction, mode)

    @group.command(name="interrupt", description="Stop the avatar's current speech")
    async def interrupt(interaction: discord.Interaction) -> None:
        await run().interrupt(interaction)

    @group.command(name="link", description="The viewer link again (only you see it)")
    async def link(interaction: discord.Interaction) -> None:
        await run().link(interaction)

    @group.command(name="avatars", description="The avatars you can start")
    async def avatars(interaction: discord.Interaction) -> None:
        await run().avatars(interaction)

    @group.command(name="credits", description="This server's credits and your use today")
    async def credits(interaction: discord.Interaction) -> None:
        await run().credits(interaction)

    @admin.command(name="grant", description="Add credits to this server")
    async def grant(interaction: discord.Interaction,
                    amount: app_commands.Range[int, 1, 1_000_000]) -> None:
        await run().grant(interaction, amount)

    @admin.command(name="limits", description="Show or change this server's limits")
    async def limits(
        interaction: discord.Interaction,
        max_concurrent: app_commands.Range[int, CONCURRENT_MIN, CONCURRENT_MAX] | None = None,
        max_minutes: app_commands.Range[int, MINUTES_MIN, MINUTES_MAX] | None = None,
        daily_user_credits: app_commands.Range[int, DAILY_MIN, DAILY_MAX] | None = None,
    ) -> None:
        await run().limits(interaction, max_concurrent=max_concurrent, max_minutes=max_minutes,
                           daily_user_credits=daily_user_credits)

    @admin.command(name="allow-role", description="Let this role start sessions")
    async def allow_role(interaction: discord.Interaction, role: discord.Role) -> None:
        await run().set_role(interaction, role, allow=True)

    @admin.command(name="deny-role", description="Take this role off the allowed list")
    async def deny_role(interaction: discord.Interaction, role: discord.Role) -> None:
        await run().set_role(interaction, role, allow=False)

    @admin.command(name="default-avatar", description="Show or choose the avatar a bare start uses")
    async def default_avatar(interaction: discord.Interaction, avatar: str | None = None) -> None:
        await run().default_avatar(interaction, avatar)

    @default_avatar.autocomplete("avatar")
    async def _default_avatar_choices(interaction: discord.Interaction, current: str):  # noqa: ANN202
        return await run().autocomplete_avatar(interaction, current)

    @admin.command(name="sessions", description="The sessions running in this server")
    async def sessions(interaction: discord.Interaction) -> None:
        await run().sessions(interaction)

    return group
