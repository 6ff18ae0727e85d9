"""Slack: ``/avatar``, a thread per session, multi-workspace install (slack-bolt ``AsyncApp``)."""

from bot.platforms.slack.app import (
    SlackAdapter,
    adapter_of,
    build_slack_app,
    mount_slack,
    start_socket_mode,
)
from bot.platforms.slack.manifest import app_manifest, manifest_json

__all__ = [
    "SlackAdapter", "adapter_of", "app_manifest", "build_slack_app", "manifest_json",
    "mount_slack", "start_socket_mode",
]
