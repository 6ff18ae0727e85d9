"""Enterprise Grid and Slack Connect, fed the payload shapes Slack publishes.

The installs go through the real OAuth flow, with the fake's ``oauth.v2.access`` answering in the
published Grid-workspace and org-wide shapes (``tests/fixtures/slack``). The avatar's lines,
warnings and the end summary must reach the thread, posted with the install's own token, and
the anchor's buttons must be removed. A Slack Connect event that names the other organisation's
installation must still reach the session that owns the thread.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from bot.core.events import Warning
from bot.core.models import SessionState
from tests.slack.conftest import eventually, sign
from tests.slack.test_oauth import CLIENT_ID, CLIENT_SECRET, begin_install, finish_install

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slack"
# The ids of the published Grid example (oauth_v2_access_grid_workspace.json).
GRID_ORG, GRID_TEAM = "E12345678", "T9TK3CUKW"
GRID_TOKEN = "xoxb-grid-workspace"
# The org-wide example (oauth_v2_access_org_install.json) names only its org; its workspace
# here is one of that org's.
ORG, ORG_TEAM, ORG_TOKEN = "E1XXX", "T0ORGWS01", "xoxb-org-wide"


@pytest.fixture
async def multi(make_slack, fake_slack):
    fake_slack.client_credentials = (CLIENT_ID, CLIENT_SECRET)
    return await make_slack(slack_bot_token=None, slack_client_id=CLIENT_ID,
                            slack_client_secret=CLIENT_SECRET)


async def install(slack, code: str, team: str | None, token: str, *,
                  enterprise: str | None) -> None:
    slack.fake.add_oauth_code(code, team, token, installer="U1234", enterprise_id=enterprise)
    state, cookie = await begin_install(slack)
    status, body = await finish_install(slack, state, cookie, code=code)
    assert status == 200, body


def anchor_of(fake, token: str) -> Any:
    anchors = [c for c in fake.called("chat.postMessage")
               if c.params.get("blocks") and c.token == token and c.result["ok"]]
    return anchors[0] if anchors else None


def in_thread(fake, ts: str) -> list[Any]:
    return [c for c in fake.in_thread(ts) if c.result and c.result["ok"]]


@pytest.mark.parametrize(
    ("code", "installed_team", "org", "team", "token"),
    [
        pytest.param("code-grid", GRID_TEAM, GRID_ORG, GRID_TEAM, GRID_TOKEN, id="grid-workspace"),
        pytest.param("code-org", None, ORG, ORG_TEAM, ORG_TOKEN, id="org-wide"),
    ],
)
async def test_grid_install_then_the_avatar_speaks_in_the_thread(
    multi, code: str, installed_team: str | None, org: str, team: str, token: str
) -> None:
    fake, store, provider = multi.fake, multi.stack.store, multi.stack.provider
    await install(multi, code, installed_team, token, enterprise=org)
    bot = await multi.adapter.installations.async_find_bot(
        enterprise_id=org, team_id=installed_team, is_enterprise_install=installed_team is None)
    assert bot is not None and bot.bot_token == token
    org_wide = installed_team is None
    await store.grant(f"slack:{team}", 100, "test")

    status, _ = await multi.command("start Ava 5", team=team, channel="C9",
                                    enterprise=org, org_install=org_wide)
    assert status == 200
    await eventually(lambda: _true(anchor_of(fake, token)))
    anchor = anchor_of(fake, token)
    ts = anchor.result["ts"]
    sid = anchor.params["blocks"][1]["elements"][1]["value"]

    # a person asks in the thread (the event wrapper of a Grid workspace / an org-wide install)
    event = {"type": "message", "channel": "C9", "user": "W1", "text": "how are you?",
             "ts": "1800000000.000100", "thread_ts": ts, "team": team,
             "channel_type": "channel", "event_ts": "1800000000.000100"}
    body = multi.event_body(event, team=team, enterprise=org, org_install=org_wide)
    status, _ = await multi.post(body, "application/json")
    assert status == 200
    await eventually(lambda: _true(len(in_thread(fake, ts)) >= 1))
    multi.stack.hub.publish(Warning(session_id=sid, text="1 minute left", seconds_left=60))
    await eventually(lambda: _true(len(in_thread(fake, ts)) >= 2))

    status, _ = await multi.action("avatar_stop", sid, user="U1", team=team, channel="C9",
                                   message_ts=ts, enterprise=org, org_install=org_wide)
    assert status == 200
    (update,) = await fake.wait_for("chat.update")
    posts = in_thread(fake, ts)
    texts = [p.params["text"] for p in posts]
    assert provider.called("ask") == ["how are you?"]
    assert texts[0].startswith("*Ava:* You asked: how are you?")
    assert texts[1] == ":hourglass_flowing_sand: 1 minute left"
    assert "ended after" in texts[2]
    assert {p.token for p in posts} == {token} and update.token == token
    assert update.result["ok"] and update.params["ts"] == ts
    assert all(b["type"] != "actions" for b in update.params["blocks"])
    assert (await store.get_session(sid)).state is SessionState.ENDED
    assert await store.verify() == []


async def test_removing_an_org_wide_install_ends_its_sessions(multi):
    fake, store, provider = multi.fake, multi.stack.store, multi.stack.provider
    await install(multi, "code-org", None, ORG_TOKEN, enterprise=ORG)
    await store.grant(f"slack:{ORG_TEAM}", 100, "test")
    await multi.command("start Ava 5", team=ORG_TEAM, channel="C9", enterprise=ORG,
                        org_install=True)
    await eventually(lambda: _true(anchor_of(fake, ORG_TOKEN)))
    (record,) = await store.open_sessions()

    # app_uninstalled of the org-wide install: the one authorization names no team
    fake.revoked.add(ORG_TOKEN)
    body = multi.event_body({"type": "app_uninstalled"}, team=ORG_TEAM, enterprise=ORG,
                            org_install=True)
    status, _ = await multi.post(body, "application/json")
    assert status == 200

    async def ended() -> bool:
        return (await store.get_session(record.id)).state is SessionState.ENDED

    await eventually(ended)
    assert provider.called("stop")
    assert await multi.adapter.installations.async_find_bot(
        enterprise_id=ORG, team_id=None, is_enterprise_install=True) is None
    status, _ = await multi.command("credits", team=ORG_TEAM, enterprise=ORG, org_install=True)
    assert status == 401
    assert await store.verify() == []


async def _true(value: Any) -> bool:
    return bool(value)


def connect_event(thread_ts: str) -> str:
    payload = json.loads((FIXTURES / "event_message_slack_connect.json").read_text())
    payload["event"]["thread_ts"] = thread_ts
    return json.dumps(payload)


async def test_slack_connect_message_reaches_the_session_of_the_thread(multi):
    """Both organisations installed the app; Slack lists the other one's installation."""
    fake, store, provider = multi.fake, multi.stack.store, multi.stack.provider
    event = json.loads((FIXTURES / "event_message_slack_connect.json").read_text())
    org_a, team_a = event["enterprise_id"], event["team_id"]  # the sender's org owns the session
    team_b = event["authorizations"][0]["team_id"]  # the installation Slack listed
    channel = event["event"]["channel"]
    await install(multi, "code-a", team_a, "xoxb-org-a", enterprise=org_a)
    await install(multi, "code-b", team_b, "xoxb-org-b", enterprise=None)
    fake.add_user("W013QGS7BPF", display_name="Ines")
    await store.grant(f"slack:{team_a}", 100, "test")
    await multi.command("start Ava 5", team=team_a, channel=channel, enterprise=org_a)
    await eventually(lambda: _true(anchor_of(fake, "xoxb-org-a")))
    ts = anchor_of(fake, "xoxb-org-a").result["ts"]

    status, _ = await multi.post(connect_event(ts), "application/json")
    assert status == 200
    (reaction,) = await fake.wait_for("reactions.add")
    assert provider.called("ask") == ["Can the avatar say hello to Ines?"]
    # acknowledged as the session's own workspace's bot, in the session's channel
    assert reaction.token == "xoxb-org-a" and reaction.params["channel"] == channel
    assert [c.params["text"] for c in fake.called("chat.postEphemeral")
            if "such session" in c.params.get("text", "")] == []
    await eventually(lambda: _true(in_thread(fake, ts)))
    assert {p.token for p in in_thread(fake, ts)} == {"xoxb-org-a"}


