"""The avatar's words in the thread: escaped, merged, throttled per workspace, 429s retried."""

from __future__ import annotations

import asyncio

from bot.core.events import StateChanged, Transcript, Warning
from bot.core.models import SessionState
from bot.core.service import StartCommand
from tests.slack.conftest import TEAM, eventually

TENANT = f"slack:{TEAM}"


async def start(slack) -> tuple[str, str]:
    await slack.stack.store.grant(TENANT, 100, "test")
    await slack.command("start")
    post = (await slack.fake.wait_for("chat.postMessage"))[0]  # the anchor comes first
    return post.params["blocks"][1]["elements"][1]["value"], post.result["ts"]


def thread_posts(slack, ts: str) -> list:
    return [c for c in slack.fake.in_thread(ts) if c.result and c.result["ok"]]


async def test_words_are_escaped_so_the_avatar_cannot_ping_anyone(slack):
    sid, ts = await start(slack)
    slack.stack.hub.publish(Transcript(session_id=sid, speaker="avatar",
                                       text="<!channel> fish & <@U1>"))
    slack.stack.hub.publish(Warning(session_id=sid, text="2 minutes left", seconds_left=120))
    await eventually(lambda: _count(slack, ts, 2))
    first, second = (p.params["text"] for p in thread_posts(slack, ts))
    assert first == "*Ava:* &lt;!channel&gt; fish &amp; &lt;@U1&gt;"
    assert second == ":hourglass_flowing_sand: 2 minutes left"


async def _count(slack, ts: str, n: int) -> bool:
    return len(thread_posts(slack, ts)) >= n


async def test_posts_are_spaced_and_piled_up_lines_merged(make_slack):
    slack = await make_slack(min_interval_s=0.3)
    sid, ts = await start(slack)
    for i in range(6):
        slack.stack.hub.publish(Transcript(session_id=sid, speaker="avatar", text=f"line {i}"))
        await asyncio.sleep(0.05)
    await eventually(lambda: _has_all(slack, ts, 6))
    posts = thread_posts(slack, ts)
    assert 2 <= len(posts) < 6  # merged while waiting for the next slot
    gaps = [b.at - a.at for a, b in zip(posts, posts[1:], strict=False)]
    assert all(gap >= 0.28 for gap in gaps), gaps
    text = "\n".join(p.params["text"] for p in posts)
    assert [line for line in text.splitlines()] == [f"*Ava:* line {i}" for i in range(6)]


async def _has_all(slack, ts: str, n: int) -> bool:
    return sum(p.params["text"].count("line ") for p in thread_posts(slack, ts)) >= n


async def test_rate_limited_post_is_retried_after_retry_after(slack):
    sid, ts = await start(slack)
    slack.fake.fail_next("chat.postMessage", status=429, retry_after=1)
    slack.stack.hub.publish(Transcript(session_id=sid, speaker="avatar", text="patience"))
    await eventually(lambda: _count(slack, ts, 1), within=5)
    limited, ok = slack.fake.called("chat.postMessage")[-2:]
    assert limited.result == {"ok": False, "error": "ratelimited"}
    assert ok.params["text"] == "*Ava:* patience"
    assert ok.at - limited.at >= 0.95  # waited Retry-After: 1


async def test_lines_said_before_the_thread_exists_follow_it(slack, stack):
    async def greet_when_live() -> None:
        async with stack.hub.subscribe(None) as queue:
            while True:
                event = await queue.get()
                if isinstance(event, StateChanged) and event.state is SessionState.LIVE:
                    stack.hub.publish(Transcript(session_id=event.session_id, speaker="avatar",
                                                 text="Hello, I am ready"))
                    return

    greeter = asyncio.create_task(greet_when_live())
    await asyncio.sleep(0)
    sid, ts = await start(slack)
    await greeter
    await eventually(lambda: _count(slack, ts, 1))
    assert thread_posts(slack, ts)[0].params["text"] == "*Ava:* Hello, I am ready"


async def test_session_ended_elsewhere_posts_the_summary(slack):
    sid, ts = await start(slack)
    await slack.stack.service.stop(sid, "expired")
    await eventually(lambda: _count(slack, ts, 1))
    assert "ended after" in thread_posts(slack, ts)[0].params["text"]
    assert "(expired)" in thread_posts(slack, ts)[0].params["text"]
    (update,) = await slack.fake.wait_for("chat.update")
    assert update.params["ts"] == ts


