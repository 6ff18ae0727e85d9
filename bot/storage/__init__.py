"""Persistence: the SQLite and PostgreSQL stores, their migrations and Slack install stores.

All SQL of avatarbot lives in this package. ``open_backend`` picks the backend from the settings
(``DATABASE_URL`` for PostgreSQL, else the SQLite file at ``DATABASE_PATH``);
``docs/architecture.md`` ("Choosing the database") says when to take which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.core.models import Limits
from bot.core.ports import SlackInstallStore
from bot.storage.postgres import PostgresSlackInstallStore, PostgresStore
from bot.storage.secrets import SecretBox
from bot.storage.slack_installs import SqliteSlackInstallStore
from bot.storage.sqlite import SqliteStore


@dataclass
class Backend:
    """An open store, the Slack install store on the same database, and where it is."""

    store: SqliteStore | PostgresStore
    installs: SlackInstallStore
    #: the file, or the URL without its password: safe to print
    where: str

    async def close(self) -> None:
        """Close the store's connections (idempotent)."""
        await self.store.close()


async def open_backend(
    *, database_url: str | None, database_path: Path, default_limits: Limits,
    box: SecretBox | None = None,
) -> Backend:
    """Open PostgreSQL at ``database_url`` if set, else the SQLite file; apply migrations.

    ``box`` seals the Slack installations on either backend; default: the key file next to
    ``database_path`` (docs/secrets.md).

    Raises:
        StoreUnavailable: the database cannot be reached, opened or migrated.
    """
    box = box or SecretBox.from_settings(None, database_path)
    if database_url:
        pg = await PostgresStore.open(database_url, default_limits)
        return Backend(pg, PostgresSlackInstallStore(pg, box), pg.url)
    lite = await SqliteStore.open(database_path, default_limits)
    return Backend(lite, SqliteSlackInstallStore(lite, box), str(database_path))


__all__ = [
    "Backend",
    "PostgresSlackInstallStore",
    "PostgresStore",
    "SqliteSlackInstallStore",
    "SqliteStore",
    "open_backend",
]
