"""slack-bolt's store interfaces on our database (SQLite and PostgreSQL): installs, users, states,
event ids."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from slack_sdk.oauth.installation_store import Installation

from bot.core.ports import SessionStore, SlackInstallStore
from bot.platforms.slack.installation_store import SlackInstallationStore, SlackOAuthStateStore
from bot.storage import SqliteSlackInstallStore
from tests.backends import BACKENDS, installs_for, open_store


@dataclass
class Db:
    store: SessionStore
    installs: SlackInstallStore


@pytest.fixture(params=BACKENDS)
def where(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite", tmp_path / "t.db"
    return "postgres", request.getfixturevalue("pg_url")


@pytest.fixture
async def stack(where):
    """The session store and the Slack install store on one database, of each backend."""
    store = await open_store(*where)
    yield Db(store, installs_for(store))
    await store.close()


def installation(user: str, token: str, at: float) -> Installation:
    return Installation(app_id="A1", team_id="T9", team_name="Nine", user_id=user,
                        bot_token=token, bot_id="B9", bot_user_id="UB9", bot_scopes="commands",
                        installed_at=at)


async def test_installations_per_user_and_latest(stack):
    store = SlackInstallationStore(stack.installs, client_id="c1")
    await store.async_save(installation("U1", "xoxb-old", time.time() - 60))
    await store.async_save(installation("U2", "xoxb-new", time.time()))
    latest = await store.async_find_installation(enterprise_id=None, team_id="T9")
    assert latest.user_id == "U2"
    mine = await store.async_find_installation(enterprise_id=None, team_id="T9", user_id="U1")
    assert mine.user_id == "U1" and mine.bot_token == "xoxb-new"  # the newest bot token wins
    other_app = SlackInstallationStore(stack.installs, client_id="c2")
    assert await other_app.async_find_bot(enterprise_id=None, team_id="T9") is None
    assert await stack.store.tenant_exists("slack:T9")

    await store.async_delete_installation(enterprise_id=None, team_id="T9", user_id="U1")
    assert await store.async_find_installation(enterprise_id=None, team_id="T9",
                                               user_id="U1") is None
    await store.async_delete_all(enterprise_id=None, team_id="T9")
    assert await store.async_find_installation(enterprise_id=None, team_id="T9") is None
    assert await store.async_find_bot(enterprise_id=None, team_id="T9") is None


async def test_states_are_single_use_and_expire(stack):
    states = SlackOAuthStateStore(stack.installs, expiration_seconds=600)
    state = await states.async_issue()
    assert await states.async_consume(state) is True
    assert await states.async_consume(state) is False
    assert await states.async_consume("") is False
    expired = SlackOAuthStateStore(stack.installs, expiration_seconds=-1)
    assert await expired.async_consume(await expired.async_issue()) is False


async def test_event_ids_are_remembered_once(stack):
    assert await stack.installs.remember_event("Ev1", "T1") is True
    assert await stack.installs.remember_event("Ev1", "T1") is False
    assert await stack.installs.remember_event("Ev2", "T1") is True


async def test_an_org_wide_install_is_found_by_its_enterprise_for_any_team(stack):
    # slack-sdk saves an Enterprise Grid org-wide install with no team id and asks for it with
    # is_enterprise_install=True and the team the request came from.
    await stack.installs.save_bot("c1", enterprise_id="E1", team_id=None,
                                  data={"bot_token": "xoxb-org"}, installed_at=1.0)
    found = await stack.installs.find_bot("c1", enterprise_id="E1", team_id="T5",
                                          is_enterprise_install=True)
    assert found == {"bot_token": "xoxb-org"}
    assert await stack.installs.find_bot("c1", enterprise_id="E1", team_id="T5") is None
    assert await stack.installs.find_bot("c1", enterprise_id=None, team_id=None) is None


async def test_a_redelivered_event_is_dropped_after_a_restart(where):
    """SQLite holds ids in memory but they reach the table (batched, and at aclose);
    PostgreSQL stores each as it arrives. Either way a new process knows them."""
    backend, location = where
    store = await open_store(backend, location)
    installs = installs_for(store)
    assert await installs.remember_event("EvA", "T1") is True
    assert await installs.remember_event("EvB", "T1") is True
    if isinstance(installs, SqliteSlackInstallStore):
        await installs.flush_events()  # a batch written while running
    assert await installs.remember_event("EvC", "T1") is True  # SQLite: in memory until aclose
    await installs.aclose()
    await store.close()
    store = await open_store(backend, location, fresh=False)
    try:
        again = installs_for(store)
        for event_id in ("EvA", "EvB", "EvC"):
            assert await again.remember_event(event_id, "T1") is False, event_id
        assert await again.remember_event("EvD", "T1") is True
        await again.aclose()
    finally:
        await store.close()


async def test_a_redelivery_to_another_postgres_worker_is_dropped_at_once(pg_url):
    """Slack may redeliver to any worker: on PostgreSQL the id is in the shared table as soon
    as the first worker has answered, with no batch or close in between."""
    first = await open_store("postgres", pg_url)
    second = await open_store("postgres", pg_url, fresh=False)
    try:
        assert await installs_for(first).remember_event("EvX", "T1") is True
        assert await installs_for(second).remember_event("EvX", "T1") is False
        assert await installs_for(second).remember_event("EvY", "T1") is True
        assert await installs_for(first).remember_event("EvY", "T1") is False
    finally:
        await second.close()
        await first.close()


async def test_a_found_bot_is_remembered_briefly_and_forgotten_at_once_when_changed_here(stack):
    """The gate reads the bot on every request: from memory, within its bound of staleness."""
    here = SlackInstallationStore(stack.installs, client_id="c1", remember_s=0.3)
    elsewhere = SlackInstallationStore(stack.installs, client_id="c1")  # another worker
    # Not installed yet: a miss is not remembered, so an install made elsewhere is seen at once.
    assert await here.async_find_bot(enterprise_id=None, team_id="T9") is None
    await elsewhere.async_save(installation("U1", "xoxb-1", time.time()))
    assert (await here.async_find_bot(enterprise_id=None, team_id="T9")).bot_token == "xoxb-1"
    # A reinstall elsewhere: this worker answers from memory until its bound, then reads again.
    await elsewhere.async_save(installation("U1", "xoxb-2", time.time()))
    assert (await here.async_find_bot(enterprise_id=None, team_id="T9")).bot_token == "xoxb-1"
    await asyncio.sleep(0.35)
    assert (await here.async_find_bot(enterprise_id=None, team_id="T9")).bot_token == "xoxb-2"
    # An uninstall handled here is seen here at once.
    await here.async_delete_all(enterprise_id=None, team_id="T9")
    assert await here.async_find_bot(enterprise_id=None, team_id="T9") is None
