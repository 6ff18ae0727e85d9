"""During database faults the playground answers a clear 503 JSON error, never a raw 500, and a
``say`` the avatar spoke is reported as done even when noting it in the database failed.

The fault is real: a second connection holds the SQLite file's write lock (``BEGIN EXCLUSIVE``),
as another process writing would, so the server's writes fail after SQLite's busy timeout
(5 s, ``PRAGMA busy_timeout`` in bot/storage/sqlite.py) while reads go on (WAL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.core.models import PLAYGROUND
from tests.web.conftest import has_local, page_socket, web_stack

pytestmark = pytest.mark.skipif(not has_local(), reason="the local avatar needs aiortc")


@contextmanager
def write_locked(db: Path) -> Iterator[None]:
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def test_a_say_the_avatar_spoke_is_not_reported_as_failed(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=(), local=True) as stack, \
            aiohttp.ClientSession() as client:
        record = await stack.start("local", tenant=str(PLAYGROUND), minutes=2)
        link = stack.link(record.id, role="host")
        token = link.split("/v/")[1]
        async with page_socket(client, link) as ps:
            await ps.next("hello")
            with write_locked(stack.store.path):
                async with client.post(f"{stack.url}/playground/{token}/say",
                                       json={"text": "Spoken while the file was locked."}
                                       ) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                    assert body == {"ok": True}
            seen = []
            while not any(m["speaker"] == "avatar" for m in seen):
                seen.append(await ps.next("transcript", wait=15))
            spoken = [m["text"] for m in seen if m["speaker"] == "avatar"]
            assert "Spoken while the file was locked." in " ".join(spoken)
        assert await stack.store.verify() == []


async def test_a_start_during_a_database_fault_is_a_clear_503(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=(), local=True) as stack, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        async with client.get(f"{stack.url}/") as resp:
            assert resp.status == 200
        before = await stack.store.balance(str(PLAYGROUND))
        with write_locked(stack.store.path):
            async with client.post(f"{stack.url}/playground/start", json={}) as resp:
                assert resp.status == 503
                assert resp.content_type == "application/json"
                assert resp.headers["Retry-After"] == "5"
                error = (await resp.json())["error"]
        assert "briefly unavailable" in error and "nothing was changed" in error
        assert str(stack.store.path) not in error and "sqlite" not in error.lower()
        # Nothing was half-done: the credits are as they were, and the next try works.
        assert await stack.store.balance(str(PLAYGROUND)) == before
        assert await stack.store.verify() == []
        async with client.post(f"{stack.url}/playground/start", json={}) as resp:
            assert resp.status == 200, await resp.text()
