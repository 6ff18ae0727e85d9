"""Credentials at rest: what the database keeps that would let someone act as us is encrypted.

Slack installations (bot and user tokens, refresh tokens) and the generated viewer-link secret
are sealed with Fernet (``cryptography``: AES-128-CBC + HMAC-SHA256, with a timestamp) before they
are written, so a copy of the database file (a backup, a stray ``scp``) gives nothing away
without the key. See docs/secrets.md.

The key comes from ``STORAGE_KEY`` (one or more Fernet keys, comma-separated, the first one
writes, every one reads: that is ``MultiFernet``'s rotation model). Without it, a key is
generated on first use into ``<database>.key`` (mode 0600), next to the database but a separate
file, so that the database alone is not enough; the banner and ``doctor`` say which it is.

A value is stored as ``fernet:<token>``. A value without that prefix was written before
encryption existed: it is read as it is and sealed at the next start or ``secrets rotate``.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bot.core.errors import ConfigError
from bot.core.ports import CredentialBox

log = logging.getLogger(__name__)

PREFIX = "fernet:"
KEY_FILE_MODE = 0o600
# A known value sealed with the current key: a wrong key is found at startup, not at the first
# Slack request that needs a token.
CHECK_KEY = "storage_key_check"
CHECK_VALUE = "avatarbot"
LINK_SECRET_KEY = "link_secret"


class WrongStorageKey(ConfigError):
    """A stored credential cannot be opened with the configured key(s)."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"The database's stored credentials cannot be decrypted with {source}. Use the key "
            "they were written with; to change keys, list the new key first and the old one "
            "after it in STORAGE_KEY, run `avatarbot secrets rotate`, then drop the old key."
        )


def key_file_for(database_path: Path) -> Path:
    """Where the generated key lives when ``STORAGE_KEY`` is unset."""
    return database_path.with_name(database_path.name + ".key")


def parse_keys(text: str, source: str) -> list[bytes]:
    """Fernet keys from comma- or newline-separated text; a clear error for a malformed one."""
    keys = [part.strip().encode() for part in text.replace("\n", ",").split(",") if part.strip()]
    if not keys:
        raise ConfigError(f"{source} holds no key.")
    for i, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{source}: key {i} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "`avatarbot secrets generate` prints one)."
            ) from None
    return keys


