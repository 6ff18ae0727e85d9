"""A database that cannot be opened: one clear line, a non-zero exit, and never a hung process.

Each case runs the real ``avatarbot`` in its own process against a real file. Root ignores file
modes, so when the tests run as root the process is started without CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH (``setpriv``), which makes modes apply to it as to any other user.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.core.errors import StoreUnavailable
from bot.storage import SqliteStore
from tests.process import bare_env, run

NO_DAC = ["--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]


def _as_plain_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file modes cannot be tested")
    return [setpriv, *NO_DAC]


def corrupt(tmp: Path) -> tuple[Path, str, bool]:
    db = tmp / "bot.db"
    db.write_bytes(b"this is not a database, it only has a .db name " * 100)
    return db, "the file is not a SQLite database or is corrupt", False


def unreadable(tmp: Path) -> tuple[Path, str, bool]:
    db = tmp / "bot.db"
    sqlite3.connect(db).close()
    db.chmod(0)
    return db, "permission denied", True


def readonly_folder_new_file(tmp: Path) -> tuple[Path, str, bool]:
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "bot.db", "permission denied", True


def readonly_folder_existing_file(tmp: Path) -> tuple[Path, str, bool]:
    """The file is writable but SQLite cannot create its -wal next to it."""
    folder = tmp / "ro"
    folder.mkdir()
    db = folder / "bot.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    folder.chmod(0o555)
    return db, "read-only", True


CASES = [corrupt, unreadable, readonly_folder_new_file, readonly_folder_existing_file]
COMMANDS = [("run",), ("credits", "show", "discord:1")]


@pytest.fixture
def restore_modes(tmp_path):
    yield
    for path in tmp_path.rglob("*"):
        path.chmod(0o700)  # let pytest clean up


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
async def test_a_database_that_cannot_be_opened_is_one_line_and_an_exit(
    tmp_path: Path,
    restore_modes: None,
    case: Callable[[Path], tuple[Path, str, bool]],
    command: tuple[str, ...],
) -> None:
    db, cause, needs_modes = case(tmp_path)
    prefix = _as_plain_user() if needs_modes else []
    env = bare_env() | {"DATABASE_PATH": str(db), "PORT": "0", "PLAYGROUND_ENABLED": "true"}
    code, out, text = await run(env, *command, cwd=tmp_path, prefix=prefix)
    assert code != 0, (out, text)
    assert f"error: Cannot use the database {db}: " in text
    assert cause in text
    assert "Traceback" not in text and "sqlite3." not in text
    assert len(text.strip().splitlines()) == 1, text


async def test_a_failed_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    db, _, _ = corrupt(tmp_path)
    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "sqlite-writer"]

    assert writers() == []
    with pytest.raises(StoreUnavailable) as caught:
        await SqliteStore.open(db)
    assert caught.value.path == str(db)
    assert "not a SQLite database" in caught.value.user_message
    assert writers() == []
    assert db.read_bytes().startswith(b"this is not a database")  # left as it was


async def test_the_database_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    db = tmp_path / "private.db"
    store = await SqliteStore.open(db)
    try:
        await store.grant("discord:1", 5, "test")
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    finally:
        await store.close()
    assert modes == {p.name: 0o600 for p in files}


async def test_a_closed_store_refuses_calls_and_a_second_close_is_harmless(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "c.db")
    await store.grant("discord:1", 5, "test")
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.balance("discord:1")
