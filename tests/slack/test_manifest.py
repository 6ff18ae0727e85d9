"""The manifest asks for what the app handles, and the app handles what the manifest sends."""

from __future__ import annotations

import json

from bot.platforms.slack import app_manifest, manifest_json
from bot.platforms.slack.app import BOT_SCOPES


def test_manifest_routes_and_scopes():
    manifest = app_manifest("https://bot.example/")
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/avatar" and command["should_escape"] is True
    assert command["url"] == "https://bot.example/slack/events"
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["request_url"] == "https://bot.example/slack/events"
    assert settings["interactivity"]["request_url"] == "https://bot.example/slack/events"
    assert manifest["oauth_config"]["redirect_urls"] == ["https://bot.example/slack/oauth_redirect"]
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert scopes == BOT_SCOPES
    # each message event needs its history scope
    for event, scope in (("message.channels", "channels:history"),
                         ("message.groups", "groups:history"), ("message.im", "im:history")):
        assert event in settings["event_subscriptions"]["bot_events"] and scope in scopes


def test_socket_mode_manifest_has_no_request_urls():
    manifest = json.loads(manifest_json("https://bot.example", socket_mode=True))
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in manifest["settings"]["event_subscriptions"]
    assert "url" not in manifest["features"]["slash_commands"][0]
