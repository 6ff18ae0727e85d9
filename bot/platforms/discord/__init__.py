"""Discord adapter: ``/avatar`` commands, a thread per session, the avatar's words back in it."""

from bot.platforms.discord.client import AvatarBot, build_discord_client

__all__ = ["AvatarBot", "build_discord_client"]
