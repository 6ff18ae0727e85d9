"""Stored credentials are encrypted on both backends: the raw database (SQLite's file bytes,
PostgreSQL's stored rows) never holds a Slack token or the generated link secret; ``avatarbot
secrets rotate`` moves them to a new key, after which the old key can go; a wrong key is one clear
error.

Everything runs on real SQLite files and on this run's PostgreSQL database (tests/backends.py);
the CLI and ``avatarbot run`` run as real processes.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from bot.app import build_services
from bot.core.ports import SlackInstallStore
from bot.settings import Settings
from bot.storage import PostgresSlackInstallStore, PostgresStore, SqliteSlackInstallStore
from bot.storage.secrets import SecretBox, WrongStorageKey, key_file_for
from tests.backends import BACKENDS, open_store
from tests.process import bare_env, run

# The shapes slack-sdk's Installation/Bot.to_dict() write (slack_sdk/oauth/installation_store/
# models/bot.py): bot_token, bot_refresh_token, and a user token on installations.
BOT_TOKEN = "xoxb-1111-2222-secretbottoken"
REFRESH = "xoxe-1-refreshsecret"
USER_TOKEN = "xoxp-3333-usersecret"


@dataclass
class Db:
    """One test's database: a SQLite file, or this run's PostgreSQL database (emptied).

    ``path`` is ``DATABASE_PATH``: the SQLite file, and on either backend the place of the
    generated key file (``<path>.key``) when ``STORAGE_KEY`` is unset.
    """

    backend: str
    path: Path
    url: str | None = None

    async def open(self) -> Any:
        return await open_store(self.backend, self.url or self.path, fresh=False)

    def installs(self, store: Any, box: SecretBox | None = None) -> SlackInstallStore:
        """The Slack install store as ``open_backend`` builds it (default: the key file)."""
        box = box or SecretBox.from_settings(None, self.path)
        if isinstance(store, PostgresStore):
            return PostgresSlackInstallStore(store, box)
        return SqliteSlackInstallStore(store, box)

    def settings(self, **extra: Any) -> Settings:
        return Settings(_env_file=None, database_path=self.path,  # type: ignore[call-arg]
                        database_url=self.url, **extra)

    def env(self, **extra: str) -> dict[str, str]:
        env = bare_env("STORAGE_KEY", "SECRET_KEY", "DATABASE_")
        env |= {"DATABASE_PATH": str(self.path), "PORT": "0"}
        if self.url:
            env["DATABASE_URL"] = self.url
        return env | extra

    async def raw(self) -> bytes:
        """Every stored byte that could hold a credential, as the database keeps it.

        SQLite: the file, its WAL and shared memory. PostgreSQL: the text of every Slack row's
        ``data`` and every meta value, read with a connection of our own (no codec, no box).
        """
        if self.url is None:
            return b"".join(p.read_bytes() for p in
                            (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                            if p.exists())
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                "SELECT data::text FROM slack_bots UNION ALL "
                "SELECT data::text FROM slack_installations UNION ALL SELECT value FROM meta"
            )
        finally:
            await conn.close()
        return "\n".join(r[0] for r in rows).encode()

    async def meta(self, key: str) -> str | None:
        if self.url is None:
            with sqlite3.connect(self.path) as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            conn.close()
            return row[0] if row else None
        conn = await asyncpg.connect(self.url)
        try:
            value: str | None = await conn.fetchval("SELECT value FROM meta WHERE key = $1", key)
        finally:
            await conn.close()
        return value

    async def write_plain(self, *, bot: dict[str, Any] | None = None,
                          installation: dict[str, Any] | None = None,
                          link_secret: str | None = None) -> None:
        """Rows as the stores wrote them before encryption: plain JSON, a plain link secret."""
        store = await self.open()  # creates the schema
        await store.close()
        if self.url is None:
            with sqlite3.connect(self.path) as conn:
                if bot is not None:
                    conn.execute("INSERT INTO slack_bots VALUES ('cid', '', 'T1', ?, 1.0)",
                                 (json.dumps(bot),))
                if installation is not None:
                    conn.execute("INSERT INTO slack_installations VALUES "
                                 "('cid', '', 'T1', 'U1', ?, 1.0)", (json.dumps(installation),))
                if link_secret is not None:
                    conn.execute("INSERT INTO meta VALUES ('link_secret', ?)", (link_secret,))
            conn.close()
            return
        pg = await asyncpg.connect(self.url)
        try:
            if bot is not None:
                await pg.execute("INSERT INTO slack_bots VALUES ('cid', '', 'T1', $1::jsonb, "
                                 "now())", json.dumps(bot))
            if installation is not None:
                await pg.execute("INSERT INTO slack_installations VALUES "
                                 "('cid', '', 'T1', 'U1', $1::jsonb, now())",
                                 json.dumps(installation))
            if link_secret is not None:
                await pg.execute("INSERT INTO meta VALUES ('link_secret', $1)", link_secret)
        finally:
            await pg.close()


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    path = tmp_path / "bot.db"
    if request.param == "sqlite":
        return Db("sqlite", path)
    return Db("postgres", path, request.getfixturevalue("pg_url"))


@pytest.fixture
async def db(where: Db) -> Db:
    """A new empty database of each backend."""
    if where.url is not None:
        store = await open_store("postgres", where.url)  # migrated and emptied
        await store.close()
    return where


async def _save(db: Db, box: SecretBox | None = None) -> None:
    store = await db.open()
    try:
        installs = db.installs(store, box)
        await installs.save_bot("cid", enterprise_id=None, team_id="T1", installed_at=1.0,
                                data={"bot_token": BOT_TOKEN, "bot_refresh_token": REFRESH,
                                      "team_id": "T1"})
        await installs.save_installation("cid", enterprise_id=None, team_id="T1", user_id="U1",
                                         installed_at=1.0,
                                         data={"bot_token": BOT_TOKEN, "user_token": USER_TOKEN})
    finally:
        await store.close()


async def _find_bot(db: Db, box: SecretBox | None = None) -> dict[str, Any] | None:
    store = await db.open()
    try:
        return await db.installs(store, box).find_bot("cid", enterprise_id=None, team_id="T1")
    finally:
        await store.close()


async def _cli(tmp: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    code, out, _ = await run(env, *args, cwd=tmp, within_s=60, merged=True)
    return code, out


async def test_tokens_are_not_in_the_raw_database_and_read_back(db: Db) -> None:
    await _save(db)
    store = await db.open()
    try:
        installs = db.installs(store)
        bot = await installs.find_bot("cid", enterprise_id=None, team_id="T1")
        inst = await installs.find_installation("cid", enterprise_id=None, team_id="T1")
    finally:
        await store.close()
    raw = await db.raw()
    assert bot is not None and bot["bot_token"] == BOT_TOKEN
    assert bot["bot_refresh_token"] == REFRESH
    assert inst is not None and inst["user_token"] == USER_TOKEN
    for secret in (BOT_TOKEN, REFRESH, USER_TOKEN, "xoxb-", "xoxp-"):
        assert secret.encode() not in raw, secret
    assert b"fernet:" in raw
    # No STORAGE_KEY: the key was generated next to DATABASE_PATH, private to its owner.
    key_file = key_file_for(db.path)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().strip() not in raw


async def test_generated_link_secret_is_sealed_and_survives_a_restart(db: Db) -> None:
    settings = db.settings()
    async with build_services(settings) as services:
        token = services.links.token("s1", 2_000_000_000)
    async with build_services(settings) as services:
        assert services.links.verify(token, now=0) is not None, "links must survive a restart"
    stored = await db.meta("link_secret")
    assert stored is not None and stored.startswith("fernet:")
    secret = SecretBox.from_settings(None, db.path).open(stored)
    assert len(secret) == 64 and secret.encode() not in await db.raw()


async def test_plain_rows_from_before_are_read_and_sealed_by_rotate(db: Db) -> None:
    await db.write_plain(bot={"bot_token": BOT_TOKEN}, link_secret="ab" * 32)
    assert await _find_bot(db) == {"bot_token": BOT_TOKEN}
    key = Fernet.generate_key().decode()
    code, out = await _cli(db.path.parent, db.env(STORAGE_KEY=key), "secrets", "rotate")
    assert code == 0, out
    assert "re-encrypted 2 stored credential(s)" in out
    raw = await db.raw()
    assert BOT_TOKEN.encode() not in raw and b"ab" * 32 not in raw
    box = SecretBox([key.encode()], key_file=key_file_for(db.path), source="STORAGE_KEY")
    assert await _find_bot(db, box) == {"bot_token": BOT_TOKEN}


async def test_rotate_moves_to_the_new_key_and_the_old_key_can_go(db: Db) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    await _save(db, SecretBox([old], key_file=key_file_for(db.path), source="STORAGE_KEY"))
    code, out = await _cli(db.path.parent, db.env(STORAGE_KEY=f"{new.decode()},{old.decode()}"),
                           "secrets", "rotate")
    assert code == 0, out
    assert "re-encrypted 2 stored credential(s)" in out and "remove the others" in out
    # The new key alone now opens everything; the old one alone opens nothing.
    bot = await _find_bot(db, SecretBox([new], key_file=key_file_for(db.path),
                                        source="STORAGE_KEY"))
    assert bot is not None and bot["bot_token"] == BOT_TOKEN
    with pytest.raises(WrongStorageKey):
        await _find_bot(db, SecretBox([old], key_file=key_file_for(db.path),
                                      source="STORAGE_KEY"))
    assert not key_file_for(db.path).exists(), "with STORAGE_KEY set no key file is made"
    code, out = await _cli(db.path.parent, db.env(STORAGE_KEY=new.decode()), "doctor")
    [line] = [row for row in out.splitlines() if " database " in row]
    assert line.startswith("ok"), out
    code, out = await _cli(db.path.parent, db.env(STORAGE_KEY=old.decode()), "doctor")
    [line] = [row for row in out.splitlines() if " database " in row]
    assert line.startswith("FAIL") and "cannot be decrypted with STORAGE_KEY" in line, out


async def test_rotate_with_the_key_file_replaces_the_key(db: Db) -> None:
    await _save(db)
    before = key_file_for(db.path).read_bytes()
    code, out = await _cli(db.path.parent, db.env(), "secrets", "rotate")
    assert code == 0, out
    after = key_file_for(db.path).read_bytes()
    assert after != before and len(after.split()) == 1, "the old key leaves the file"
    assert stat.S_IMODE(key_file_for(db.path).stat().st_mode) == 0o600
    bot = await _find_bot(db)
    assert bot is not None and bot["bot_token"] == BOT_TOKEN
    with pytest.raises(WrongStorageKey):
        await _find_bot(db, SecretBox([before.strip()], key_file=key_file_for(db.path),
                                      source="the old key"))


@pytest.mark.parametrize("command", [("run",), ("secrets", "rotate"), ("doctor",)],
                         ids=lambda c: c[0])
async def test_a_wrong_key_is_one_clear_error(db: Db, command: tuple[str, ...]) -> None:
    right = Fernet.generate_key()
    await _save(db, SecretBox([right], key_file=key_file_for(db.path), source="STORAGE_KEY"))
    wrong = Fernet.generate_key().decode()
    code, out = await _cli(db.path.parent, db.env(STORAGE_KEY=wrong), *command)
    assert code != 0, out
    assert "stored credentials cannot be decrypted with STORAGE_KEY" in out
    assert "Traceback" not in out and wrong not in out and right.decode() not in out
    assert BOT_TOKEN not in out


async def test_a_malformed_key_is_a_clear_error(tmp_path: Path) -> None:
    code, out = await _cli(tmp_path, Db("sqlite", tmp_path / "bot.db").env(STORAGE_KEY="not-a-key"),
                           "secrets", "rotate")
    assert code != 0 and "STORAGE_KEY: key 1 is not a Fernet key" in out, out
    assert "Traceback" not in out


async def test_plain_rows_are_sealed_when_the_server_starts(db: Db) -> None:
    await db.write_plain(installation={"bot_token": BOT_TOKEN, "user_token": USER_TOKEN})
    async with build_services(db.settings(secret_key="k" * 32)) as services:
        found = await services.slack_installs.find_installation(
            "cid", enterprise_id=None, team_id="T1", user_id="U1")
    assert found is not None and found["user_token"] == USER_TOKEN
    raw = await db.raw()
    assert BOT_TOKEN.encode() not in raw and USER_TOKEN.encode() not in raw
    assert b"fernet:" in raw
