"""Persistence: the SQLite store (one writer thread), its migrations and the Slack install store.

All SQL of avatarbot lives in this package.
"""

from bot.storage.slack_installs import SqliteSlackInstallStore
from bot.storage.sqlite import SqliteStore

__all__ = ["SqliteSlackInstallStore", "SqliteStore"]
