"""Stored credentials are encrypted: the raw database file never holds a Slack token or the
generated link secret; ``avatarbot secrets rotate`` moves them to a new key, after which the old
key can go; a wrong key is one clear error.

Everything runs on real SQLite files; the CLI and ``avatarbot run`` run as real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.app import build_services
from bot.settings import Settings
from bot.storage import SqliteSlackInstallStore, SqliteStore
from bot.storage.secrets import SecretBox, WrongStorageKey, key_file_for

BIN = Path(sys.executable).parent
# The shapes slack-sdk's Installation/Bot.to_dict() write (slack_sdk/oauth/installation_store/
# models/bot.py): bot_token, bot_refresh_token, and a user token on installations.
BOT_TOKEN = "xoxb-1111-2222-secretbottoken"
REFRESH = "xoxe-1-refreshsecret"
USER_TOKEN = "xoxp-3333-usersecret"


def _raw(db: Path) -> bytes:
    """Every byte SQLite keeps for ``db``: the file, its WAL and shared memory."""
    return b"".join(
        p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()
    )


async def _save(store: SqliteStore, box: SecretBox | None = None) -> SqliteSlackInstallStore:
    installs = SqliteSlackInstallStore(store, box)
    await installs.save_bot("cid", enterprise_id=None, team_id="T1", installed_at=1.0,
                            data={"bot_token": BOT_TOKEN, "bot_refresh_token": REFRESH,
                                  "team_id": "T1"})
    await installs.save_installation("cid", enterprise_id=None, team_id="T1", user_id="U1",
                                     installed_at=1.0,
                                     data={"bot_token": BOT_TOKEN, "user_token": USER_TOKEN})
    return installs


def _env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISCORD_", "SLACK_", "A2E_", "AKOOL_", "HEYGEN_", "LLM_",
                                "STORAGE_KEY", "SECRET_KEY"))}
    return env | {"DATABASE_PATH": str(db), "PORT": "0"} | extra


async def _cli(tmp: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "avatarbot"), *args, env=env, cwd=tmp,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"avatarbot {' '.join(args)} hung")
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_tokens_are_not_in_the_raw_database_and_read_back(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await SqliteStore.open(db)
    try:
        installs = await _save(store)
        bot = await installs.find_bot("cid", enterprise_id=None, team_id="T1")
        inst = await installs.find_installation("cid", enterprise_id=None, team_id="T1")
        raw = _raw(db)
    finally:
        await store.close()
    assert bot is not None and bot["bot_token"] == BOT_TOKEN
    assert inst is not None and inst["user_token"] == USER_TOKEN
    for secret in (BOT_TOKEN, REFRESH, USER_TOKEN, "xoxb-", "xoxp-"):
        assert secret.encode() not in raw, secret
    assert b"fernet:" in raw
    # No STORAGE_KEY: the key was generated next to the database, private to its owner.
    key_file = key_file_for(db)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes() not in raw


async def test_generated_link_secret_is_sealed_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    settings = Settings(_env_file=None, database_path=db)  # type: ignore[call-arg]
    async with build_services(settings) as services:
        token = services.links.token("s1", 2_000_000_000)
    async with build_services(settings) as services:
        assert services.links.verify(token, now=0) is not None, "links must survive a restart"
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT value FROM meta WHERE key = 'link_secret'").fetchone()[0]
    conn.close()
    assert stored.startswith("fernet:")
    box = SecretBox.from_settings(None, db)
    secret = box.open(stored)
    assert len(secret) == 64 and secret.encode() not in _raw(db)


async def test_plain_rows_from_before_are_read_and_sealed_by_rotate(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await SqliteStore.open(db)
    await store.close()
    # Rows as the store wrote them before encryption: plain JSON and a plain link secret.
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO slack_bots VALUES ('cid', '', 'T1', ?, 1.0)",
                     (json.dumps({"bot_token": BOT_TOKEN}),))
        conn.execute("INSERT INTO meta VALUES ('link_secret', ?)", ("ab" * 32,))
    conn.close()
    store = await SqliteStore.open(db)
    try:
        bot = await SqliteSlackInstallStore(store).find_bot("cid", enterprise_id=None,
                                                            team_id="T1")
    finally:
        await store.close()
    assert bot == {"bot_token": BOT_TOKEN}
    key = Fernet.generate_key().decode()
    code, out = await _cli(tmp_path, _env(db, STORAGE_KEY=key), "secrets", "rotate")
    assert code == 0, out
    assert "re-encrypted 2 stored credential(s)" in out
    raw = _raw(db)
    assert BOT_TOKEN.encode() not in raw and b"ab" * 32 not in raw


async def test_rotate_moves_to_the_new_key_and_the_old_key_can_go(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    old, new = Fernet.generate_key(), Fernet.generate_key()
    store = await SqliteStore.open(db)
    try:
        await _save(store, SecretBox([old], key_file=key_file_for(db), source="STORAGE_KEY"))
    finally:
        await store.close()
    code, out = await _cli(tmp_path, _env(db, STORAGE_KEY=f"{new.decode()},{old.decode()}"),
                           "secrets", "rotate")
    assert code == 0, out
    assert "re-encrypted 2 stored credential(s)" in out and "remove the others" in out
    # The new key alone now opens everything; the old one alone opens nothing.
    store = await SqliteStore.open(db)
    try:
        fresh = SqliteSlackInstallStore(
            store, SecretBox([new], key_file=key_file_for(db), source="STORAGE_KEY"))
        bot = await fresh.find_bot("cid", enterprise_id=None, team_id="T1")
        stale = SqliteSlackInstallStore(
            store, SecretBox([old], key_file=key_file_for(db), source="STORAGE_KEY"))
        with pytest.raises(WrongStorageKey):
            await stale.find_bot("cid", enterprise_id=None, team_id="T1")
    finally:
        await store.close()
    assert bot is not None and bot["bot_token"] == BOT_TOKEN
    assert not key_file_for(db).exists(), "with STORAGE_KEY set no key file is made"
    code, out = await _cli(tmp_path, _env(db, STORAGE_KEY=new.decode()), "doctor")
    assert "stored credentials cannot be decrypted" not in out, out


async def test_rotate_with_the_key_file_replaces_the_key(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await SqliteStore.open(db)
    try:
        await _save(store)
    finally:
        await store.close()
    before = key_file_for(db).read_bytes()
    code, out = await _cli(tmp_path, _env(db), "secrets", "rotate")
    assert code == 0, out
    after = key_file_for(db).read_bytes()
    assert after != before and len(after.split()) == 1, "the old key leaves the file"
    assert stat.S_IMODE(key_file_for(db).stat().st_mode) == 0o600
    store = await SqliteStore.open(db)
    try:
        bot = await SqliteSlackInstallStore(store).find_bot("cid", enterprise_id=None,
                                                            team_id="T1")
    finally:
        await store.close()
    assert bot is not None and bot["bot_token"] == BOT_TOKEN


@pytest.mark.parametrize("command", [("run",), ("secrets", "rotate"), ("doctor",)],
                         ids=lambda c: c[0])
async def test_a_wrong_key_is_one_clear_error(tmp_path: Path, command: tuple[str, ...]) -> None:
    db = tmp_path / "bot.db"
    right = Fernet.generate_key()
    store = await SqliteStore.open(db)
    try:
        await _save(store, SecretBox([right], key_file=key_file_for(db), source="STORAGE_KEY"))
    finally:
        await store.close()
    wrong = Fernet.generate_key().decode()
    code, out = await _cli(tmp_path, _env(db, STORAGE_KEY=wrong), *command)
    assert code != 0, out
    assert "stored credentials cannot be decrypted with STORAGE_KEY" in out
    assert "Traceback" not in out and wrong not in out and right.decode() not in out


async def test_a_malformed_key_is_a_clear_error(tmp_path: Path) -> None:
    code, out = await _cli(tmp_path, _env(tmp_path / "bot.db", STORAGE_KEY="not-a-key"),
                           "secrets", "rotate")
    assert code != 0 and "STORAGE_KEY: key 1 is not a Fernet key" in out, out
    assert "Traceback" not in out


async def test_plain_rows_are_sealed_when_the_server_starts(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await SqliteStore.open(db)
    await store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO slack_installations VALUES ('cid', '', 'T1', 'U1', ?, 1.0)",
                     (json.dumps({"bot_token": BOT_TOKEN, "user_token": USER_TOKEN}),))
    conn.close()
    settings = Settings(_env_file=None, database_path=db, secret_key="k" * 32)  # type: ignore[call-arg]
    async with build_services(settings) as services:
        found = await services.slack_installs.find_installation(
            "cid", enterprise_id=None, team_id="T1", user_id="U1")
    assert found is not None and found["user_token"] == USER_TOKEN
    raw = _raw(db)
    assert BOT_TOKEN.encode() not in raw and USER_TOKEN.encode() not in raw
