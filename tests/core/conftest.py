from __future__ import annotations

import pytest

from bot.core.events import EventHub
from bot.core.service import SessionService, StartCommand
from bot.storage import SqliteStore
from tests.fakes.provider import FakeProvider

TENANT = "discord:100"


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(tmp_path / "core.db")
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
