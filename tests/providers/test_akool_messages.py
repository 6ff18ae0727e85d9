"""AKool data-channel messages: chunking, pacing, mode switches and decoding."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.core.errors import InvalidRequest
from bot.core.events import EventHub
from bot.core.models import ProviderSession, ViewerInfo, utcnow
from bot.core.relay import RelayOutboxFull
from bot.providers.akool import AKoolProvider
from bot.providers.akool_wire import (
    BYTES_PER_SECOND,
    MAX_CHUNK_BYTES,
    chunk_chat,
    encoded_size,
)
from tests.fakes.akool import DataChannel
from tests.providers.conftest import PRICING, Case

# Text that stresses the byte budget: 4-byte emoji, 3-byte CJK, characters JSON must escape.
hard_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.sampled_from("👋🏽👨‍👩‍👧‍👦中文字漢字한국어\"\\\n\t\x00\x1f"),
    ),
    min_size=1,
    max_size=3000,
)


def page_bytes(message: dict) -> bytes:
    """What the viewer page sends: JSON.stringify then UTF-8."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


@given(hard_text)
@settings(max_examples=300, deadline=None)
def test_any_text_splits_into_chunks_of_at_most_950_bytes_that_reassemble_exactly(text):
    chunks = chunk_chat(text, "msg-1732240000000-17")
    assert all(len(page_bytes(c)) <= MAX_CHUNK_BYTES for c in chunks)
    assert all(encoded_size(c) == len(page_bytes(c)) for c in chunks)
    assert "".join(c["pld"]["text"] for c in chunks) == text
    assert [c["idx"] for c in chunks] == list(range(len(chunks)))
    assert [c["fin"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert {c["mid"] for c in chunks} == {"msg-1732240000000-17"}
    assert all(c["v"] == 2 and c["type"] == "chat" and c["pld"]["text"] for c in chunks)


@pytest.mark.parametrize("unit", ["a", "é", "中", "👋", "\n", "\x01"])
def test_twenty_kilobytes_of_one_character_fill_chunks_without_waste(unit):
    text = unit * (20_000 // len(unit.encode()))
    chunks = chunk_chat(text, "m")
    assert "".join(c["pld"]["text"] for c in chunks) == text
    assert all(len(page_bytes(c)) <= MAX_CHUNK_BYTES for c in chunks)
    # Every chunk but the last is nearly full: no more messages than needed.
    assert all(len(page_bytes(c)) > MAX_CHUNK_BYTES - 12 for c in chunks[:-1])


@given(st.lists(hard_text, min_size=1, max_size=6))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_sending_at_the_relays_pace_never_exceeds_six_kilobytes_a_second(texts):
    """The page sends what the outbox hands it, spaced by encoded size / bytes_per_second."""
    events = EventHub(queue_size=10_000)
    channel = DataChannel(mode=2)
    provider = AKoolProvider(api_key=SecretStr("k"), http=None, events=events,  # type: ignore[arg-type]
                             pricing=PRICING)
    ps = _session()
    for text in texts:
        run_now(provider.ask(ps, text))
    config = events.relay.config("s1")
    assert config is not None and 0 < config.bytes_per_second <= 6000
    at = 0.0
    events.relay.set_present("s1", True)
    while batch := events.relay.take("s1", "page"):
        for _, payload in batch:
            raw = page_bytes(payload)
            assert len(raw) <= config.max_message_bytes
            channel.send(raw, at=at)
            at += len(raw) / config.bytes_per_second
        events.relay.acked("s1", "page", [i for i, _ in batch])
        # The page reports the avatar's answers; the mode switch's ack releases the questions.
        for message in channel.outbox:
            provider.decode_viewer_data(ps, message)
        channel.outbox.clear()
    assert channel.violations == []
    assert channel.asked == texts
    assert events.relay.waiting("s1") == 0


def run_now(coro):
    """Run a coroutine that never waits (the adapter's relay methods only publish)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine waited for something")


def test_the_pace_leaves_room_for_one_whole_chunk_within_the_agora_limit():
    assert BYTES_PER_SECOND + MAX_CHUNK_BYTES <= 6000


def test_lone_surrogates_become_replacement_characters_instead_of_breaking_the_encoding():
    chunks = chunk_chat("a\ud800b\U0001F44Bc", "m")
    assert "".join(c["pld"]["text"] for c in chunks) == "a\ufffdb\U0001F44Bc"


def test_empty_text_is_refused_clearly():
    with pytest.raises(InvalidRequest, match="empty"):
        chunk_chat("", "m")


def _session() -> ProviderSession:
    return ProviderSession(session_id="s1", provider="akool", provider_session_id="v1",
                           viewer=ViewerInfo(transport="agora"),
                           expires_at=utcnow() + timedelta(minutes=5), handle={"id": "v1"})


@pytest.mark.parametrize("case", ["akool"], indirect=True)
async def test_say_and_ask_switch_the_avatar_mode_only_when_needed(case: Case):
    ps = await case.start(mode="ask")
    await case.provider.ask(ps, "First question?")
    await case.provider.say(ps, "Read this out.")
    await case.provider.say(ps, "And this.")
    await case.provider.ask(ps, "Second question?")
    case.pump()
    channel = case.fake.channel(ps.provider_session_id)
    assert channel.asked == ["First question?", "Second question?"]
    assert channel.said == ["Read this out.", "And this."]
    modes = [c["data"]["mode"] for c in channel.commands if c["cmd"] == "set-params"]
    assert modes == [1, 2]
    assert channel.violations == []
    body = case.fake.calls("/session/create")[-1].json
    assert body["mode_type"] == 2 and body["stream_type"] == "agora"


@pytest.mark.parametrize("case", ["akool"], indirect=True)
async def test_a_long_question_travels_in_chunks_and_its_answer_comes_back_whole(case):
    ps = await case.start()
    question = "Tell me about 東京 🗼 " * 300
    await case.provider.ask(ps, question)
    assert len(case.events.relay.queued(ps.session_id)) > 5
    assert case.asked(ps) == [question]
    lines = [t for m in case.viewer_messages(ps) for t in case.provider.decode_viewer_data(ps, m)]
    assert [t.text for t in lines] == [f"You asked: {question}.".strip()]


@pytest.mark.parametrize("case", ["akool"], indirect=True)
async def test_the_vendor_echo_of_a_retold_text_is_not_shown_twice(case):
    ps = await case.start(mode="say")
    case.fake.channel(ps.provider_session_id).echo_retelling = True
    await case.provider.say(ps, "Welcome everyone.")
    echoed = [t for m in case.viewer_messages(ps) for t in case.provider.decode_viewer_data(ps, m)]
    assert echoed == []
    assert [t.text for t in case.transcripts(ps.session_id, "avatar")] == ["Welcome everyone."]


def test_user_speech_and_refused_commands_are_decoded():
    events = EventHub()
    provider = AKoolProvider(api_key=SecretStr("k"), http=None, events=events,  # type: ignore[arg-type]
                             pricing=PRICING)
    ps = _session()
    user = {"v": 2, "type": "chat", "mid": "u1", "idx": 0, "fin": True,
            "pld": {"from": "user", "text": "hello avatar"}}
    [line] = provider.decode_viewer_data(ps, json.dumps(user).encode())
    assert (line.speaker, line.text) == ("user", "hello avatar")
    assert provider.decode_viewer_data(ps, {**user, "v": 1}) == []
    # After a restart the mode is unknown: a say first queues a set-params barrier.
    run_now(provider.say(ps, "Read this."))
    [(_, switch)] = events.relay.take("s1", "page")
    assert switch["pld"] == {"cmd": "set-params", "data": {"mode": 1}}
    # An acknowledgement of a command we never sent is not believed.
    forged = {"v": 2, "type": "command", "mid": "c1",
              "pld": {"cmd": "set-params", "code": 1000, "msg": "OK"}}
    assert provider.decode_viewer_data(ps, forged) == []
    assert provider.confirmed_mode("s1") is None
    # The vendor refuses the switch: the say behind it is dropped, with a notice, never sent.
    nack = {"v": 2, "type": "command", "mid": switch["mid"],
            "pld": {"cmd": "set-params", "code": 1003, "msg": "bad"}}
    assert provider.decode_viewer_data(ps, nack) == []
    assert events.relay.queued("s1") == []
    assert provider.confirmed_mode("s1") is None


@pytest.mark.parametrize("case", ["akool"], indirect=True)
async def test_sessions_longer_than_an_hour_are_refused_before_any_charge(case):
    with pytest.raises(InvalidRequest, match="at most 60 minutes"):
        await case.provider.start(case.request(duration_s=3601))
    assert case.fake.calls("/session/create") == []
    assert case.provider.capabilities.max_duration_s == 3600


@pytest.mark.parametrize("case", ["akool"], indirect=True)
async def test_a_full_outbox_refuses_the_next_message_clearly_and_keeps_the_rest(case: Case):
    ps = await case.start(mode="ask")
    case.events.relay.max_queued = 3
    await case.provider.ask(ps, "One?")
    await case.provider.ask(ps, "Two?")
    await case.provider.ask(ps, "Three?")
    with pytest.raises(RelayOutboxFull, match="3 messages are still waiting"):
        await case.provider.ask(ps, "Four?")
    assert case.asked(ps) == ["One?", "Two?", "Three?"]
    await case.provider.ask(ps, "Four?")  # room again once the page has sent them
    assert case.asked(ps)[-1] == "Four?"


@pytest.mark.parametrize("case", ["akool"], indirect=True)
async def test_with_an_echoing_avatar_a_say_shows_only_once_it_is_echoed(case: Case):
    ps = await case.start(mode="say")
    case.provider.say_echo = True
    case.fake.channel(ps.provider_session_id).echo_retelling = True
    await case.provider.say(ps, "Welcome everyone.")
    case.pump()
    assert case.transcripts(ps.session_id, "avatar") == []  # sent, but not yet heard back
    lines = [t for m in case.viewer_messages(ps) for t in case.provider.decode_viewer_data(ps, m)]
    assert [(t.speaker, t.text) for t in lines] == [("avatar", "Welcome everyone.")]
    # A second copy of the echo is not a second line.
    again = {"v": 2, "type": "chat", "mid": "x", "idx": 0, "fin": True,
             "pld": {"from": "bot", "text": "Welcome everyone."}}
    assert case.provider.decode_viewer_data(ps, again) == []
