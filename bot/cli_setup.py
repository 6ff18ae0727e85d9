"""Setup commands: ``avatarbot slack manifest`` and ``avatarbot discord invite``.

They print what a newcomer pastes into Slack's and Discord's developer sites; the README's
"Add it to Slack" and "Add it to Discord" sections walk through them. ``bot/cli.py`` adds them to
its groups.
"""

from __future__ import annotations

import sys

import click

from bot.cli import _settings
from bot.core.errors import ConfigError

NO_PUBLIC_URL = (
    "PUBLIC_URL is not set, and Slack must know where to send commands and events.\n"
    "Set it to the HTTPS address this server is reachable at, for example\n"
    "  PUBLIC_URL=https://avatars.example.org avatarbot slack manifest\n"
    "(or put PUBLIC_URL=... in .env). Without a public address, use Socket Mode for development:\n"
    "  avatarbot slack manifest --socket-mode"
)


@click.group()
def slack() -> None:
    """Slack helpers."""


@slack.command("manifest")
@click.option("--socket-mode", is_flag=True,
              help="For development: no request URLs; needs SLACK_APP_TOKEN (xapp-...).")
def slack_manifest(socket_mode: bool) -> None:
    """Print the Slack app manifest (JSON) for PUBLIC_URL: paste it at api.slack.com/apps."""
    from bot.platforms.slack.manifest import manifest_json

    settings = _settings()
    if settings.public_url is None and not socket_mode:
        click.echo(NO_PUBLIC_URL, err=True)
        sys.exit(2)
    if settings.public_url is not None and settings.public_url.scheme != "https" \
            and not socket_mode:
        click.echo("note: Slack only sends requests to https:// URLs; PUBLIC_URL is "
                   f"{settings.base_url}", err=True)
    click.echo(manifest_json(None if socket_mode else settings.base_url,
                             socket_mode=socket_mode))


@click.command("invite")
def discord_invite() -> None:
    """Print the link that adds the bot to a server, with the permissions it needs."""
    from bot.platforms.discord.permissions import PERMISSIONS, application_id, invite_url

    settings = _settings()
    token = settings.discord_token.get_secret_value() if settings.discord_token else None
    try:
        client_id = application_id(settings.discord_application_id, token)
    except ConfigError as exc:
        click.echo(exc.user_message, err=True)
        sys.exit(2)
    click.echo(invite_url(client_id))
    names = ", ".join(label for label, _ in PERMISSIONS.values())
    click.echo(f"Open it as a server admin. Permissions asked for: {names}.", err=True)
