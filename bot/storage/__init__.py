"""Persistence: the SQLite store (one writer thread), its migrations and the Slack install store."""

from bot.storage.sqlite import SqliteStore

__all__ = ["SqliteStore"]
