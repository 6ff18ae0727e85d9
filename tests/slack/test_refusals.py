"""Refusals: each is one clear ephemeral message, and nothing is reserved or posted."""

from __future__ import annotations

import asyncio

import pytest

from tests.slack.conftest import TEAM, sign

TENANT = f"slack:{TEAM}"


async def ephemeral(slack, text: str, **kw) -> str:
    """Run a command; return the one ephemeral answer posted to its response_url."""
    before = len(slack.fake.responses)
    status, body = await slack.command(text, **kw)
    assert status == 200 and body == ""
    bodies = await slack.fake.wait_for_response(before + 1)
    answer = bodies[before]
    assert answer["response_type"] == "ephemeral"
    return answer["text"]


async def assert_nothing_reserved(slack) -> None:
    # "Starting Ava…" is only shown once the checks passed: a refusal is the only thing said
    shown = [c for c in slack.fake.called("chat.postEphemeral") if c.result["ok"]]
    assert shown == []
    assert await slack.stack.store.open_sessions() == []
    assert slack.stack.provider.called("start") == []
    assert slack.fake.called("chat.postMessage") == []
    if await slack.stack.store.tenant_exists(TENANT):
        assert (await slack.stack.store.balance(TENANT)).pending == 0
    assert await slack.stack.store.verify() == []


async def test_no_credits(slack):
    text = await ephemeral(slack, "start")
    assert "Not enough credits" in text and "this needs 10" in text
    await assert_nothing_reserved(slack)


async def test_limits_refuse_long_and_concurrent_sessions(slack):
    store = slack.stack.store
    await store.grant(TENANT, 1000, "test")
    await store.set_limits(TENANT, max_minutes=5, max_concurrent=0)
    text = await ephemeral(slack, "start Ava 6")
    assert "at most 5 minutes" in text
    text = await ephemeral(slack, "start Ava 2")
    assert "already running here (limit 0)" in text
    await assert_nothing_reserved(slack)


async def test_unknown_avatar_and_bad_arguments(slack):
    await slack.stack.store.grant(TENANT, 100, "test")
    assert "Unknown avatar 'Zed'" in await ephemeral(slack, "start Zed")
    assert "Unexpected 'Bob'" in await ephemeral(slack, "start Ava Bob")
    await assert_nothing_reserved(slack)


async def test_non_admin_admin_command(slack):
    text = await ephemeral(slack, "admin grant 500", user="U2")
    assert "Only workspace admins and owners" in text
    text = await ephemeral(slack, "admin limits max_concurrent=9", user="U2")
    assert "Only workspace admins and owners" in text
    assert not await slack.stack.store.tenant_exists(TENANT) or (
        await slack.stack.store.balance(TENANT)).granted == 0
    (info,) = slack.fake.called("users.info")  # asked once, then cached
    assert info.params["user"] == "U2"


async def test_workspace_admin_sets_limits_and_only_the_operator_grants(make_slack):
    # Issue 16: one rule set on every platform and in every mode (bot/core/tenants.py).
    slack = await make_slack(operator_user_ids="slack:UOPS,discord:123")
    slack.fake.add_user("UOPS")
    text = await ephemeral(slack, "admin grant 50 welcome", user="UADMIN")
    assert "Only the bot's operator grants credits" in text
    assert not await slack.stack.store.tenant_exists(TENANT) or (
        await slack.stack.store.balance(TENANT)).granted == 0
    text = await ephemeral(slack, "admin grant 50 welcome", user="UOPS")
    assert "Granted 50 credits" in text and "*50*" in text
    text = await ephemeral(slack, "admin limits max_concurrent=40", user="UADMIN")
    assert "max_concurrent goes from 0 to 5 here (the ceiling the bot's operator set)" in text
    assert "max_concurrent=40" in await ephemeral(
        slack, "admin limits max_concurrent=40", user="UOPS")
    text = await ephemeral(slack, "admin limits max_minutes=7 daily_user_credits=30",
                           user="UADMIN")
    assert "max_minutes=7" in text and "daily_user_credits=30" in text
    limits = await slack.stack.store.get_limits(TENANT)
    assert limits.max_minutes == 7 and limits.daily_user_credits == 30
    assert "Bad limit 'max_minutes=lots'" in await ephemeral(
        slack, "admin limits max_minutes=lots", user="UADMIN")
    text = await ephemeral(slack, "credits", user="U1")
    assert "*50* credits available" in text and "0 of your 30" in text


async def test_allow_list_refuses_others(slack):
    await slack.stack.store.grant(TENANT, 100, "test")
    text = await ephemeral(slack, "admin allow <@U2|bob>", user="UADMIN")
    assert "<@U2>" in text
    text = await ephemeral(slack, "start", user="U1")
    assert "not among the roles or people allowed" in text
    await assert_nothing_reserved(slack)
    assert "would empty the list" in await ephemeral(slack, "admin deny <@U2>", user="UADMIN")
    assert "not a user I can read" in await ephemeral(slack, "admin allow @bob", user="UADMIN")


async def test_private_channel_without_the_bot(slack):
    await slack.stack.store.grant(TENANT, 100, "test")
    text = await ephemeral(slack, "start", channel="G777")
    assert "Invite me with `/invite @avatarbot`" in text
    await assert_nothing_reserved(slack)
    joins = slack.fake.called("conversations.join")
    assert [j.params["channel"] for j in joins] == ["G777"]


