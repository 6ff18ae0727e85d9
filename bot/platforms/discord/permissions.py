"""What the bot needs on Discord, in one place: permissions, invite scopes, application id.

The permissions are checked at start and asked for by the invite link.

The permission table and why each one is needed are in docs/platform-payloads.md ("The slash
command and the permissions the bot needs"); the bit values come from ``discord.Permissions``, so
they are Discord's own and never typed here.
"""

from __future__ import annotations

import base64
import binascii

import discord

from bot.core.errors import ConfigError

# discord.py attribute -> the name Discord's server settings show, with what the code does that
# needs it (the calls are listed so tests/platforms/test_setup_discord.py can compare them with
# the code).
PERMISSIONS: dict[str, tuple[str, str]] = {
    "view_channel": ("View Channel", "see the channel, its threads and the messages people write"),
    "send_messages": ("Send Messages", "post the session message in the channel (channel.send)"),
    "embed_links": ("Embed Links", "the session message is an embed (channel.send(embed=...))"),
    "create_public_threads": (
        "Create Public Threads", "open the session thread from that message (create_thread)",
    ),
    "send_messages_in_threads": (
        "Send Messages in Threads", "the avatar's lines, refusals and the summary in the thread",
    ),
    "read_message_history": (
        "Read Message History", "reply to a message and react to it (reply, add_reaction)",
    ),
    "add_reactions": (
        "Add Reactions", "the reactions that say a message reached the avatar, or had no text",
    ),
}

# What ``_check_bot_permissions`` looks up on ``interaction.app_permissions``: attribute -> label.
NEEDED_PERMISSIONS: dict[str, str] = {name: label for name, (label, _) in PERMISSIONS.items()}

# ``bot`` makes the bot join the server; ``applications.commands`` lets it register /avatar there.
INVITE_SCOPES = ("bot", "applications.commands")


def needed_permissions() -> discord.Permissions:
    """Every permission in ``PERMISSIONS`` as one ``discord.Permissions`` value."""
    return discord.Permissions(**dict.fromkeys(PERMISSIONS, True))


def application_id_from_token(token: str) -> str | None:
    """The bot's user id, read from the first dot-separated part of a bot token.

    A bot token starts with the base64 of the bot user's id; for every application created since
    bot users became part of applications, that id is also the application (client) id. Returns
    None when the token does not have that shape.
    """
    first = token.strip().removeprefix("Bot ").split(".", 1)[0]
    try:
        decoded = base64.b64decode(first + "=" * (-len(first) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if decoded.isdigit() else None


def application_id(configured: str | None, token: str | None) -> str:
    """``DISCORD_APPLICATION_ID`` if set, else the id inside ``DISCORD_TOKEN``."""
    if configured:
        if not configured.strip().isdigit():
            raise ConfigError("DISCORD_APPLICATION_ID must be the numeric Application ID.")
        return configured.strip()
    derived = application_id_from_token(token) if token else None
    if derived is None:
        raise ConfigError(
            "Set DISCORD_APPLICATION_ID to the Application ID shown on the General Information "
            "page of your app at https://discord.com/developers/applications (or set "
            "DISCORD_TOKEN, whose first part holds it)."
        )
    return derived


def invite_url(client_id: str) -> str:
    """The link a server admin opens to add the bot, with exactly the permissions it needs."""
    return discord.utils.oauth_url(
        client_id, permissions=needed_permissions(), scopes=INVITE_SCOPES,
    )
