"""Named, versioned SQL migrations (``NNNN_name.sql``), applied in order at startup.

The ``.sql`` files are package data of this package (see ``pyproject.toml``) and are read with
``importlib.resources``, so an installed wheel finds them as well as a checkout does.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from bot.core.models import utcnow

_NAME = re.compile(r"^\d{4}_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration: its name (the file name without ``.sql``) and its SQL."""

    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in the order they apply."""
    files = [f for f in resources.files(__name__).iterdir() if _NAME.match(f.name)]
    return [
        Migration(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8"))
        for f in sorted(files, key=lambda f: f.name)
    ]


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
    applied = []
    for migration in migrations():
        if migration.name in done:
            continue
        # executescript commits anything pending first; the script runs as one transaction.
        conn.executescript(
            "BEGIN IMMEDIATE;\n"
            + migration.sql
            + f"\nINSERT INTO schema_migrations VALUES ('{migration.name}', "
            + f"'{utcnow().isoformat()}');"
            + "\nCOMMIT;"
        )
        applied.append(migration.name)
    return applied
