"""End to end: signed /avatar start -> session message with buttons -> thread talk -> Stop."""

from __future__ import annotations

import asyncio

from bot.core.models import SessionState
from tests.slack.conftest import CHANNEL, TEAM, TOKEN


async def start_session(slack, text: str = "start Ava 5 ask"):
    status, body = await slack.command(text)
    assert status == 200
    assert body == ""  # acked at once, empty; the rest follows
    (post,) = await slack.fake.wait_for("chat.postMessage")
    return post


async def test_start_talk_stop_settles_credits(slack):
    store, provider = slack.stack.store, slack.stack.provider
    await store.grant(f"slack:{TEAM}", 100, "test")

    post = await start_session(slack)
    # the bot proved it can post here before reserving anything
    (probe,) = slack.fake.called("chat.postEphemeral")
    assert probe.params["user"] == "U1" and "Starting Ava" in probe.params["text"]
    assert post.token == TOKEN and post.params["channel"] == CHANNEL
    blocks = post.params["blocks"]
    assert "*Ava*" in blocks[0]["text"]["text"] and "<@U1>" in blocks[0]["text"]["text"]
    viewer, stop = blocks[1]["elements"]
    assert viewer["text"]["text"] == "Open viewer" and stop["text"]["text"] == "Stop"
    session_id = stop["value"]
    token = viewer["url"].rsplit("/v/", 1)[1]
    assert slack.stack.links.verify(token).session_id == session_id
    record = await store.get_session(session_id)
    assert record.state is SessionState.LIVE and record.tenant == f"slack:{TEAM}"
    assert record.started_by == "U1" and record.requested_s == 300

    # a person writes in the session's thread: the avatar is asked, the answer comes back
    thread_ts = post.result["ts"]
    status, _ = await slack.thread_message("what is <https://x.test|this>?", thread_ts)
    assert status == 200
    posts = await slack.fake.wait_for("chat.postMessage", 2)
    answer = posts[1].params
    assert answer["thread_ts"] == thread_ts and answer["channel"] == CHANNEL
    assert "You asked: what is this?" in answer["text"]
    assert provider.called("ask") == ["what is this?"]
    (reaction,) = await slack.fake.wait_for("reactions.add")
    assert reaction.params["name"] == "speech_balloon"

    # a prefix overrides the mode once
    await slack.thread_message("!say Hello everyone", thread_ts)
    await slack.fake.wait_for("chat.postMessage", 3)
    assert provider.called("say") == ["Hello everyone"]

    # the Stop button ends it: vendor stopped, summary in the thread, buttons gone
    status, _ = await slack.action("avatar_stop", session_id, message_ts=thread_ts)
    assert status == 200
    posts = await slack.fake.wait_for("chat.postMessage", 4)
    summary = posts[3].params
    assert summary["thread_ts"] == thread_ts and "ended after" in summary["text"]
    (update,) = await slack.fake.wait_for("chat.update")
    assert update.params["ts"] == thread_ts
    assert all(b["type"] != "actions" for b in update.params["blocks"])
    assert provider.called("stop")
    record = await store.get_session(session_id)
    assert record.state is SessionState.ENDED and record.end_reason == "stopped by u1"
    balance = await store.balance(f"slack:{TEAM}")
    assert balance.pending == 0 and balance.settled == 1  # FakeProvider: 60 s minimum, 1/min
    assert "Credits used: 1" in summary["text"]
    assert await store.verify() == []


async def test_thread_messages_that_are_not_people_are_ignored(slack):
    await slack.stack.store.grant(f"slack:{TEAM}", 100, "test")
    post = await start_session(slack)
    ts = post.result["ts"]
    base = {"type": "message", "channel": CHANNEL, "thread_ts": ts, "ts": "1800000000.1"}
    await slack.event(base | {"bot_id": "BOTHER", "user": "U9", "text": "another bot"})
    await slack.event(base | {"subtype": "message_changed", "message": {"text": "edit"}})
    await slack.event(base | {"subtype": "message_deleted", "deleted_ts": ts})
    await slack.event(base | {"user": "UBOT", "text": "my own words"})  # the bot itself
    await slack.event({"type": "message", "channel": CHANNEL, "user": "U1", "text": "no thread",
                       "ts": "1800000000.2"})
    await slack.thread_message("real one", ts)
    await slack.fake.wait_for("reactions.add")
    await slack.event(base | {"subtype": "thread_broadcast", "user": "U2", "text": "to all too",
                              "ts": "1800000000.3"})
    await slack.fake.wait_for("reactions.add", 2)
    await asyncio.sleep(0.1)
    assert slack.stack.provider.called("ask") == ["real one", "to all too"]
    assert post.params["channel"] == CHANNEL


async def test_a_restarted_app_still_knows_the_thread(make_slack, fake_slack, stack):
    first = await make_slack()
    await stack.store.grant(f"slack:{TEAM}", 100, "test")
    post = await start_session(first)
    ts = post.result["ts"]
    await first.adapter.relay.aclose()  # the first process is gone

    second = await make_slack()  # a new app object: nothing in memory, only the database
    await second.thread_message("still there?", ts)
    posts = await fake_slack.wait_for("chat.postMessage", 2)
    assert posts[1].params["thread_ts"] == ts
    assert "You asked: still there?" in posts[1].params["text"]


async def test_install_routes_in_single_workspace_mode(slack):
    async with slack.http.get(slack.url + "/slack/install") as resp:
        assert resp.status == 404
        assert "one workspace" in await resp.text()
