"""Slack: ``/avatar``, a thread per session, multi-workspace install (slack-bolt ``AsyncApp``)."""

from bot.platforms.slack.app import (
    SlackAdapter,
    build_slack,
    mount_slack,
    start_socket_mode,
)
from bot.platforms.slack.manifest import app_manifest, manifest_json

__all__ = [
    "SlackAdapter", "app_manifest", "build_slack", "manifest_json",
    "mount_slack", "start_socket_mode",
]
