"""Slack under a backlog (docs/backpressure.md): every Events API delivery is acknowledged while
the work behind it is still waiting, nothing is lost, and a session whose queue is full says so.

Slack redelivers an event it has no 200 for within 3 s
(https://api.slack.com/apis/events-api#retries): an ack that waits for the vendor, or for the
checks in front of the listener, turns a slow moment into a flood of redeliveries.
"""

from __future__ import annotations

import asyncio

from bot.platforms.intake import Intake
from tests.slack.conftest import TEAM, eventually


async def start_session(slack) -> str:
    await slack.stack.store.grant(f"slack:{TEAM}", 100, "test")
    status, _ = await slack.command("start Ava 5 ask")
    assert status == 200
    (post,) = await slack.fake.wait_for("chat.postMessage")
    return post.result["ts"]


async def within(coro, seconds: float = 20.0):
    """Guard against a hang (a failing test must end); not a measure of speed."""
    return await asyncio.wait_for(coro, seconds)


async def test_events_are_acked_while_the_vendor_is_stalled_and_all_arrive_in_order(slack):
    thread_ts = await start_session(slack)
    provider = slack.stack.provider
    provider.talk_gate = asyncio.Event()  # the vendor takes every question and answers none
    texts = [f"question {i}" for i in range(8)]
    for text in texts:
        status, _ = await within(slack.thread_message(text, thread_ts))
        assert status == 200
        # acknowledged while the vendor still holds the first question
        assert not provider.talk_gate.is_set()
    await eventually(lambda: _true(provider.called("ask") == texts[:1]))
    provider.talk_gate.set()
    await eventually(lambda: _true(provider.called("ask") == texts))
    reactions = await slack.fake.wait_for("reactions.add", len(texts))
    assert {r.params["name"] for r in reactions} == {"speech_balloon"}


async def test_an_event_is_acked_even_when_its_checks_are_stalled(make_slack, fake_slack):
    """The gate asks Slack who the bot is (``auth.test``) on a fresh process: with Slack slow to
    answer, the event still gets its 200 first, and is handled once Slack answers."""
    first = await make_slack()
    thread_ts = await start_session(first)
    fake_slack.stalled["auth.test"] = asyncio.Event()
    fresh = await make_slack()  # another process: it has not asked auth.test yet
    status, _ = await within(fresh.thread_message("are you there?", thread_ts))
    assert status == 200
    assert not fake_slack.stalled["auth.test"].is_set()  # answered while the check waited
    assert first.stack.provider.called("ask") == []
    fake_slack.stalled["auth.test"].set()
    await eventually(lambda: _true(first.stack.provider.called("ask") == ["are you there?"]))


async def test_a_redelivery_of_an_event_still_being_handled_is_acked_and_dropped(
        make_slack, fake_slack):
    first = await make_slack()
    thread_ts = await start_session(first)
    fake_slack.stalled["auth.test"] = asyncio.Event()
    fresh = await make_slack()
    event = {"type": "message", "channel": "C1", "user": "U1", "text": "only once",
             "ts": "1800000000.7", "thread_ts": thread_ts}
    for retry in (None, 1, 2):  # Slack's redeliveries carry X-Slack-Retry-Num
        status, _ = await within(fresh.event(event, event_id="EvSLOW", retry=retry))
        assert status == 200
    fake_slack.stalled["auth.test"].set()
    await fake_slack.wait_for("reactions.add")
    await eventually(lambda: _true(first.stack.provider.called("ask") == ["only once"]))
    await asyncio.sleep(0.1)
    assert first.stack.provider.called("ask") == ["only once"]


async def test_a_full_session_queue_is_told_to_the_person_and_loses_nothing_accepted(slack):
    thread_ts = await start_session(slack)
    provider = slack.stack.provider
    slack.stack.service.queues.limit = 2
    provider.talk_gate = asyncio.Event()
    (record,) = await slack.stack.service.open_sessions()
    for text in ("one", "two"):
        await within(slack.thread_message(text, thread_ts))
    await eventually(lambda: _true(slack.stack.service.queues.waiting(record.id) == 2))
    status, _ = await within(slack.thread_message("three", thread_ts, user="U2"))
    assert status == 200
    await slack.fake.wait_for("chat.postEphemeral", 2)  # the 1st is the start's probe
    note = slack.fake.called("chat.postEphemeral")[-1].params
    assert note["user"] == "U2" and note["thread_ts"] == thread_ts
    assert "Ava is still busy with 2 messages; wait a moment" in note["text"]
    provider.talk_gate.set()
    await eventually(lambda: _true(provider.called("ask") == ["one", "two"]))
    # once the queue has room again, the next message goes through
    await within(slack.thread_message("three again", thread_ts, user="U2"))
    await eventually(lambda: _true(provider.called("ask") == ["one", "two", "three again"]))


