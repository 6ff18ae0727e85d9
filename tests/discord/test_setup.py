"""The invite asks for exactly the permissions the code needs, and the start check uses the same.

The code is read with ``ast``: each discord.py call that touches a channel, thread or message is
mapped to the permissions Discord's docs require for it, and the union must be the permission
list in ``bot/platforms/discord/permissions.py`` that both the invite and the start check use.
"""

from __future__ import annotations

import ast
import base64
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from bot.platforms.discord import commands
from bot.platforms.discord.permissions import (
    NEEDED_PERMISSIONS,
    PERMISSIONS,
    application_id_from_token,
    invite_url,
)
from tests.discord.conftest import TENANT, Bot, Stack
from tests.discord.test_refusals import refused
from tests.fakes.discord import BOT_PERMS, FakeDiscord
from tests.platforms.test_setup_slack import avatarbot

ROOT = Path(__file__).resolve().parents[2]
DISCORD_CODE = sorted((ROOT / "bot/platforms/discord").glob("*.py"))

# Bit values from Discord's permissions table (https://discord.com/developers/docs/topics/
# permissions, "Bitwise Permission Flags"), typed here so a wrong discord.py name shows up.
DOCUMENTED_BITS = {
    "view_channel": 1 << 10, "send_messages": 1 << 11, "embed_links": 1 << 14,
    "read_message_history": 1 << 16, "add_reactions": 1 << 6,
    "create_public_threads": 1 << 35, "send_messages_in_threads": 1 << 38,
    "manage_messages": 1 << 13, "manage_threads": 1 << 34,
}
# discord.py call on a channel, thread or message -> the permissions Discord requires for the REST
# call behind it. Sources (Discord docs, resources/message and resources/channel):
# Create Message needs SEND_MESSAGES in a channel and SEND_MESSAGES_IN_THREADS in a thread (the
# bot's ``send`` goes to both), READ_MESSAGE_HISTORY with a message reference (``reply``);
# Create Reaction needs READ_MESSAGE_HISTORY, and ADD_REACTIONS when nobody used that emoji yet;
# Start Thread from Message needs CREATE_PUBLIC_THREADS; Get Channel Message(s) needs
# READ_MESSAGE_HISTORY; editing the bot's own message needs nothing more. Every channel action
# needs VIEW_CHANNEL.
CALL_PERMISSIONS: dict[str, set[str]] = {
    "send": {"send_messages", "send_messages_in_threads"},
    "reply": {"send_messages_in_threads", "read_message_history"},
    "add_reaction": {"read_message_history", "add_reactions"},
    "create_thread": {"create_public_threads"},
    "fetch_message": {"read_message_history"},
    "history": {"read_message_history"},
    "pin": {"manage_messages"},
    "clear_reactions": {"manage_messages"},
    "edit": set(),  # only the bot's own messages are edited
}
# ``<x>.send(...)`` counts when x names a channel, thread or message; ``interaction.followup``
# and ``service.send`` are not Discord channel calls.
CHANNEL_RECEIVERS = ("channel", "thread", "message")
TOKEN = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"
# Receiving people's messages in the thread (the gateway only sends what the bot can see).
EVENT_PERMISSIONS = {"on_message": {"view_channel"}, "on_raw_message_edit": {"view_channel"}}


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return _receiver_name(node.func)
    return ""


def needed_by_the_code() -> tuple[set[str], set[str]]:
    """(the permissions the calls need, the call names found)."""
    needed: set[str] = set()
    found: set[str] = set()
    for path in DISCORD_CODE:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.AsyncFunctionDef) and node.name in EVENT_PERMISSIONS:
                needed |= EVENT_PERMISSIONS[node.name]
                found.add(node.name)
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            attr = node.func.attr
            receiver = _receiver_name(node.func.value).lower()
            if attr in CALL_PERMISSIONS and any(r in receiver for r in CHANNEL_RECEIVERS):
                needed |= CALL_PERMISSIONS[attr] | {"view_channel"}
                found.add(attr)
                if any(k.arg in ("embed", "embeds") for k in node.keywords):
                    needed.add("embed_links")
                    found.add(f"{attr}(embed=)")
    return needed, found


def test_the_scan_sees_the_calls_the_code_is_known_to_make():
    _, found = needed_by_the_code()
    assert {"send", "send(embed=)", "create_thread", "add_reaction", "reply",
            "on_message"} <= found


def test_permissions_are_exactly_what_the_calls_need():
    needed, _ = needed_by_the_code()
    listed = set(PERMISSIONS)
    assert not needed - listed, f"the code needs {sorted(needed - listed)}, not in permissions.py"
    assert not listed - needed, f"permissions.py asks for {sorted(listed - needed)}, unused"


def test_the_start_check_and_the_invite_share_one_list():
    assert commands.NEEDED_PERMISSIONS is NEEDED_PERMISSIONS
    query = parse_qs(urlsplit(invite_url("1234")).query)
    assert query["client_id"] == ["1234"]
    assert query["scope"] == ["bot applications.commands"]
    expected = sum(DOCUMENTED_BITS[name] for name in PERMISSIONS)
    assert query["permissions"] == [str(expected)]
    assert urlsplit(invite_url("1")).netloc == "discord.com"


def test_application_id_from_a_token_shape():
    # A bot token's first part is the unpadded base64 of the bot's user id (TOKEN below is the
    # example of Discord docs, reference.md "Authentication").
    assert application_id_from_token(TOKEN) == "198622483471925248"
    assert application_id_from_token("Bot MTk4NjIyNDgzNDcxOTI1MjQ4.x.y") == "198622483471925248"
    assert application_id_from_token("not a token") is None
    assert application_id_from_token(base64.b64encode(b"abc").decode() + ".x.y") is None


async def test_a_channel_without_read_message_history_is_refused_by_name(
    fake: FakeDiscord, stack: Stack, bot: Bot, alice: dict
) -> None:
    await stack.store.grant(TENANT, 100, "test")
    without = BOT_PERMS & ~(DOCUMENTED_BITS["read_message_history"]
                            | DOCUMENTED_BITS["add_reactions"])
    text = await refused(fake, stack, await fake.slash(alice, "start", app_perms=without))
    missing = text.split(":", 1)[1].split(".", 1)[0]
    assert missing.strip() == "Read Message History, Add Reactions"


# ---------------------------------------------------------------------- the command line


async def test_cli_invite_with_the_application_id(tmp_path):
    code, out, err = await avatarbot("discord", "invite",
                                     env={"DISCORD_APPLICATION_ID": "555"}, cwd=tmp_path)
    assert code == 0
    assert out.strip() == invite_url("555")
    assert "Read Message History" in err


async def test_cli_invite_from_the_token_never_prints_it(tmp_path):
    code, out, err = await avatarbot("discord", "invite", env={"DISCORD_TOKEN": TOKEN},
                                     cwd=tmp_path)
    assert code == 0 and "client_id=198622483471925248&" in out
    assert "ZnCjm1XVW7vRze4b7Cq4se7kKWs" not in out + err and "Cl2FMQ" not in out + err


async def test_cli_invite_without_an_id_says_where_to_find_it(tmp_path):
    code, out, err = await avatarbot("discord", "invite", env={}, cwd=tmp_path)
    assert code == 2 and out == ""
    assert "DISCORD_APPLICATION_ID" in err and "General Information" in err
    code, _, err = await avatarbot("discord", "invite",
                                   env={"DISCORD_APPLICATION_ID": "my-bot"}, cwd=tmp_path)
    assert code == 2 and "numeric Application ID" in err and "Traceback" not in err