def _write_tmp(path: Path, keys: list[bytes]) -> Path:
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        os.write(fd, b"\n".join(keys) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Write ``keys`` (first = current) to ``path``, mode 0600, replacing it atomically."""
    os.replace(_write_tmp(path, keys), path)


def create_key_file(path: Path) -> bool:
    """Create ``path`` with a new key unless it exists; False when another process was first.

    The file appears complete or not at all (``link`` of a written file fails if the name
    exists), so two processes starting at once end up with the same key.
    """
    tmp = _write_tmp(path, [Fernet.generate_key()])
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


class SecretBox:
    """Seals and opens stored credentials.

    Args:
        keys: Fernet keys, the first one seals; ``None`` means "the key file", read or created
            on first use.
        key_file: the key file (used when ``keys`` is None).
        source: how the key is named in messages (``STORAGE_KEY`` or the file's path).
    """

    def __init__(self, keys: list[bytes] | None, *, key_file: Path, source: str) -> None:
        self._keys = keys
        self.key_file = key_file
        self.source = source
        self._fernet: MultiFernet | None = None

    @classmethod
    def from_settings(cls, storage_key: str | None, database_path: Path) -> SecretBox:
        """The box of a deployment: ``STORAGE_KEY`` if set, else the key file of the database."""
        key_file = key_file_for(Path(database_path))
        if storage_key:
            return cls(parse_keys(storage_key, "STORAGE_KEY"), key_file=key_file,
                       source="STORAGE_KEY")
        return cls(None, key_file=key_file, source=f"the key file {key_file}")

    @property
    def from_file(self) -> bool:
        """Whether the key is the generated key file rather than ``STORAGE_KEY``."""
        return self._keys is None

    def has_key(self) -> bool:
        """Whether a key exists yet (``STORAGE_KEY`` set, or the key file written)."""
        return self._keys is not None or self.key_file.exists()

    def keys(self, *, create: bool) -> list[bytes]:
        """The keys, reading the key file (or creating it when ``create``)."""
        if self._keys is not None:
            return self._keys
        try:
            return parse_keys(self.key_file.read_text(), str(self.key_file))
        except FileNotFoundError:
            if not create:
                raise ConfigError(
                    f"The database holds encrypted credentials but {self.key_file} is missing "
                    "and STORAGE_KEY is not set."
                ) from None
        if create_key_file(self.key_file):
            log.warning("generated a storage key in %s (mode 0600): back it up with the "
                        "database", self.key_file)
        return parse_keys(self.key_file.read_text(), str(self.key_file))

    def _multi(self, *, create: bool) -> MultiFernet:
        if self._fernet is None:
            self._fernet = MultiFernet([Fernet(k) for k in self.keys(create=create)])
        return self._fernet

    def reload(self, keys: list[bytes] | None = None) -> None:
        """Forget the loaded keys (after the key file changed) or use ``keys`` from now on."""
        if keys is not None:
            self._keys = keys
        self._fernet = None

    def seal(self, plain: str) -> str:
        """``fernet:<token>`` of ``plain`` under the current (first) key."""
        return PREFIX + self._multi(create=True).encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        """The plain value of a stored one; an unprefixed (older, plain) value is returned as is.

        Raises:
            WrongStorageKey: no configured key opens it.
        """
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._multi(create=False).decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise WrongStorageKey(self.source) from None

    def reseal(self, stored: str) -> str:
        """``stored`` sealed under the current key (plain values get sealed too)."""
        if not stored.startswith(PREFIX):
            return self.seal(stored)
        try:
            token = self._multi(create=False).rotate(stored[len(PREFIX):].encode())
        except InvalidToken:
            raise WrongStorageKey(self.source) from None
        return PREFIX + token.decode()


# ---------------------------------------------------------------------------- on the database
# The SQLite bodies of ``SqliteStore``'s ``SecretsStore`` methods (bot/core/ports.py); the
# PostgreSQL ones are in bot/storage/postgres.py.
# (table, sealed column) of every stored credential besides the meta table's link secret.
SEALED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("slack_bots", "data"),
    ("slack_installations", "data"),
)


def check_key(conn: sqlite3.Connection, box: CredentialBox) -> None:
    """Open the check value if there is one; write it if a key exists and there is none.

    Raises:
        WrongStorageKey: the configured key is not the one the database was sealed with.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (CHECK_KEY,)).fetchone()
    if row is not None:
        if box.open(row[0]) != CHECK_VALUE:
            raise WrongStorageKey(box.source)
    elif box.has_key():
        conn.execute("INSERT INTO meta VALUES (?, ?)", (CHECK_KEY, box.seal(CHECK_VALUE)))


def mark_key(conn: sqlite3.Connection, box: CredentialBox) -> None:
    """Record the check value for the key that just sealed something (first use)."""
    conn.execute(
        "INSERT OR IGNORE INTO meta VALUES (?, ?)", (CHECK_KEY, box.seal(CHECK_VALUE))
    )


def link_secret(conn: sqlite3.Connection, box: CredentialBox, fresh: str) -> str:
    """The stored viewer-link secret, storing ``fresh`` (sealed) if there is none.

    A plain one written before encryption existed is sealed in place.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (LINK_SECRET_KEY,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES (?, ?)", (LINK_SECRET_KEY, box.seal(fresh)))
        mark_key(conn, box)
        return fresh
    plain = box.open(row[0])
    if not row[0].startswith(PREFIX):
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (box.seal(plain), LINK_SECRET_KEY))
        mark_key(conn, box)
    return plain


def seal_plain(conn: sqlite3.Connection, box: CredentialBox) -> int:
    """Seal the credentials still stored in plain text (written before encryption existed).

    Run at startup, so such rows do not wait for a ``secrets rotate``; the number sealed.
    """
    count = 0
    for table, column in SEALED_COLUMNS:
        rows = conn.execute(
            f"SELECT rowid, {column} FROM {table} WHERE {column} NOT LIKE ?", (PREFIX + "%",)
        ).fetchall()
        for rowid, value in rows:
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                         (box.seal(value), rowid))
            count += 1
    if count:
        mark_key(conn, box)
    return count


def reseal_all(conn: sqlite3.Connection, box: CredentialBox) -> int:
    """Seal every stored credential again under the current key; the number of values."""
    count = 0
    for table, column in SEALED_COLUMNS:
        rows = conn.execute(f"SELECT rowid, {column} FROM {table}").fetchall()
        for rowid, value in rows:
            conn.execute(
                f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                (box.reseal(value), rowid),
            )
            count += 1
    for key in (LINK_SECRET_KEY, CHECK_KEY):
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (box.reseal(row[0]), key))
            count += key == LINK_SECRET_KEY
    if conn.execute("SELECT 1 FROM meta WHERE key = ?", (CHECK_KEY,)).fetchone() is None:
        mark_key(conn, box)
    return count


__all__ = [
    "PREFIX", "SEALED_COLUMNS", "SecretBox", "WrongStorageKey", "check_key", "create_key_file",
    "key_file_for", "link_secret", "parse_keys", "reseal_all", "seal_plain", "write_key_file",
]