async def _true(value: bool) -> bool:
    return value


async def test_a_flood_on_one_thread_is_all_acked_and_every_message_is_sent_in_order_or_refused(
        slack):
    """Far more messages than the session's queue holds, into one thread, while the vendor is
    held and with one look-up at a time through the intake: every delivery gets its 200, and
    each message either reaches the vendor, in the order it was sent, or its writer is told
    plainly that the avatar is busy. None vanishes."""
    thread_ts = await start_session(slack)
    provider = slack.stack.provider
    slack.stack.service.queues.limit = 3
    slack.adapter.intake = Intake(limit=1)  # the backlog waits for look-up slots too
    provider.talk_gate = asyncio.Event()
    writers = [f"UF{i:02d}" for i in range(24)]
    for user in writers:
        slack.fake.add_user(user)
    texts = [f"flood {i}" for i in range(len(writers))]

    # The first wave while the vendor holds the first question: sent one after another (so
    # their order is the order Slack delivered them), each acknowledged before the next.
    for text, user in zip(texts[:12], writers[:12], strict=True):
        status, _ = await within(slack.thread_message(text, thread_ts, user=user))
        assert status == 200
    assert not provider.talk_gate.is_set()
    await eventually(lambda: _true(len(_busy_notes(slack)) == 12 - 3), within=20)
    provider.talk_gate.set()
    # The second wave with the vendor answering: all at once.
    statuses = await within(asyncio.gather(*(
        slack.thread_message(text, thread_ts, user=user)
        for text, user in zip(texts[12:], writers[12:], strict=True))))
    assert [status for status, _ in statuses] == [200] * 12

    def settled() -> bool:
        asked, told = provider.called("ask"), {n["user"] for n in _busy_notes(slack)}
        return all((text in asked) != (user in told) for text, user in zip(texts, writers,
                                                                           strict=True))

    await eventually(lambda: _true(settled()), within=20)
    asked = provider.called("ask")
    assert asked[:3] == texts[:3]  # the first wave: the queue's three, in order
    assert len(asked) == len(set(asked))  # nothing sent twice
    busy = {n["user"] for n in _busy_notes(slack)}
    assert busy >= set(writers[3:12])
    for note in _busy_notes(slack):
        assert note["thread_ts"] == thread_ts
        assert "Ava is still busy with 3 messages; wait a moment and send this again." in (
            note["text"])
    # every message that reached the vendor has its reaction; nothing else was said
    await eventually(lambda: _true(len(slack.fake.called("reactions.add")) == len(asked)))
    assert len(asked) + len(busy) == len(texts)
    assert slack.adapter.intake.waiting() == 0 and not slack.adapter.turns


def _busy_notes(slack) -> list[dict]:
    return [c.params for c in slack.fake.called("chat.postEphemeral")
            if "still busy" in str(c.params.get("text"))]


async def test_a_command_is_acked_even_when_its_checks_are_stalled_and_answers_later(
        make_slack, fake_slack):
    """A slash command whose checks wait (a fresh process asking Slack who the bot is, Slack
    slow to answer) still gets its 200 in time; its answer follows through the response_url."""
    first = await make_slack()
    await start_session(first)
    fake_slack.stalled["auth.test"] = asyncio.Event()
    fresh = await make_slack()
    answers = len(fake_slack.responses)
    status, _ = await within(fresh.command("credits", key="late"))
    assert status == 200
    assert not fake_slack.stalled["auth.test"].is_set()  # answered while the check waited
    fake_slack.stalled["auth.test"].set()
    await eventually(lambda: _true(len(fake_slack.responses) > answers), within=10)
    key, answer = fake_slack.responses[-1]
    assert key == "late" and "credits available" in answer["text"]