async def test_public_channel_is_joined_first(slack):
    await slack.stack.store.grant(TENANT, 100, "test")
    status, _ = await slack.command("start", channel="C999")
    assert status == 200
    (post,) = await slack.fake.wait_for("chat.postMessage")
    assert post.params["channel"] == "C999"
    assert [j.params["channel"] for j in slack.fake.called("conversations.join")] == ["C999"]


async def test_only_the_starter_or_an_admin_may_stop(slack):
    await slack.stack.store.grant(TENANT, 100, "test")
    await slack.command("start", user="U1")
    (post,) = await slack.fake.wait_for("chat.postMessage")
    session_id = post.params["blocks"][1]["elements"][1]["value"]
    text = await ephemeral(slack, "stop", user="U2")
    assert "Only <@U1> (who started it) or a workspace admin" in text
    await slack.action("avatar_stop", session_id, user="U2")
    await slack.fake.wait_for_response(2)
    key, refusal = slack.fake.responses[-1]
    assert key == "action" and "Only <@U1>" in refusal["text"]
    assert (await slack.stack.store.get_session(session_id)).state.value == "live"
    assert "Stopped" in await ephemeral(slack, "stop", user="UADMIN")
    assert (await slack.stack.store.get_session(session_id)).state.value == "ended"


@pytest.mark.parametrize("text", ["", "help", "dance"])
async def test_help_is_the_ack(slack, text):
    status, body = await slack.command(text)
    assert status == 200
    assert "`start [avatar] [minutes] [ask|say]`" in body
    assert ("Unknown command `dance`" in body) == (text == "dance")


async def test_commands_need_a_session_in_the_channel(slack):
    text = await ephemeral(slack, "say hello")
    assert "no open session in this channel" in text


async def test_a_rate_limited_anchor_post_is_retried(slack):
    await slack.stack.store.grant(TENANT, 100, "test")
    slack.fake.fail_next("chat.postMessage", status=429, retry_after=1)
    await slack.command("start")
    limited, posted = await slack.fake.wait_for("chat.postMessage", 2)
    assert limited.result["error"] == "ratelimited" and posted.result["ok"]
    assert posted.at - limited.at >= 0.95
    (record,) = await slack.stack.store.open_sessions()
    assert record.state.value == "live"


async def test_a_session_whose_message_cannot_be_posted_is_ended(slack):
    await slack.stack.store.grant(TENANT, 100, "test")
    slack.fake.fail_next("chat.postMessage", status=200, error="is_archived")
    text = await ephemeral(slack, "start")
    assert "Slack refused a call" in text
    (record,) = await slack.stack.store.list_sessions(TENANT)
    assert record.state.value == "ended" and record.end_reason == "could not post in the channel"
    assert slack.stack.provider.called("stop")
    assert (await slack.stack.store.balance(TENANT)).pending == 0
    assert await slack.stack.store.verify() == []


@pytest.mark.parametrize(("text", "expected"), [
    ("start ²", "is not a length"),            # str.isdigit() is true, int() refuses it
    ("start Ava ² ask", "is not a length"),
    ("start -5", "is not a length"),
    ("start 1e9", "is not a length"),
    ("start 1.5", "is not a length"),
])
async def test_odd_lengths_get_a_clear_refusal(slack, text, expected):
    await slack.stack.store.grant(TENANT, 100, "test")
    answer = await ephemeral(slack, text)
    assert expected in answer and "Something went wrong" not in answer
    await assert_nothing_reserved(slack)


@pytest.mark.parametrize(("text", "expected"), [
    ("admin grant ²", "Usage: `/avatar admin grant"),
    ("admin limits max_minutes=²", "Bad limit 'max_minutes=²'"),
    # Past SQLite's 64-bit integers: this used to fail inside the store.
    ("admin limits max_concurrent=99999999999999999999999", "Bad limit"),
    ("admin limits max_concurrent=51", "max_concurrent goes from 0 to 50"),
    ("admin limits max_minutes=0", "max_minutes goes from 1 to 240"),
])
async def test_odd_admin_numbers_get_a_clear_refusal_and_change_nothing(slack, text, expected):
    await slack.stack.store.grant(TENANT, 100, "test")
    before = await slack.stack.store.get_limits(TENANT)
    answer = await ephemeral(slack, text, user="UADMIN")
    assert expected in answer and "Something went wrong" not in answer
    assert await slack.stack.store.get_limits(TENANT) == before
    assert (await slack.stack.store.balance(TENANT)).granted == 100


async def test_a_replayed_signed_request_is_handled_once(make_slack):
    # Issue 16: a signed request can be resent as is within Slack's 5-minute window.
    slack = await make_slack(operator_user_ids="slack:UOPS")
    slack.fake.add_user("UOPS")
    body = slack.command_body("admin grant 500", user="UOPS")
    headers = sign(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    before = len(slack.fake.responses)
    for _ in range(3):
        assert (await slack.post(body, "application/x-www-form-urlencoded",
                                 headers=headers))[0] == 200
    await slack.fake.wait_for_response(before + 1)
    assert (await slack.stack.store.balance(TENANT)).granted == 500  # not 1,500
    body = slack.command_body("start", user="UOPS")
    headers = sign(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    for _ in range(2):
        await slack.post(body, "application/x-www-form-urlencoded", headers=headers)
    for _ in range(100):
        if slack.stack.provider.called("start"):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert len(slack.stack.provider.called("start")) == 1  # one room, not two
