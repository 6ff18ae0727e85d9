"""slack-bolt's store interfaces on our database (SQLite and PostgreSQL): installs, users, states,
event ids."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from slack_sdk.oauth.installation_store import Installation

from bot.core.ports import SessionStore, SlackInstallStore
from bot.platforms.slack.installation_store import SlackInstallationStore, SlackOAuthStateStore
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
