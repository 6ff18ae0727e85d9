"""Persistence: the aiosqlite store and its migrations."""

from bot.storage.sqlite import SqliteStore

__all__ = ["SqliteStore"]
