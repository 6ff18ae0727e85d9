"""The session commands from the channel, and what they leave in logs."""

from __future__ import annotations

import hashlib
import hmac
import logging

from slack_sdk.signature import SignatureVerifier

from bot.core.models import Mode
from tests.slack.conftest import SECRET, TEAM, TOKEN, sign
from tests.slack.test_refusals import ephemeral

TENANT = f"slack:{TEAM}"


def test_test_signatures_match_slack_sdk():
    body = "command=/avatar&text=start"
    headers = sign(body, ts=1_700_000_000)
    expected = SignatureVerifier(SECRET).generate_signature(timestamp="1700000000", body=body)
    assert headers["X-Slack-Signature"] == expected
    assert expected == "v0=" + hmac.new(SECRET.encode(), b"v0:1700000000:" + body.encode(),
                                        hashlib.sha256).hexdigest()


async def test_session_commands_in_the_channel(slack, caplog):
    caplog.set_level(logging.DEBUG)
    stack, fake = slack.stack, slack.fake
    await stack.store.grant(TENANT, 100, "test")
    await slack.command("start Bob 3 say")
    (post,) = await fake.wait_for("chat.postMessage")
    sid, ts = post.params["blocks"][1]["elements"][1]["value"], post.result["ts"]
    record = await stack.store.get_session(sid)
    assert record.avatar_id == "bob-2" and record.mode is Mode.SAY and record.requested_s == 180

    assert "Sent to the avatar" in await ephemeral(slack, "say Good morning, all")
    assert stack.provider.called("say") == ["Good morning, all"]
    assert "answer comes in the session's thread" in await ephemeral(slack, "ask why?")
    assert stack.provider.called("ask") == ["why?"]
    assert "now *ask*" in await ephemeral(slack, "mode ask")
    assert (await stack.store.get_session(sid)).mode is Mode.ASK
    assert "Interrupted" in await ephemeral(slack, "interrupt")
    assert stack.provider.called("interrupt")
    link = await ephemeral(slack, "link")
    token = link.split("/v/", 1)[1].split("|", 1)[0]
    assert stack.links.verify(token).session_id == sid
    listing = await ephemeral(slack, "avatars")
    assert "*Ava* — `ava-1`" in listing and "*Bob* — `bob-2`" in listing
    credits = await ephemeral(slack, "credits")
    assert "*97* credits available" in credits and "3 held by running sessions" in credits
    assert "Mode must be ask or say" in await ephemeral(slack, "mode shout")

    # what the avatar said (the words it was given, its answer) came back into the thread
    posts = fake.in_thread(ts)
    said = "\n".join(p.params["text"] for p in posts).splitlines()  # lines may be merged
    assert said[:2] == ["*Bob:* Good morning, all", "*Bob:* You asked: why?. I know: nothing."]

    assert "Stopped" in await ephemeral(slack, f"stop {sid}")
    assert "already ended" in await ephemeral(slack, f"stop {sid}")
    assert "There is no such session" in await ephemeral(slack, "stop nosuchid")
    assert await stack.store.verify() == []
    logs = "\n".join(r.getMessage() for r in caplog.records)
    # The viewer link and the response_url (it can post into the channel) are credentials too.
    for secret in (TOKEN, SECRET, token, fake.response_url("r1")):
        assert secret not in logs


async def test_admins_choose_the_avatar_a_bare_start_uses(slack):
    stack, fake = slack.stack, slack.fake
    await stack.store.grant(TENANT, 100, "test")
    assert "starts *Ava*" in await ephemeral(slack, "admin default", user="UADMIN")
    assert "Only workspace admins" in await ephemeral(slack, "admin default Bob", user="U1")
    assert "Unknown avatar" in await ephemeral(slack, "admin default Nobody", user="UADMIN")
    assert "now starts *Bob*" in await ephemeral(slack, "admin default Bob", user="UADMIN")

    await slack.command("start 2")
    (post,) = await fake.wait_for("chat.postMessage")
    sid = post.params["blocks"][1]["elements"][1]["value"]
    assert (await stack.store.get_session(sid)).avatar_id == "bob-2"