async def test_slack_connect_message_in_a_thread_of_no_session_is_left_alone(multi):
    fake = multi.fake
    event = json.loads((FIXTURES / "event_message_slack_connect.json").read_text())
    await install(multi, "code-b", event["authorizations"][0]["team_id"], "xoxb-org-b",
                  enterprise=None)
    status, _ = await multi.post(connect_event("1678799000.000100"), "application/json")
    assert status == 200
    assert multi.stack.provider.calls == []
    assert fake.called("chat.postEphemeral") == [] and fake.called("reactions.add") == []


def escaped_say_form(fake, team: str, channel: str, user: str) -> str:
    """The published escaped ``/avatar say`` body, re-addressed to this test's workspace."""
    form = dict(urllib.parse.parse_qsl((FIXTURES / "slash_command_say_escaped.form").read_text()))
    form |= {"team_id": team, "channel_id": channel, "user_id": user,
             "response_url": fake.response_url("say")}
    form.pop("enterprise_id")  # a plain workspace here; the text is what is under test
    form.pop("enterprise_name")
    return urllib.parse.urlencode(form)


@pytest.mark.parametrize(("known", "spoken"), [
    (True, "Hi Johnny & welcome to #general everyone here read the guide <3"),
    (False, "Hi john & welcome to #general everyone here read the guide <3"),
])
async def test_escaped_command_text_reaches_the_avatar_readable(slack, known, spoken):
    from tests.slack.conftest import CHANNEL, TEAM

    if known:
        slack.fake.add_user("W0ABCDEF12", display_name="Johnny", real_name="John Smith")
    await slack.stack.store.grant(f"slack:{TEAM}", 100, "test")
    await slack.command("start Ava 5")
    await slack.fake.wait_for("chat.postMessage")
    body = escaped_say_form(slack.fake, TEAM, CHANNEL, "U1")
    status, _ = await slack.post(body, "application/x-www-form-urlencoded")
    assert status == 200
    await slack.fake.wait_for_response(1)
    assert slack.stack.provider.called("say") == [spoken]
    # the same text as a thread message reads the same
    ts = slack.fake.called("chat.postMessage")[0].result["ts"]
    text = dict(urllib.parse.parse_qsl(body))["text"].removeprefix("say ")
    await slack.thread_message("!say " + text, ts)
    await slack.fake.wait_for("reactions.add")
    assert slack.stack.provider.called("say") == [spoken, spoken]


