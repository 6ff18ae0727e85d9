"""The Slack manifest asks for exactly the scopes and events the code uses, and the CLI prints it.

The code is read with ``ast`` (every ``<client>.<Web API method>(...)``, ``api_call("...")``,
``@app.event(...)``, ``@app.message`` and ``@app.command``), so a new Web API call without its
scope, or a scope nothing needs any more, fails here rather than in someone's workspace.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import sys
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.platforms.slack.manifest import BOT_EVENTS, app_manifest

ROOT = Path(__file__).resolve().parents[2]
SLACK_CODE = sorted((ROOT / "bot/platforms/slack").glob("*.py"))

# Web API method -> the bot scopes it needs. Source: each method's page, "Required scopes" / "Bot
# tokens", at https://docs.slack.dev/reference/methods/<method> (formerly api.slack.com/methods).
# Methods called with another kind of token, or none, need no bot scope.
METHOD_SCOPES: dict[str, set[str]] = {
    "chat.postMessage": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.delete": {"chat:write"},
    "conversations.join": {"channels:join"},
    "conversations.info": {"channels:read"},
    "conversations.members": {"channels:read"},
    "conversations.replies": {"channels:history"},
    "conversations.history": {"channels:history"},
    "reactions.add": {"reactions:write"},
    "reactions.remove": {"reactions:write"},
    "users.info": {"users:read"},
    "users.profile.get": {"users.profile:read"},
    "usergroups.list": {"usergroups:read"},
    "team.info": {"team:read"},
    "bots.info": {"users:read"},
    "files.info": {"files:read"},
    "files.getUploadURLExternal": {"files:write"},
    "files.completeUploadExternal": {"files:write"},
    "auth.test": set(),  # any token
    "oauth.v2.access": set(),  # client id and secret, no token
    "apps.connections.open": set(),  # the app-level token (connections:write), not the bot's
    "apps.event.authorizations.list": set(),  # the app-level token (authorizations:read)
}
# Event subscription -> the bot scope Slack requires before it lets an app subscribe. Source:
# https://docs.slack.dev/reference/events/<event> ("Required scopes").
EVENT_SCOPES: dict[str, set[str]] = {
    "message.channels": {"channels:history"},
    "message.groups": {"groups:history"},
    "message.im": {"im:history"},
    "message.mpim": {"mpim:history"},
    "app_mention": {"app_mentions:read"},
    "reaction_added": {"reactions:read"},
    "member_joined_channel": {"channels:read"},
    "app_uninstalled": set(),
    "tokens_revoked": set(),
}
# Registering a slash command listener needs the ``commands`` scope (Slack docs, "Implementing
# slash commands").
COMMAND_SCOPE = "commands"


def _sdk_methods() -> dict[str, str]:
    """slack-sdk's Python method name -> the Web API method it calls, read from the SDK."""
    found = {}
    for name, fn in inspect.getmembers(AsyncWebClient, inspect.isfunction):
        match = re.search(r'api_call\(\s*"([a-zA-Z.]+)"', inspect.getsource(fn))
        if match and not name.startswith("_"):
            found[name] = match.group(1)
    # files_upload_v2 is a helper that calls files.getUploadURLExternal, uploads, then calls
    # files.completeUploadExternal (slack-sdk's own docstring); its source names no api_call.
    found.setdefault("files_upload_v2", "files.getUploadURLExternal")
    return found


def _decorator_name(node: ast.expr) -> tuple[str, ast.Call | None]:
    call = node if isinstance(node, ast.Call) else None
    func = call.func if call is not None else node
    return (func.attr if isinstance(func, ast.Attribute) else ""), call


def scan_slack_code() -> tuple[set[str], set[str], bool]:
    """(Web API methods called, event types listened to by name, whether a command is handled)."""
    sdk = _sdk_methods()
    methods: set[str] = set()
    events: set[str] = set()
    commands = False
    for path in SLACK_CODE:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                attr = node.func.attr
                if attr in sdk:
                    methods.add(sdk[attr])
                elif attr == "api_call" and node.args and isinstance(node.args[0], ast.Constant):
                    methods.add(str(node.args[0].value))
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                for deco in node.decorator_list:
                    name, call = _decorator_name(deco)
                    if name == "command":
                        commands = True
                    elif name == "message":
                        events.add("message")
                    elif name == "event" and call is not None and call.args:
                        arg = call.args[0]
                        if isinstance(arg, ast.Constant):  # re.compile(".*") acks the rest
                            events.add(str(arg.value))
    return methods, events, commands


