"""Slack: ``/avatar``, a thread per session, multi-workspace install (slack-bolt ``AsyncApp``)."""

from bot.platforms.slack.app import (
    SlackAdapter,
    adapter_of,
    build_slack_app,
    mount_slack,
    start_socket_mode,
)

__all__ = ["SlackAdapter", "adapter_of", "build_slack_app", "mount_slack", "start_socket_mode"]
