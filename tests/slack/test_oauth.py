"""Multi-workspace mode: the OAuth install flow against the fake oauth.v2.access, uninstalls."""

from __future__ import annotations

import logging
import re
import urllib.parse

import pytest

from bot.core.errors import NotAllowed
from bot.core.models import SessionState
from bot.core.service import StartCommand
from tests.slack.conftest import eventually

CLIENT_ID = "1234.5678"
CLIENT_SECRET = "client-secret-abc"
TEAM2, TOKEN2 = "T2", "xoxb-2-team-two"


@pytest.fixture
async def multi(make_slack, fake_slack):
    fake_slack.client_credentials = (CLIENT_ID, CLIENT_SECRET)
    return await make_slack(slack_bot_token=None, slack_client_id=CLIENT_ID,
                            slack_client_secret=CLIENT_SECRET)


async def begin_install(slack) -> tuple[str, str]:
    """GET /slack/install: the state in the authorize URL and in the browser cookie."""
    async with slack.http.get(slack.url + "/slack/install") as resp:
        assert resp.status == 200
        html = await resp.text()
        cookie = resp.headers["Set-Cookie"]
    url = re.search(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"', html).group(1)
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url.replace("&amp;", "&")).query)
    assert query["client_id"] == [CLIENT_ID]
    assert "commands" in query["scope"][0].split(",")
    state = query["state"][0]
    assert f"slack-app-oauth-state={state}" in cookie
    return state, cookie.split(";")[0]


async def finish_install(slack, state: str, cookie: str | None, code: str = "code-1"):
    headers = {"Cookie": cookie} if cookie else {}
    query = urllib.parse.urlencode({"code": code, "state": state})
    async with slack.http.get(f"{slack.url}/slack/oauth_redirect?{query}",
                              headers=headers) as resp:
        return resp.status, await resp.text()


async def install(slack) -> None:
    slack.fake.add_oauth_code("code-1", TEAM2, TOKEN2, installer="U20")
    state, cookie = await begin_install(slack)
    status, _ = await finish_install(slack, state, cookie)
    assert status == 200


async def test_install_flow_then_commands_use_the_new_token(multi):
    fake, store = multi.fake, multi.stack.store
    # not installed yet: the workspace is refused
    status, _ = await multi.command("credits", team=TEAM2)
    assert status == 401

    await install(multi)
    (access,) = fake.called("oauth.v2.access")
    assert access.params["code"] == "code-1"
    assert [c.token for c in fake.called("auth.test")] == [TOKEN2]
    bot = await multi.adapter.installations.async_find_bot(
        enterprise_id=None, team_id=TEAM2)
    assert bot.bot_token == TOKEN2 and bot.bot_id == "BBT2"
    assert await store.tenant_exists(f"slack:{TEAM2}")

    await store.grant(f"slack:{TEAM2}", 100, "test")
    status, _ = await multi.command("start Bob", team=TEAM2, channel="C2")
    assert status == 200
    (post,) = await fake.wait_for("chat.postMessage")
    assert post.token == TOKEN2 and post.params["channel"] == "C2"
    assert "*Bob*" in post.params["blocks"][0]["text"]["text"]


async def test_state_is_single_use_and_bound_to_the_browser(multi):
    multi.fake.add_oauth_code("code-1", TEAM2, TOKEN2, installer="U20")
    state, cookie = await begin_install(multi)
    status, _ = await finish_install(multi, state, None)
    assert status == 400  # no cookie: another browser
    status, _ = await finish_install(multi, "forged-state", "slack-app-oauth-state=forged-state")
    assert status == 401
    assert multi.fake.called("oauth.v2.access") == []
    status, _ = await finish_install(multi, state, cookie)
    assert status == 200
    status, _ = await finish_install(multi, state, cookie)
    assert status == 401  # used up
    assert len(multi.fake.called("oauth.v2.access")) == 1


async def test_bad_code_installs_nothing(multi):
    state, cookie = await begin_install(multi)
    status, _ = await finish_install(multi, state, cookie, code="wrong")
    assert status == 401
    assert not await multi.stack.store.tenant_exists(f"slack:{TEAM2}")


@pytest.mark.parametrize("event", [
    {"type": "app_uninstalled"},
    {"type": "tokens_revoked", "tokens": {"bot": ["UBT2"]}},
])
async def test_uninstall_ends_sessions_and_refuses_the_workspace(multi, event):
    fake, store, provider = multi.fake, multi.stack.store, multi.stack.provider
    await install(multi)
    await store.grant(f"slack:{TEAM2}", 100, "test")
    await multi.command("start", team=TEAM2, channel="C2")
    (post,) = await fake.wait_for("chat.postMessage")
    session_id = post.params["blocks"][1]["elements"][1]["value"]

    fake.revoked.add(TOKEN2)  # Slack has already revoked the token when it tells us
    status, _ = await multi.event(event, team=TEAM2)
    assert status == 200

    async def ended() -> bool:
        return (await store.get_session(session_id)).state is SessionState.ENDED

    await eventually(ended)
    assert provider.called("stop")
    assert (await store.balance(f"slack:{TEAM2}")).pending == 0
    assert await store.verify() == []
    assert await multi.adapter.installations.async_find_bot(
        enterprise_id=None, team_id=TEAM2) is None
    status, _ = await multi.command("start", team=TEAM2, channel="C2")
    assert status == 401
    # the tenant is inactive: the core refuses it too, whatever path a start would take
    with pytest.raises(NotAllowed):
        await multi.stack.service.start(StartCommand(tenant=f"slack:{TEAM2}", user="U20"))

    # installing again brings the workspace back, with its credits
    fake.revoked.discard(TOKEN2)
    fake.add_oauth_code("code-2", TEAM2, TOKEN2, installer="U20")
    state, cookie = await begin_install(multi)
    assert (await finish_install(multi, state, cookie, code="code-2"))[0] == 200
    await multi.command("start", team=TEAM2, channel="C2")

    async def anchored() -> bool:
        anchors = [c for c in fake.called("chat.postMessage") if c.params.get("blocks")]
        return len(anchors) == 2 and anchors[1].result["ok"]

    await eventually(anchored)
    assert len(await store.open_sessions()) == 1


