"""The store backends the contract tests run against: SQLite (a file) and PostgreSQL.

PostgreSQL: ``tests/conftest.py``'s session fixture ``pg_url`` creates one database per test run
(``avatarbot_test_<pid>_<random>``) through the ``postgres`` maintenance database and drops it
at the end; each test then starts from empty tables (``reset``), so neither two runs nor two
tests see each other's rows. The server is ``AVATARBOT_TEST_PG`` (a URL to the maintenance
database), by default the local one on 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import pytest
from cryptography.fernet import Fernet

from bot.core.models import Limits
from bot.core.ports import SessionStore, SlackInstallStore
from bot.storage import SqliteSlackInstallStore, SqliteStore
from bot.storage.postgres import PostgresSlackInstallStore, PostgresStore, redact
from bot.storage.secrets import SecretBox

BACKENDS = ("sqlite", "postgres")
ADMIN_URL = os.environ.get("AVATARBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def create_database() -> str:
    """Create a database of this run's own; return its URL."""
    name = f"avatarbot_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(ADMIN_URL, name)


async def drop_database(url: str) -> None:
    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def unreachable(exc: BaseException) -> NoReturn:
    """Fail (CI) or skip (a developer's machine) the PostgreSQL tests, saying why."""
    reason = f"PostgreSQL is not reachable at {redact(ADMIN_URL)}: {exc!r}"
    if in_ci():
        pytest.fail(reason + " (CI=true: the PostgreSQL backend must be tested)")
    pytest.skip(reason + " (start it, or set AVATARBOT_TEST_PG)")


async def reset(store: PostgresStore) -> None:
    """Empty every table but the migrations' record (tables added later included).

    DELETE, children before parents, rather than TRUNCATE: on these few rows it takes
    milliseconds where TRUNCATE takes a good part of a second.
    """
    async with store.transaction() as conn:
        left = {
            r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename <> 'schema_migrations'"
            )
        }
        links = [
            (r[0], r[1]) for r in await conn.fetch(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                "WHERE contype = 'f' AND conrelid <> confrelid"
            )
        ]
        while left:
            referenced = {parent for child, parent in links if child in left}
            leaves = sorted(left - referenced) or sorted(left)
            for name in leaves:
                await conn.execute(f'DELETE FROM "{name}"')
            left -= set(leaves)


async def open_store(
    backend: str, where: Path | str, limits: Limits | None = None, *, fresh: bool = True
) -> SqliteStore | PostgresStore:
    """Open a store of ``backend``: ``where`` is a file (SQLite) or a database URL (PostgreSQL).

    ``fresh`` empties a PostgreSQL database first (a SQLite test gets a new file instead).
    """
    if backend == "sqlite":
        return await SqliteStore.open(where, limits)
    store = await PostgresStore.open(str(where), limits)
    if fresh:
        await reset(store)
    return store


#: The key that seals PostgreSQL tests' Slack rows unless a test brings its own (STORAGE_KEY
#: style: a PostgreSQL database has no file next to which a key file would go).
PG_TEST_BOX = SecretBox([Fernet.generate_key()], key_file=Path("/nonexistent/avatarbot.key"),
                        source="STORAGE_KEY")


def installs_for(store: SessionStore, box: SecretBox | None = None) -> SlackInstallStore:
    """The Slack install store on the same database, as the composition root builds it."""
    if isinstance(store, PostgresStore):
        return PostgresSlackInstallStore(store, box or PG_TEST_BOX)
    assert isinstance(store, SqliteStore)
    return SqliteSlackInstallStore(store, box)


async def run_sql(store: SessionStore, sql: str, *args: Any) -> None:
    """Run one statement behind the store's back (``?`` placeholders), e.g. to tamper with it."""
    if isinstance(store, PostgresStore):
        numbered = sql
        for i in range(1, sql.count("?") + 1):
            numbered = numbered.replace("?", f"${i}", 1)
        async with store.transaction() as conn:
            await conn.execute(numbered, *args)
        return
    assert isinstance(store, SqliteStore)
    values = tuple(v.isoformat() if isinstance(v, datetime) else v for v in args)
    await store.write(lambda c: c.execute(sql, values))
