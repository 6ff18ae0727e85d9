"""Fixtures shared by every test folder: the PostgreSQL database of this test run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from tests.backends import create_database, drop_database, unreachable


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of this run's own on the test server, dropped at the end of the run."""
    try:
        url = asyncio.run(create_database())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        unreachable(exc)
    yield url
    asyncio.run(drop_database(url))
