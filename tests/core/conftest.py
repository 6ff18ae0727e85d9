from __future__ import annotations

import pytest

from bot.core.events import EventHub
from bot.core.service import SessionService, StartCommand
from tests.backends import BACKENDS, open_store
from tests.fakes.provider import FakeProvider

TENANT = "discord:100"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def store_location(backend, tmp_path, request):
    """Where the test's store lives: a new SQLite file, or this run's PostgreSQL database."""
    if backend == "sqlite":
        return tmp_path / "core.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def store(backend, store_location):
    s = await open_store(backend, store_location)
    yield s
    await s.close()


@pytest.fixture
def hub():
    return EventHub()


@pytest.fixture
def fake(hub):
    return FakeProvider(hub)


@pytest.fixture
def service(store, hub, fake):
    return SessionService(store=store, providers={"fake": fake}, events=hub, start_timeout_s=2.0,
                          stop_timeout_s=2.0)


def cmd(**kw) -> StartCommand:
    base = {"tenant": TENANT, "user": "u1", "provider": "fake", "minutes": 10}
    return StartCommand(**(base | kw))
