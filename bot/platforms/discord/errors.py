"""The one place where an error becomes what a Discord user reads.

``user_text`` is that text, for every surface: command replies (``reply_error``, always
ephemeral), the Stop button, and replies to messages in session threads.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.core.errors import AvatarBotError
from bot.platforms.discord.answers import settled

log = logging.getLogger(__name__)

INTERNAL = "Something went wrong on our side; it was logged. Try again in a minute."


def error_text(exc: BaseException) -> str:
    """What to tell the user about ``exc``: a safe, short sentence (never a secret or payload)."""
    if isinstance(exc, app_commands.CommandInvokeError | app_commands.TransformerError):
        exc = exc.original if isinstance(exc, app_commands.CommandInvokeError) else exc
    cause = exc.__cause__ if not isinstance(exc, AvatarBotError) else None
    if isinstance(cause, AvatarBotError):
        exc = cause
    if isinstance(exc, AvatarBotError):
        return exc.user_message
    if isinstance(exc, app_commands.NoPrivateMessage):
        return "Use this command in a server channel, not in a direct message."
    if isinstance(exc, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {exc.retry_after:.0f} s."
    if isinstance(exc, app_commands.CheckFailure | app_commands.TransformerError):
        return str(exc) or "You cannot use this command here."
    if isinstance(exc, discord.Forbidden):
        return "Discord refused: I lack a permission in this channel. Ask an admin to check mine."
    log.error("unexpected error in a Discord command", exc_info=exc)
    return INTERNAL


def user_text(exc: BaseException) -> str:
    """The whole line a Discord user reads about ``exc`` (a warning sign and ``error_text``)."""
    return "⚠️ " + error_text(exc)


async def reply_error(interaction: discord.Interaction, exc: BaseException) -> None:
    """Answer ``interaction`` ephemerally with the text for ``exc``, however far it got."""
    text = user_text(exc)
    await settled(interaction)  # a deferral the guard started comes first
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )
        elif interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            # The "thinking…" placeholder is the deferred (ephemeral) original response.
            await interaction.edit_original_response(
                content=text, allowed_mentions=discord.AllowedMentions.none()
            )
        else:
            await interaction.followup.send(
                text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )
    except discord.HTTPException:
        log.warning("could not deliver an error reply to Discord", exc_info=True)
