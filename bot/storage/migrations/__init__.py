"""Named, versioned SQL migrations (``NNNN_name.sql``), applied in order at startup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.core.models import utcnow

HERE = Path(__file__).parent


def migration_files() -> list[Path]:
    """Every migration file, in the order they apply."""
    return sorted(HERE.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def apply_migrations(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
    applied = []
    for path in migration_files():
        if path.stem in done:
            continue
        # executescript commits anything pending first; the script runs as one transaction.
        conn.executescript(
            "BEGIN IMMEDIATE;\n"
            + path.read_text(encoding="utf-8")
            + f"\nINSERT INTO schema_migrations VALUES ('{path.stem}', '{utcnow().isoformat()}');"
            + "\nCOMMIT;"
        )
        applied.append(path.stem)
    return applied
