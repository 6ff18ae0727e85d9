"""SQL lives only in bot/storage: a second backend is an added module there, not a hunt."""

from __future__ import annotations

import inspect

import pytest

from bot.core.ports import SessionStore, SlackInstallStore
from bot.storage import SqliteSlackInstallStore, SqliteStore
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


def _port_methods(proto: type) -> list[str]:
    return [n for n, v in vars(proto).items() if inspect.iscoroutinefunction(v)]


@pytest.mark.parametrize(
    ("proto", "impl"), [(SessionStore, SqliteStore), (SlackInstallStore, SqliteSlackInstallStore)]
)
def test_the_sqlite_backend_implements_every_port_method(proto, impl):
    for name in _port_methods(proto):
        mine, theirs = inspect.signature(getattr(impl, name)), inspect.signature(vars(proto)[name])
        assert list(mine.parameters) == list(theirs.parameters), name


def test_the_session_store_docstring_lists_every_method_and_their_number():
    names = _port_methods(SessionStore)
    doc = SessionStore.__doc__ or ""
    assert [n for n in names if f"``{n}``:" not in doc] == []
    assert f"The {len(names)} methods" in doc
