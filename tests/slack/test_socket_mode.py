"""Socket Mode (SLACK_APP_TOKEN): the same app served over the fake's WebSocket."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.errors import ConfigError
from bot.platforms.slack import start_socket_mode
from tests.slack.conftest import CHANNEL, TEAM, trigger_id


def slash(envelope_id: str, text: str, fake) -> dict:
    return {
        "envelope_id": envelope_id, "type": "slash_commands", "accepts_response_payload": True,
        "payload": {
            "token": "legacy", "team_id": TEAM, "channel_id": CHANNEL, "channel_name": "general",
            "user_id": "U1", "user_name": "u1", "command": "/avatar", "text": text,
            "api_app_id": "A0AVATAR", "response_url": fake.response_url("sm"),
            "trigger_id": trigger_id(),
        },
    }


async def test_commands_arrive_over_the_socket(slack):
    fake = slack.fake
    fake.app_tokens.add("xapp-1-dev")
    await slack.stack.store.grant(f"slack:{TEAM}", 100, "test")
    conn = await start_socket_mode(slack.adapter, "xapp-1-dev")
    try:
        ack = await fake.socket_request(slash("e1", "help", fake))
        assert "`start [avatar] [minutes] [ask|say]`" in ack["payload"]["text"]
        ack = await fake.socket_request(slash("e2", "start Bob", fake))
        assert ack["envelope_id"] == "e2"
        (post,) = await fake.wait_for("chat.postMessage")
        assert "*Bob*" in post.params["blocks"][0]["text"]["text"]
    finally:
        await conn.aclose()
        await conn.aclose()  # idempotent
    opens = fake.called("apps.connections.open")
    assert [c.token for c in opens] == ["xapp-1-dev"]  # the checked URL is the one used


async def test_a_refused_app_token_is_a_clear_config_error(slack):
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN was refused by Slack"):
        await start_socket_mode(slack.adapter, "xapp-wrong")


async def test_a_second_app_for_socket_mode_does_not_post_twice(slack):
    """A second app object on the same service, whose relay nobody runs, posts nothing twice."""
    from bot.platforms.slack import build_slack

    fake, stack = slack.fake, slack.stack
    fake.app_tokens.add("xapp-1-dev")
    await stack.store.grant(f"slack:{TEAM}", 100, "test")
    second = build_slack(settings=slack.settings, service=stack.service, tenants=stack.tenants,
                         bindings=stack.bindings, links=stack.links, installs=stack.installs,
                         min_interval_s=0.01)
    conn = await start_socket_mode(second, "xapp-1-dev")
    try:
        await fake.socket_request(slash("e1", "start", fake))
        (anchor,) = await fake.wait_for("chat.postMessage")
        ts = anchor.result["ts"]
        await slack.thread_message("only once?", ts)  # over HTTP, into the first app
        await fake.wait_for("reactions.add")
        posts = await fake.wait_for("chat.postMessage", 2)
        await asyncio.sleep(0.2)
        answers = fake.in_thread(ts)
        assert len(answers) == 1 and "You asked: only once?" in answers[0].params["text"]
        assert len(posts) == 2
    finally:
        await conn.close_async()