async def test_sessions_of_other_platforms_are_not_posted(slack, stack):
    await stack.store.grant("discord:1", 100, "test")
    record = await stack.service.start(StartCommand(tenant="discord:1", user="d"))
    await stack.service.ask(record.id, "hi")
    await stack.service.stop(record.id)
    await asyncio.sleep(0.2)
    assert slack.fake.called("chat.postMessage") == []
    assert slack.fake.called("chat.update") == []


async def test_closing_sends_the_summaries_of_sessions_ended_just_before(slack):
    sid, ts = await start(slack)
    await slack.stack.service.stop(sid, "the server shut down")
    await slack.adapter.relay.aclose()  # at once, as a shutdown does
    summaries = [p for p in thread_posts(slack, ts) if "ended after" in p.params["text"]]
    assert len(summaries) == 1 and "(the server shut down)" in summaries[0].params["text"]
    assert slack.fake.called("chat.update")


async def test_closing_says_how_many_posts_it_could_not_send_in_time(make_slack, caplog):
    slack = await make_slack(min_interval_s=5.0)  # a workspace's pace, slowed: posts queue up
    sid, ts = await start(slack)
    await slack.stack.service.stop(sid, "the server shut down")  # the summary, the anchor's edit
    await slack.adapter.relay.aclose(drain_timeout_s=0.2)
    assert "Slack post(s) not sent" in caplog.text


async def test_the_end_summary_attaches_the_transcript(slack):
    keeper = asyncio.create_task(slack.stack.service.keep_transcripts())
    try:
        await asyncio.sleep(0)
        sid, ts = await start(slack)
        await slack.stack.service.ask(sid, "what is on the menu?", author="Ann")
        await slack.stack.service.stop(sid, "expired")
        (done,) = await slack.fake.wait_for("files.completeUploadExternal")
        assert done.result["ok"], done.result
        (entry,) = slack.fake.files.values()
        assert entry["filename"] == f"transcript-{sid}.txt"
        assert entry["channel"] == done.params["channel_id"] and entry["thread_ts"] == ts
        assert "ended after" in entry["initial_comment"] and "(expired)" in entry["initial_comment"]
        lines = entry["data"].decode().splitlines()
        assert lines[0].endswith(" UTC] Ann asked: what is on the menu?"), lines
        assert "] Ava: You asked: what is on the menu?" in lines[1], lines
        # The summary went with the file, not a second time as a plain message.
        assert not [p for p in thread_posts(slack, ts) if "ended after" in p.params["text"]]
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_a_workspace_without_files_write_still_gets_the_summary(slack):
    keeper = asyncio.create_task(slack.stack.service.keep_transcripts())
    try:
        await asyncio.sleep(0)
        slack.fake.scopeless.add(TEAM)
        sid, ts = await start(slack)
        await slack.stack.service.ask(sid, "hello", author="Ann")
        await slack.stack.service.stop(sid, "expired")
        await eventually(lambda: _summary_posted(slack, ts))
        (refused,) = slack.fake.called("files.getUploadURLExternal")
        assert refused.result["error"] == "missing_scope"
        assert slack.fake.called("files.completeUploadExternal") == []
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def _summary_posted(slack, ts: str) -> bool:
    return any("ended after" in p.params["text"] for p in thread_posts(slack, ts))


async def test_one_sessions_flood_does_not_hold_back_another_sessions_line(make_slack):
    # Issue 16: a flood of long lines from session A (they cannot all merge into one post), then
    # one line of session B: B's line goes out within a turn, not after A's whole flood.
    slack = await make_slack(min_interval_s=0.05)
    a_sid, a_ts = await start(slack)
    await slack.command("start", user="U2", key="r2")
    anchors = [c for c in await slack.fake.wait_for("chat.postMessage", 2)
               if not c.params.get("thread_ts")]
    b_ts = anchors[1].result["ts"]
    b_sid = anchors[1].params["blocks"][1]["elements"][1]["value"]
    assert b_ts != a_ts
    before = len(slack.fake.called("chat.postMessage"))
    for i in range(50):
        slack.stack.hub.publish(Transcript(session_id=a_sid, speaker="avatar",
                                           text=f"flood {i} " + "x" * 1500))
    slack.stack.hub.publish(Transcript(session_id=b_sid, speaker="avatar", text="my turn"))
    await eventually(lambda: _count(slack, b_ts, 1), within=10)
    posted = slack.fake.called("chat.postMessage")[before:]
    order = [p.params.get("thread_ts") for p in posted]
    assert b_ts in order[:3], order  # B was served within the first turns
    await eventually(lambda: _has_flood(slack, a_ts, 50), within=20)  # and A lost nothing


async def _has_flood(slack, ts: str, n: int) -> bool:
    return sum(p.params["text"].count("flood ") for p in thread_posts(slack, ts)) >= n