async def test_single_workspace_uninstall_then_restart_with_a_new_token(make_slack, fake_slack):
    from tests.slack.conftest import TEAM

    slack = await make_slack()
    store = slack.stack.store
    await store.grant(f"slack:{TEAM}", 100, "test")
    await slack.command("start")
    await fake_slack.wait_for("chat.postMessage")
    status, _ = await slack.event({"type": "app_uninstalled"})
    assert status == 200

    async def all_ended() -> bool:
        return await store.open_sessions() == []

    await eventually(all_ended)
    with pytest.raises(NotAllowed, match="removed from this server or workspace"):
        await slack.stack.service.start(StartCommand(tenant=f"slack:{TEAM}", user="U1"))

    # reinstalled: the operator restarts with the new token; the first request reactivates
    fake_slack.add_workspace(TEAM, "xoxb-1-new", channels=("C1",))
    again = await make_slack(slack_bot_token="xoxb-1-new")
    await again.command("start")

    async def anchored() -> bool:
        return any(c.token == "xoxb-1-new" and c.result["ok"]
                   for c in fake_slack.called("chat.postMessage"))

    await eventually(anchored)
    assert (await store.balance(f"slack:{TEAM}")).pending > 0


async def test_events_nobody_listens_for_are_acknowledged(slack):
    status, _ = await slack.event({"type": "reaction_added", "user": "U1", "reaction": "tada",
                                   "item": {"type": "message", "channel": "C1", "ts": "1.0"}})
    assert status == 200
    assert slack.stack.provider.calls == []


async def test_in_many_workspaces_only_the_operator_grants_credits(make_slack, fake_slack):
    fake_slack.client_credentials = (CLIENT_ID, CLIENT_SECRET)
    multi = await make_slack(slack_bot_token=None, slack_client_id=CLIENT_ID,
                             slack_client_secret=CLIENT_SECRET, slack_admin_user_ids="UOP")
    await install(multi)
    fake_slack.add_user("U2ADMIN", admin=True)
    fake_slack.add_user("UOP")

    async def answer(user: str, text: str) -> str:
        before = len(fake_slack.responses)
        await multi.command(text, team=TEAM2, user=user)
        return (await fake_slack.wait_for_response(before + 1))[before]["text"]

    assert "Only the bot's operator grants credits" in await answer("U2ADMIN", "admin grant 1000")
    assert "max_concurrent=" in await answer("U2ADMIN", "admin limits")  # other admin commands
    assert "Granted 1000 credits" in await answer("UOP", "admin grant 1000")
    assert (await multi.stack.store.balance(f"slack:{TEAM2}")).granted == 1000


async def test_no_token_or_secret_reaches_the_logs_even_at_debug(multi, caplog):
    caplog.set_level(logging.DEBUG)
    await install(multi)
    await multi.stack.store.grant(f"slack:{TEAM2}", 100, "test")
    await multi.command("start", team=TEAM2, channel="C2")
    await multi.fake.wait_for("chat.postMessage")
    from tests.slack.conftest import SECRET
    for secret in (TOKEN2, CLIENT_SECRET, SECRET):
        leaks = [r.name for r in caplog.records if secret in r.getMessage()]
        assert leaks == [], secret


async def test_a_start_during_the_uninstall_is_refused_not_left_running(slack):
    """While the uninstall is still stopping earlier sessions, a new start must not slip in."""
    from tests.slack.conftest import TEAM

    store, service, provider = slack.stack.store, slack.stack.service, slack.stack.provider
    tenant = f"slack:{TEAM}"
    await store.grant(tenant, 100, "test")
    await slack.command("start")
    await slack.fake.wait_for("chat.postMessage")
    (first,) = await store.open_sessions()
    provider.stop_delay = 0.5  # the vendor takes a while to stop the first session
    status, _ = await slack.event({"type": "app_uninstalled"})
    assert status == 200

    async def stopping() -> bool:
        return (await store.get_session(first.id)).state is SessionState.ENDING

    await eventually(stopping)
    with pytest.raises(NotAllowed, match="removed from this server or workspace"):
        await service.start(StartCommand(tenant=tenant, user="U1"))

    async def all_ended() -> bool:
        return await store.open_sessions() == []

    await eventually(all_ended)
    assert provider.open == {}, "a vendor session outlived the uninstall"
    assert await store.verify() == []
