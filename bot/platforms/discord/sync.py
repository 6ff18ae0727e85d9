"""``avatarbot discord sync``: register the ``/avatar`` commands with Discord, on request only.

Discord caps command creations (200 per guild per day) and a PUT replaces the whole list, so
the bot never syncs at startup. Guild syncs take effect at once (for development); global
syncs can take a while to appear everywhere.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.core.errors import ConfigError
from bot.platforms.discord.client import apply_endpoints
from bot.platforms.discord.commands import build_avatar_group
from bot.settings import Settings


async def sync_commands(settings: Settings, guild_id: int | None) -> list[str]:
    """Sync to ``guild_id``, else to ``DISCORD_GUILD_IDS``, else globally.

    Returns:
        the full names of the synced commands (``avatar start``, ``avatar admin grant`` ...).
    """
    if settings.discord_token is None:
        raise ConfigError("DISCORD_TOKEN is not set.")
    client = discord.Client(intents=discord.Intents(guilds=True))
    tree = app_commands.CommandTree(client)
    tree.add_command(build_avatar_group(None))
    guilds = [guild_id] if guild_id is not None else [int(g) for g in settings.discord_guild_ids]
    apply_endpoints(settings)
    try:
        await client.login(settings.discord_token.get_secret_value())
        synced: list[app_commands.AppCommand] = []
        if guilds:
            for gid in guilds:
                target = discord.Object(gid)
                tree.copy_global_to(guild=target)
                synced = await tree.sync(guild=target)
        else:
            synced = await tree.sync()
    finally:
        await client.close()
    names = {c.name for c in synced}
    return sorted(
        cmd.qualified_name for cmd in tree.walk_commands()
        if isinstance(cmd, app_commands.Command) and cmd.qualified_name.split()[0] in names
    )
