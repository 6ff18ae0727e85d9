"""The Slack app manifest this adapter expects (paste it at api.slack.com/apps -> From a manifest).

It names exactly what the code handles: the ``/avatar`` command, the events listened to, the
scopes asked for at install, and our three routes.
"""

from __future__ import annotations

import json
from typing import Any

from bot.platforms.slack.app import BOT_SCOPES
from bot.platforms.slack.commands import COMMAND

BOT_EVENTS = ["message.channels", "message.groups", "message.im", "app_uninstalled",
              "tokens_revoked"]


def app_manifest(public_url: str | None, *, name: str = "avatarbot", socket_mode: bool = False
                 ) -> dict[str, Any]:
    """The manifest for an app served at ``public_url`` (or over Socket Mode: no URLs at all)."""
    if public_url is None and not socket_mode:
        raise ValueError("an HTTP app needs its public URL")
    base = (public_url or "").rstrip("/")
    events_url = None if socket_mode else f"{base}/slack/events"
    command: dict[str, Any] = {
        "command": COMMAND, "description": "Talking avatars: start, talk, stop",
        "usage_hint": "start [avatar] [minutes] [ask|say] | help",
        # Mentions then arrive as <@U123|name>, which `admin allow/deny` reads.
        "should_escape": True,
    }
    subscriptions: dict[str, Any] = {"bot_events": BOT_EVENTS}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if events_url:
        command["url"] = events_url
        subscriptions["request_url"] = events_url
        interactivity["request_url"] = events_url
    oauth: dict[str, Any] = {"scopes": {"bot": list(BOT_SCOPES)}}
    if events_url:
        # Used only with SLACK_CLIENT_ID/SECRET (many workspaces, /slack/install); harmless for
        # an app installed in one workspace from its settings page.
        oauth["redirect_urls"] = [f"{base}/slack/oauth_redirect"]
    return {
        "display_information": {"name": name},
        "features": {
            "bot_user": {"display_name": name, "always_online": True},
            "slash_commands": [command],
        },
        "oauth_config": oauth,
        "settings": {
            "event_subscriptions": subscriptions,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }


def manifest_json(public_url: str | None, *, socket_mode: bool = False) -> str:
    """The manifest as indented JSON (Slack accepts JSON or YAML)."""
    return json.dumps(app_manifest(public_url, socket_mode=socket_mode), indent=2)
