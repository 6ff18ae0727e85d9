"""SQL lives only in bot/storage: a second backend is an added module there, not a hunt."""

from __future__ import annotations

from tests.core.test_architecture import ROOT, offending

SQL_LIBRARIES = ("sqlite3", "aiosqlite", "asyncpg", "psycopg", "sqlalchemy")


def test_no_layer_but_storage_talks_sql():
    files = [
        path for layer in ("bot", "web") for path in (ROOT / layer).rglob("*.py")
        if not path.is_relative_to(ROOT / "bot/storage")
    ]
    assert files, "no source files found"
    assert offending(files, SQL_LIBRARIES) == []


def test_the_slack_install_adapter_runs_no_sql_of_its_own():
    source = (ROOT / "bot/platforms/slack/installation_store.py").read_text()
    for word in ("SELECT ", "INSERT ", "DELETE FROM", ".run(", ".write(", "store.store"):
        assert word not in source, word
