"""Names for the ids in Discord text, so the avatar reads out what people see.

Message content carries ``<@user>``, ``<@&role>`` and ``<#channel>`` tokens; ``discord_readable``
(bot/platforms/readable.py) turns them into words through resolver callbacks. This module backs
those callbacks: discord.py's own cache first (members, roles and channels it already holds,
plus the users a message lists in its ``mentions``), then one REST look-up per unknown id
(``GET /guilds/{id}/members/{id}``, ``GET /guilds/{id}/roles``, ``GET /channels/{id}``), whose
answer, found or not, is kept in a bounded cache for a while. A message full of unknown ids costs
at most ``MAX_LOOKUPS`` REST calls; the rest read as a neutral word ("someone", "a role").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import discord

from bot.platforms.name_cache import NameCache
from bot.platforms.readable import discord_mention_ids, discord_readable

if TYPE_CHECKING:
    from bot.platforms.discord.client import AvatarBot

log = logging.getLogger(__name__)

MAX_LOOKUPS = 8
"""REST look-ups one text may cause; Discord rate-limits these per route."""


class NameResolver:
    """Turns Discord text into readable text for one bot, with cached name look-ups."""

    def __init__(self, bot: AvatarBot, cache: NameCache | None = None) -> None:
        self.bot = bot
        self.cache = cache or NameCache()

    async def readable(self, guild: discord.Guild, text: str,
                       known_users: Iterable[discord.abc.User] = ()) -> str:
        """``text`` as a reader would say it, every mention named (or a neutral word)."""
        users, roles, channels = discord_mention_ids(text)
        given = {u.id: u.display_name for u in known_users}
        budget = [MAX_LOOKUPS]
        user_names = {i: given.get(i) or await self._user(guild, i, budget) for i in users}
        role_names = {i: await self._role(guild, i, budget) for i in roles}
        channel_names = {i: await self._channel(guild, i, budget) for i in channels}
        return discord_readable(
            text,
            lambda i: user_names.get(int(i)),
            lambda i: role_names.get(int(i)),
            lambda i: channel_names.get(int(i)),
        )

    async def _user(self, guild: discord.Guild, uid: int, budget: list[int]) -> str | None:
        member = guild.get_member(uid)
        if member is not None:
            return member.display_name
        known, name = self.cache.get("user", guild.id, uid)
        if known or not _spend(budget):
            return name
        try:
            name = (await guild.fetch_member(uid)).display_name
        except discord.NotFound:
            name = None
        except discord.HTTPException:
            log.info("could not look up a member's name", exc_info=True)
            return None  # not cached: a passing failure, try again next time
        self.cache.put("user", guild.id, uid, name)
        return name

    async def _role(self, guild: discord.Guild, rid: int, budget: list[int]) -> str | None:
        role = guild.get_role(rid)
        if role is not None:
            return role.name
        known, name = self.cache.get("role", guild.id, rid)
        if known or not _spend(budget):
            return name
        try:
            fetched = await guild.fetch_roles()
        except discord.HTTPException:
            log.info("could not look up the server's roles", exc_info=True)
            return None
        for each in fetched:  # one call lists them all: keep every name it brought
            self.cache.put("role", guild.id, each.id, each.name)
        if not any(each.id == rid for each in fetched):
            self.cache.put("role", guild.id, rid, None)
        return self.cache.get("role", guild.id, rid)[1]

    async def _channel(self, guild: discord.Guild, cid: int, budget: list[int]) -> str | None:
        channel = guild.get_channel_or_thread(cid)
        if channel is not None:
            return channel.name
        known, name = self.cache.get("channel", guild.id, cid)
        if known or not _spend(budget):
            return name
        try:
            fetched = await self.bot.fetch_channel(cid)
            # A channel of another server reads as unknown there too, whatever its name.
            same = getattr(getattr(fetched, "guild", None), "id", None) == guild.id
            name = getattr(fetched, "name", None) if same else None
        except (discord.NotFound, discord.Forbidden):
            name = None  # gone, or a channel the bot may not see: its name is not for us
        except (discord.HTTPException, discord.InvalidData):
            log.info("could not look up a channel's name", exc_info=True)
            return None
        self.cache.put("channel", guild.id, cid, name)
        return name


def _spend(budget: list[int]) -> bool:
    if budget[0] <= 0:
        return False
    budget[0] -= 1
    return True