async def test_ask_and_context_text_is_readable_too(slack):
    from tests.slack.conftest import TEAM

    slack.fake.add_user("U2", real_name="Grace Hopper")
    await slack.stack.store.grant(f"slack:{TEAM}", 100, "test")
    await slack.command("start Ava 5")
    await slack.fake.wait_for("chat.postMessage")
    await slack.command("ask is <@U2> here &amp; *well*?", key="a")
    await slack.command("context Tea &amp; cake at <https://x.test/menu|the menu>", key="c")
    answers = await slack.fake.wait_for_response(2)
    assert slack.stack.provider.called("ask") == ["is Grace Hopper here & well?"]
    record = (await slack.stack.store.open_sessions())[0]
    assert record.knowledge == "Tea & cake at the menu"
    assert any("22 characters" in a["text"] for a in answers)


@pytest.mark.parametrize("name", ["event_message_image_only.json",
                                  "event_message_file_share_only.json"])
async def test_file_only_replies_get_one_quiet_note_per_session(slack, name):
    from tests.slack.conftest import CHANNEL, TEAM

    await slack.stack.store.grant(f"slack:{TEAM}", 100, "test")
    await slack.command("start Ava 5")
    (anchor,) = await slack.fake.wait_for("chat.postMessage")
    ts = anchor.result["ts"]
    for n in range(2):
        payload = json.loads((FIXTURES / name).read_text())
        payload["team_id"] = TEAM
        payload["authorizations"][0]["team_id"] = TEAM
        payload["event_id"] = f"EvFile{n}"
        payload["event"] |= {"channel": CHANNEL, "thread_ts": ts, "user": "U1",
                             "ts": f"1800000000.00010{n}"}
        raw = json.dumps(payload)
        status, _ = await slack.post(raw, "application/json", headers=sign(raw))
        assert status == 200
    # the start's "Starting …" notice, then exactly one note, in the thread, to the writer
    await slack.fake.wait_for("chat.postEphemeral", 2)
    await slack.thread_message("and now words", ts)
    await slack.fake.wait_for("reactions.add")
    notes = slack.fake.called("chat.postEphemeral")[1:]
    assert len(notes) == 1
    assert notes[0].params["thread_ts"] == ts and notes[0].params["user"] == "U1"
    assert "only hears text" in notes[0].params["text"]
    assert "nothing to say" not in notes[0].params["text"].lower()
    assert slack.stack.provider.called("ask") == ["and now words"]
    assert slack.stack.provider.called("say") == []
