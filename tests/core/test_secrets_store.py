"""The ``SecretsStore`` port on both backends: the key check, sealing plain rows, the link secret
and resealing behave the same on SQLite and PostgreSQL (docs/secrets.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.storage.postgres import PostgresStore
from bot.storage.secrets import PREFIX, SecretBox, WrongStorageKey
from tests.backends import installs_for, open_store, run_sql

BOT = {"bot_token": "xoxb-42-contract", "team_id": "T1"}


def _box(*keys: bytes) -> SecretBox:
    return SecretBox(list(keys), key_file=Path("/nonexistent/avatarbot.key"), source="STORAGE_KEY")


async def test_the_link_secret_is_made_once_and_opens_only_with_its_key(store):
    key = Fernet.generate_key()
    first = await store.link_secret(_box(key), "a" * 64)
    again = await store.link_secret(_box(key), "b" * 64)
    assert first == again == "a" * 64, "a second start must keep the links it signed valid"
    await store.check_storage_key(_box(key))
    with pytest.raises(WrongStorageKey, match="cannot be decrypted with STORAGE_KEY"):
        await store.check_storage_key(_box(Fernet.generate_key()))
    with pytest.raises(WrongStorageKey):
        await store.link_secret(_box(Fernet.generate_key()), "c" * 64)


async def test_plain_rows_are_sealed_once_and_still_read(store):
    key = Fernet.generate_key()
    # A row as a version before sealing wrote it: the installation JSON itself.
    data = '{"bot_token": "xoxb-42-contract", "team_id": "T1"}'
    if isinstance(store, PostgresStore):  # the pool's codec writes a dict as a JSON object
        await run_sql(store, "INSERT INTO slack_bots VALUES ('cid', '', 'T1', ?, now())", BOT)
    else:
        await run_sql(store, "INSERT INTO slack_bots VALUES ('cid', '', 'T1', ?, 1.0)", data)
    await run_sql(store, "INSERT INTO meta VALUES ('link_secret', ?)", "d" * 64)
    installs = installs_for(store, _box(key))
    assert await installs.find_bot("cid", enterprise_id=None, team_id="T1") == BOT

    assert await store.seal_plain_secrets(_box(key)) == 1
    assert await store.seal_plain_secrets(_box(key)) == 0, "sealed rows are left alone"
    assert await store.link_secret(_box(key), "e" * 64) == "d" * 64, "the old secret is kept"
    assert await installs.find_bot("cid", enterprise_id=None, team_id="T1") == BOT
    assert (await store.get_meta("link_secret")).startswith(PREFIX)
    await store.check_storage_key(_box(key))  # the check value was written with the seal


async def test_reseal_moves_every_credential_to_the_first_key(store):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    await installs_for(store, _box(old)).save_bot(
        "cid", enterprise_id=None, team_id="T1", data=BOT, installed_at=1.0)
    await store.link_secret(_box(old), "f" * 64)

    assert await store.reseal_secrets(_box(new, old)) == 2  # the bot row and the link secret

    await store.check_storage_key(_box(new))
    assert await store.link_secret(_box(new), "g" * 64) == "f" * 64
    assert await installs_for(store, _box(new)).find_bot(
        "cid", enterprise_id=None, team_id="T1") == BOT
    with pytest.raises(WrongStorageKey):
        await store.check_storage_key(_box(old))


async def test_workers_starting_together_agree_on_one_link_secret(pg_url):
    """Three PostgreSQL workers (their own pools) make the secret at once: one wins, all agree."""
    key = Fernet.generate_key()
    first = await open_store("postgres", pg_url)
    rest = [await open_store("postgres", pg_url, fresh=False) for _ in range(2)]
    try:
        got = await asyncio.gather(*(
            s.link_secret(_box(key), str(i) * 64) for i, s in enumerate([first, *rest])
        ))
        checks = await asyncio.gather(*(s.check_storage_key(_box(key)) for s in rest))
    finally:
        for s in (first, *rest):
            await s.close()
    assert len(set(got)) == 1, got
    assert checks == [None, None]