def test_the_scan_sees_the_calls_the_code_is_known_to_make():
    methods, events, commands = scan_slack_code()
    # If these disappear the scan is broken, not the code (each is asserted elsewhere in tests).
    assert {"chat.postMessage", "chat.update", "reactions.add", "users.info"} <= methods
    assert {"message", "app_uninstalled", "tokens_revoked"} <= events and commands


def test_manifest_scopes_are_exactly_what_the_code_uses():
    methods, _, commands = scan_slack_code()
    unknown = methods - METHOD_SCOPES.keys()
    assert not unknown, f"add the scopes of {sorted(unknown)} (Slack method docs) to METHOD_SCOPES"
    manifest = app_manifest("https://bot.example")
    subscribed = manifest["settings"]["event_subscriptions"]["bot_events"]
    needed = set().union(*(METHOD_SCOPES[m] for m in methods),
                         *(EVENT_SCOPES[e] for e in subscribed))
    if commands:
        needed.add(COMMAND_SCOPE)
    asked = set(manifest["oauth_config"]["scopes"]["bot"])
    assert not needed - asked, f"the manifest lacks {sorted(needed - asked)}"
    assert not asked - needed, f"the manifest asks for {sorted(asked - needed)}, which nothing uses"


def test_manifest_events_are_exactly_the_ones_listened_to():
    _, listened, _ = scan_slack_code()
    subscribed = {e.split(".")[0] for e in BOT_EVENTS}  # message.channels is a "message" event
    assert subscribed - listened == set(), "subscribed to events nothing handles"
    assert listened - subscribed == set(), "listening to events Slack will never send"


# ---------------------------------------------------------------------- the command line


async def avatarbot(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run the real ``avatarbot`` console script of this checkout; (exit code, stdout, stderr)."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "DISCORD_", "PUBLIC_URL"))}
    full |= {"PYTHONPATH": str(ROOT)} | env
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from bot.cli import main; main()", *args, env=full, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_prints_the_manifest_for_public_url(tmp_path):
    code, out, _ = await avatarbot("slack", "manifest",
                                   env={"PUBLIC_URL": "https://avatars.example.org/"},
                                   cwd=tmp_path)
    assert code == 0
    manifest = json.loads(out)
    events_url = "https://avatars.example.org/slack/events"
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/avatar" and command["url"] == events_url
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["request_url"] == events_url
    assert settings["interactivity"] == {"is_enabled": True, "request_url": events_url}
    assert settings["socket_mode_enabled"] is False
    assert manifest["oauth_config"]["redirect_urls"] == [
        "https://avatars.example.org/slack/oauth_redirect"]


async def test_cli_socket_mode_manifest_has_no_urls(tmp_path):
    code, out, _ = await avatarbot("slack", "manifest", "--socket-mode", env={}, cwd=tmp_path)
    assert code == 0
    assert "http" not in out  # no request URL, no redirect URL anywhere
    manifest = json.loads(out)
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"] == {"is_enabled": True}


@pytest.mark.parametrize("env", [{}, {"PUBLIC_URL": ""}])
async def test_cli_without_public_url_says_how_to_set_it(tmp_path, env):
    code, out, err = await avatarbot("slack", "manifest", env=env, cwd=tmp_path)
    assert code == 2 and out == ""
    assert "PUBLIC_URL is not set" in err and "PUBLIC_URL=https://" in err
    assert "--socket-mode" in err and "Traceback" not in err


async def test_cli_bad_public_url_is_one_clear_message(tmp_path):
    code, _, err = await avatarbot("slack", "manifest", env={"PUBLIC_URL": "avatars.example"},
                                   cwd=tmp_path)
    assert code == 2 and "PUBLIC_URL" in err and "Traceback" not in err
