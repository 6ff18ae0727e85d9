"""PostgreSQL migrations (``NNNN_name.sql``), applied in order at startup by ``PostgresStore``.

The ``.sql`` files are package data of this package (see ``pyproject.toml``). Several workers may
start at once: the whole run holds a transaction-scoped advisory lock, so one applies what is
missing and the others then find it recorded. PostgreSQL's DDL is transactional, so a failed
migration leaves nothing half-applied.
"""

from __future__ import annotations

import re
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bot.core.models import utcnow
from bot.storage.migrations import Migration

_NAME = re.compile(r"^\d{4}_[A-Za-z0-9_]+\.sql$")
#: Key of the advisory lock held while migrating ("avatarbt" in ASCII, as a 64-bit integer).
LOCK_KEY = int.from_bytes(b"avatarbt", "big") & 0x7FFF_FFFF_FFFF_FFFF


def migrations() -> list[Migration]:
    """Every PostgreSQL migration shipped with the package, in the order they apply."""
    files = [f for f in resources.files(__name__).iterdir() if _NAME.match(f.name)]
    return [
        Migration(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8"))
        for f in sorted(files, key=lambda f: f.name)
    ]


async def apply_migrations(
    conn: asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record],
) -> list[str]:
    """Apply every migration not yet recorded, in one transaction; return the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
        )
        done = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for migration in migrations():
            if migration.name in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2)", migration.name, utcnow()
            )
            applied.append(migration.name)
    return applied


__all__ = ["LOCK_KEY", "apply_migrations", "migrations"]
