"""The README's setup sections say what the code does: same permissions, scopes and commands, and
an ICE example the settings accept."""

from __future__ import annotations

import re
from pathlib import Path

import click

from bot.cli import main
from bot.platforms.discord.permissions import PERMISSIONS
from bot.platforms.slack.app import BOT_SCOPES
from bot.providers.local.provider import _ice_servers
from bot.settings import Settings, load_settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(title: str) -> str:
    """One ``## title`` section of the README, whitespace collapsed."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return " ".join(README[start:end if end != -1 else None].split())


def test_discord_permissions_listed_are_the_ones_asked_for():
    text = section("Add it to Discord")
    listed = re.search(r"exactly the permissions the bot uses: (.+?) \(the list", text)
    assert listed is not None
    names = re.split(r", | and ", listed.group(1))
    assert names == [label for label, _ in PERMISSIONS.values()]


def test_slack_scopes_listed_are_the_manifests():
    text = section("Add it to Slack")
    listed = re.search(r"the bot scopes the code uses \((.+?)\)", text)
    assert listed is not None
    assert re.findall(r"`([^`]+)`", listed.group(1)) == BOT_SCOPES


def test_every_avatarbot_command_in_the_readme_exists():
    fenced = re.findall(r"^```\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
    code = "\n".join(fenced + re.findall(r"`([^`\n]+)`", README))
    found = re.findall(r"avatarbot ([a-z]+)(?: ([a-z]+))?", code)
    assert ("slack", "manifest") in found and ("discord", "invite") in found
    ctx = click.Context(main)
    for name, sub in found:
        command = main.get_command(ctx, name)
        assert command is not None, f"avatarbot {name}"
        if isinstance(command, click.Group) and sub:
            assert command.get_command(ctx, sub) is not None, f"avatarbot {name} {sub}"


def test_the_turn_example_is_accepted_by_both_ends():
    (line,) = re.findall(r"^LOCAL_ICE_SERVERS=(.+)$", section_raw("Viewers on other networks"),
                         re.MULTILINE)
    settings = load_settings(_env_file=None, local_ice_servers=line)
    servers = _ice_servers(settings.local_ice_servers)  # what aiortc is given
    assert [s.username for s in servers] == [None, "avatarbot"]
    assert any(u.startswith("turn:") for u in servers[1].urls)


def test_settings_named_in_the_setup_sections_exist():
    fields = {name.upper() for name in Settings.model_fields}
    titles = ("Add it to Discord", "Add it to Slack", "Give it a public URL", "Connect a vendor",
              "Viewers on other networks")
    named = set()
    for title in titles:
        named |= set(re.findall(r"`([A-Z][A-Z0-9_]{2,})(?:=[^`]*)?`", section_raw(title)))
    assert {"DISCORD_APPLICATION_ID", "LIVEAVATAR_API_KEY", "LOCAL_ICE_SERVERS"} <= named
    assert named - fields == set()


def section_raw(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]
