"""SQL lives only in bot/storage: a second backend is an added module there, not a hunt."""

from __future__ import annotations

import inspect

import pytest

from bot.core.ports import SecretsStore, SessionStore, SlackInstallStore
from bot.storage import SqliteSlackInstallStore, SqliteStore
from bot.storage.postgres import PostgresSlackInstallStore, PostgresStore
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


def _shape(fn: object) -> list[tuple[str, object, object]]:
    """Each parameter's name, kind and default: what a caller of the port relies on."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


BACKENDS = [
    (SessionStore, SqliteStore), (SlackInstallStore, SqliteSlackInstallStore),
    (SessionStore, PostgresStore), (SlackInstallStore, PostgresSlackInstallStore),
    (SecretsStore, SqliteStore), (SecretsStore, PostgresStore),
]


@pytest.mark.parametrize(("proto", "impl"), BACKENDS, ids=lambda c: c.__name__)
def test_every_backend_implements_every_port_method_with_the_same_signature(proto, impl):
    """A port method added later fails here, loudly, until every backend has it."""
    methods = _port_methods(proto)
    assert methods, proto
    missing = [n for n in methods if not inspect.iscoroutinefunction(getattr(impl, n, None))]
    assert missing == [], f"{impl.__name__} lacks {missing} of {proto.__name__}"
    for name in methods:
        assert _shape(getattr(impl, name)) == _shape(vars(proto)[name]), f"{impl.__name__}.{name}"


@pytest.mark.parametrize("proto", [SessionStore, SecretsStore], ids=lambda c: c.__name__)
def test_the_store_docstrings_list_every_method_and_their_number(proto):
    names = _port_methods(proto)
    doc = proto.__doc__ or ""
    assert [n for n in names if f"``{n}``:" not in doc] == []
    assert f"The {len(names)} methods" in doc
