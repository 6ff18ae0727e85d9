"""Requests that must be refused before anything happens, and redeliveries handled once."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse

import pytest

from tests.slack.conftest import TEAM, sign


async def assert_nothing_done(slack) -> None:
    await asyncio.sleep(0.1)  # anything wrongly started in the background would show by now
    assert slack.stack.provider.calls == []
    assert await slack.stack.store.open_sessions() == []
    assert [c.method for c in slack.fake.calls if c.method != "auth.test"] == []
    assert slack.fake.responses == []


@pytest.fixture
async def funded(slack):
    await slack.stack.store.grant(f"slack:{TEAM}", 100, "test")
    return slack


FORM = "application/x-www-form-urlencoded"


async def test_bad_signature_is_401(funded):
    body = funded.command_body("start")
    status, _ = await funded.post(body, FORM, headers=sign(body, secret="not-the-secret"))
    assert status == 401
    await assert_nothing_done(funded)


async def test_body_changed_after_signing_is_401(funded):
    headers = sign(funded.command_body("credits"))
    status, _ = await funded.post(funded.command_body("start"), FORM, headers=headers)
    assert status == 401
    await assert_nothing_done(funded)


async def test_timestamp_older_than_five_minutes_is_401(funded):
    body = funded.command_body("start")
    status, _ = await funded.post(body, FORM, headers=sign(body, ts=int(time.time()) - 301))
    assert status == 401
    # a fresh signature of the same body is fine (the clock check is what refused it)
    status, _ = await funded.post(body, FORM, headers=sign(body, ts=int(time.time()) - 200))
    assert status == 200
    await funded.fake.wait_for("chat.postMessage")


@pytest.mark.parametrize("drop", ["X-Slack-Signature", "X-Slack-Request-Timestamp", "both"])
async def test_missing_headers_are_401(funded, drop):
    body = funded.command_body("start")
    headers = sign(body)
    for name in list(headers):
        if drop in (name, "both"):
            del headers[name]
    status, _ = await funded.post(body, FORM, headers=headers)
    assert status == 401
    await assert_nothing_done(funded)


async def test_non_numeric_timestamp_is_401(funded):
    body = funded.command_body("start")
    headers = sign(body) | {"X-Slack-Request-Timestamp": "soon"}
    status, _ = await funded.post(body, FORM, headers=headers)
    assert status == 401
    await assert_nothing_done(funded)


async def test_a_timestamp_of_non_ascii_digits_is_401(funded):
    # "²".isdigit() is true but int("²") fails: this was a 500 (and a traceback) for anyone.
    body = funded.command_body("start").encode()
    host, port = funded.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: " + FORM.encode()
        + b"\r\nX-Slack-Request-Timestamp: " + "²".encode() + b"\r\nX-Slack-Signature: v0=00"
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 401 ")
    await assert_nothing_done(funded)


@pytest.mark.parametrize(("body", "content_type"), [
    ('{"type": "event_callback", "event": ', "application/json"),          # cut-off JSON
    ('["type", "event_callback"]', "application/json"),                     # not an object
    ('{"event": {"type": "message"}}', "application/json"),                 # no type
    ("payload=%7Bnot-json", FORM),                                           # payload not JSON
    ("payload=%5B1%2C2%5D", FORM),                                           # payload not object
    ("team_id=T1&text=start", FORM),                                         # no command
    ("command=/avatar&text=start&&=&", FORM),                                # broken form
    ("command=/avatar&text=start", "text/plain"),                           # wrong type
    (b"command=/avatar&text=\xff\xfe".decode("latin-1"), FORM),              # not UTF-8
    ("[" * 5000 + "]" * 5000, "application/json"),    # too deep for json (RecursionError)
    ("payload=" + "%5B" * 5000, FORM),                # the same inside an interactive payload
])
async def test_malformed_bodies_are_400(funded, body, content_type):
    raw = body.encode("latin-1")
    headers = sign(raw) | {"Content-Type": content_type}
    async with funded.http.post(funded.url + "/slack/events", data=raw, headers=headers) as resp:
        assert resp.status == 400
    await assert_nothing_done(funded)


async def test_unknown_team_is_401(funded):
    status, _ = await funded.command("start", team="TOTHER")
    assert status == 401
    status, _ = await funded.thread_message("hi", "1.0", team="TOTHER")
    assert status == 401
    await assert_nothing_done(funded)


async def test_url_verification_is_answered(funded):
    body = json.dumps({"token": "legacy", "challenge": "abc123", "type": "url_verification"})
    status, text = await funded.post(body, "application/json")
    assert status == 200 and "abc123" in text


async def test_duplicate_event_deliveries_are_handled_once(funded):
    status, _ = await funded.command("start")
    (post,) = await funded.fake.wait_for("chat.postMessage")
    ts = post.result["ts"]
    event = {"type": "message", "channel": "C1", "user": "U1", "text": "once please",
             "ts": "1800000000.5", "thread_ts": ts}
    for retry in (None, 1, 2):
        status, _ = await funded.event(event, event_id="EvSAME", retry=retry)
        assert status == 200
    await funded.fake.wait_for("reactions.add")
    await asyncio.sleep(0.15)
    assert funded.stack.provider.called("ask") == ["once please"]
    assert len(funded.fake.called("reactions.add")) == 1


async def test_unhandled_interactive_payload_does_not_start_anything(funded):
    payload = {"type": "block_actions", "team": {"id": TEAM}, "user": {"id": "U1"},
               "actions": [{"action_id": "something_else", "value": "x"}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    status, _ = await funded.post(body, FORM)
    assert status in (200, 404)
    await assert_nothing_done(funded)
