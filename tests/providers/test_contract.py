"""The same scenarios against every adapter and its fake vendor server."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from bot.core.errors import (
    InvalidRequest,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from bot.core.models import ProviderSession, ViewerInfo, utcnow
from bot.core.provider import AvatarProvider
from tests.providers.conftest import (
    FAST_RETRY,
    LIST_PATH_BY_CASE,
    START_PATH_BY_CASE,
    Case,
    build,
)

START_PATH = START_PATH_BY_CASE
LIST_PATH = LIST_PATH_BY_CASE


async def wait_for(check, timeout_s: float = 3.0) -> None:
    """Wait until ``check()`` holds (for what travels over a socket)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "the vendor never saw it"
        await asyncio.sleep(0.01)


def orphan_view(case: Case, vendor_id: str) -> ProviderSession:
    """What the reaper builds for a vendor session it only knows by id."""
    return ProviderSession(
        session_id=f"orphan-{vendor_id}", provider=case.provider.name,
        provider_session_id=vendor_id,
        viewer=ViewerInfo(transport=case.provider.capabilities.transport),
        expires_at=utcnow() + timedelta(seconds=1),
    )


async def test_the_adapter_implements_the_provider_protocol(case: Case) -> None:
    assert isinstance(case.provider, AvatarProvider)
    assert case.provider.name == case.name.split("-")[0]


async def test_avatars_are_listed_without_unavailable_ones(case: Case) -> None:
    avatars = await case.provider.list_avatars()
    ids = [a.id for a in avatars]
    assert case.avatar_id in ids
    assert "dvp_Old" not in ids and "Retired_1" not in ids
    assert all(a.provider == case.provider.name and a.name for a in avatars)


async def test_start_books_a_vendor_session_and_gives_the_viewer_what_it_needs(case: Case) -> None:
    before = utcnow()
    ps = await case.start(duration_s=420)
    assert ps.provider_session_id in case.open_vendor_ids()
    assert timedelta(seconds=419) < ps.expires_at - before < timedelta(seconds=425)
    viewer = ps.viewer
    assert viewer.transport == case.provider.capabilities.transport
    if viewer.transport == "agora":
        assert viewer.app_id and viewer.channel and viewer.token and viewer.uid is not None
    elif viewer.transport == "livekit":
        assert viewer.url and viewer.token
    else:
        assert viewer.ice_servers and viewer.token is None
    # The handle survives a restart: JSON-safe, and holds ids, not the key.
    assert case.fake.api_key not in json.dumps(ps.handle)
    assert case.fake.api_key not in ps.model_dump_json()
    body = case.fake.calls(START_PATH[case.name])[-1].json
    duration_field = {"a2e": "expire_seconds", "akool": "duration",
                      "liveavatar": "max_session_duration"}.get(case.name)
    if duration_field:
        assert body[duration_field] == 420
    else:
        assert body["avatar_id"] == case.avatar_id
        assert body.get("version") == ("v2" if case.name == "heygen-livekit" else None)


async def test_say_reaches_the_vendor_word_for_word_and_is_the_avatars_line(case: Case) -> None:
    ps = await case.start()
    await case.provider.say(ps, "Hello there, 世界 👋")
    assert case.said(ps) == ["Hello there, 世界 👋"]
    lines = case.transcripts(ps.session_id, "avatar")
    assert [t.text for t in lines] == ["Hello there, 世界 👋"]


async def test_the_answer_to_a_question_comes_back_as_the_avatars_transcript(case: Case) -> None:
    ps = await case.start()
    await case.provider.ask(ps, "What is the capital of France?")
    assert case.asked(ps) == ["What is the capital of France?"]
    decoded = []
    for message in case.viewer_messages(ps):
        decoded += case.provider.decode_viewer_data(ps, message)
    finals = [t for t in decoded if t.final and t.speaker == "avatar"]
    assert [t.text for t in finals] == ["You asked: What is the capital of France?."]
    assert all(t.session_id == ps.session_id for t in decoded)


async def test_decoding_ignores_what_is_not_a_vendor_message(case: Case) -> None:
    ps = await case.start()
    for junk in (b"\xff\xfe", "not json", 42, {"type": "unknown"}, [], None):
        assert case.provider.decode_viewer_data(ps, junk) == []


async def test_interrupt_works_where_supported_and_says_so_clearly_where_not(case: Case) -> None:
    ps = await case.start()
    if not case.provider.capabilities.interrupt:
        before = len(case.fake.requests)
        with pytest.raises(InvalidRequest, match="cannot be interrupted"):
            await case.provider.interrupt(ps)
        assert len(case.fake.requests) == before
        return
    await case.provider.interrupt(ps)
    if case.name == "akool":
        case.pump()
        assert case.fake.channel(ps.provider_session_id).commands[-1] == {"cmd": "interrupt"}
        acks = [t for m in case.viewer_messages(ps)
                for t in case.provider.decode_viewer_data(ps, m)]
        assert [t.text for t in acks] == ["The avatar stopped speaking."]
    elif case.name == "liveavatar":
        case.pump()  # over the socket when it is open, else relayed: the avatar counts it once
        await wait_for(lambda: case.fake.sessions[ps.provider_session_id].interrupts == 1)
    else:
        assert case.fake.sessions[ps.provider_session_id].interrupts == 1


async def test_knowledge_given_at_start_reaches_the_vendor(case: Case) -> None:
    ps = await case.start(knowledge="Our shop opens at 9 and closes at 17.")
    vid = ps.provider_session_id
    if case.name == "a2e":
        assert case.fake.rooms[vid].qa_context == "Our shop opens at 9 and closes at 17."
    elif case.name == "akool":
        kid = case.fake.sessions[vid].knowledge_id
        assert case.fake.knowledge[kid]["prompt"] == "Our shop opens at 9 and closes at 17."
    elif case.name == "liveavatar":
        cid = case.fake.sessions[vid].context_id
        assert case.fake.contexts[cid]["prompt"] == "Our shop opens at 9 and closes at 17."
    else:
        assert case.fake.sessions[vid].body["knowledge_base"].startswith("Our shop opens")
    await case.provider.ask(ps, "When do you open?")
    answer = [t for m in case.viewer_messages(ps) for t in case.provider.decode_viewer_data(ps, m)]
    assert answer and answer[-1].final


async def test_set_context_replaces_knowledge_or_refuses_clearly(case: Case) -> None:
    ps = await case.start()
    if not case.provider.capabilities.set_context:
        with pytest.raises(InvalidRequest, match="only when the session starts"):
            await case.provider.set_context(ps, "New facts.")
        return
    await case.provider.set_context(ps, "New facts.")
    assert case.fake.rooms[ps.provider_session_id].qa_context == "New facts."


async def test_keep_alive_reaches_the_vendor_where_it_has_an_idle_timeout(case: Case) -> None:
    ps = await case.start()
    before = len(case.fake.requests)
    await case.provider.keep_alive(ps)
    interval = case.provider.capabilities.keep_alive_interval_s
    if interval is None:
        assert len(case.fake.requests) == before
    else:
        assert interval <= 90  # HeyGen closes idle sessions after 120 s, LiveAvatar after 300
        assert case.fake.sessions[ps.provider_session_id].keep_alives == 1


async def test_stopping_twice_succeeds_and_closes_the_vendor_session(case: Case) -> None:
    ps = await case.start()
    await case.provider.stop(ps)
    await case.provider.stop(ps)
    assert ps.provider_session_id not in case.open_vendor_ids()


async def test_a_session_known_only_by_its_vendor_id_can_be_stopped(case: Case) -> None:
    ps = await case.start()
    await case.provider.stop(orphan_view(case, ps.provider_session_id))
    assert ps.provider_session_id not in case.open_vendor_ids()


async def test_stopping_a_session_the_vendor_never_had_counts_as_stopped(case: Case) -> None:
    await case.provider.stop(orphan_view(case, "no-such-session"))


async def test_open_sessions_are_listed_so_orphans_can_be_reaped(case: Case) -> None:
    if not case.provider.capabilities.lists_sessions:
        assert await case.provider.list_open_sessions() is None
        return
    ours = await case.start()
    orphan = case.fake.add_session()
    listed = await case.provider.list_open_sessions()
    assert set(listed) == {ours.provider_session_id, orphan}
    await case.provider.stop(orphan_view(case, orphan))
    assert await case.provider.list_open_sessions() == [ours.provider_session_id]


async def test_a_wrong_key_is_an_auth_error_that_is_not_retried(case: Case, http) -> None:
    provider = build(case.name, case.fake, http, case.events, key="wrong-key-123")
    with pytest.raises(ProviderAuthError) as err:
        await provider.list_avatars()
    assert not err.value.retryable
    assert len(case.fake.calls(LIST_PATH[case.name])) == 1
    assert "wrong-key-123" not in str(err.value) and "wrong-key-123" not in repr(err.value)
    assert err.value.user_message == (
        f"The {case.provider.display_name} account key was refused; an operator must fix it.")


GENERIC_FAULTS = [
    ("500", ProviderUnavailable, True),
    ("503", ProviderUnavailable, True),
    ("429", ProviderUnavailable, True),
    ("malformed", ProviderUnavailable, True),
    ("timeout", ProviderUnavailable, True),
]


@pytest.mark.parametrize(("kind", "error", "retryable"), GENERIC_FAULTS)
async def test_a_failing_vendor_gives_a_typed_error_after_bounded_retries(
    case: Case, kind: str, error: type[ProviderError], retryable: bool
) -> None:
    case.fake.fail(kind, times=10, path=LIST_PATH[case.name])
    with pytest.raises(error) as err:
        await case.provider.list_avatars()
    assert err.value.retryable is retryable
    assert len(case.fake.calls(LIST_PATH[case.name])) == FAST_RETRY.attempts
    if kind == "timeout":
        assert "did not answer in time" in err.value.user_message


async def test_a_retryable_failure_followed_by_success_is_retried(case: Case) -> None:
    case.fake.fail("503", times=1, path=LIST_PATH[case.name])
    assert await case.provider.list_avatars()
    assert len(case.fake.calls(LIST_PATH[case.name])) == 2


VENDOR_FAULTS = {
    "a2e": [("occupied", ProviderUnavailable, True, "no free capacity"),
            ("no_coins", ProviderRejected, False, "out of coins")],
    "akool": [("1006", ProviderRejected, False, "out of quota"),
              ("1104", ProviderRejected, False, "out of credits"),
              ("1215", ProviderUnavailable, True, "no free capacity"),
              ("1216", ProviderRejected, False, "does not exist")],
    "liveavatar": [("credits", ProviderRejected, False, "out of credits"),
                   ("concurrent", ProviderRejected, False, "concurrent sessions"),
                   ("avatar", ProviderRejected, False, "avatar does not exist"),
                   ("422", ProviderRejected, False, "refused the request's parameters")],
    "heygen-livekit": [("400112", ProviderRejected, False, "refused this avatar"),
                       ("10013", ProviderRejected, False, "avatar does not exist"),
                       ("concurrent", ProviderRejected, False, "concurrent sessions")],
}


async def test_vendor_error_codes_become_typed_errors_people_understand(case: Case) -> None:
    for kind, error, retryable, text in VENDOR_FAULTS[case.name]:
        before = len(case.fake.calls(START_PATH[case.name]))
        case.fake.fail(kind, times=10, path=START_PATH[case.name])
        with pytest.raises(error) as err:
            await case.provider.start(case.request())
        case.fake.clear_faults()
        assert err.value.retryable is retryable, kind
        assert text in err.value.user_message, kind
        calls = len(case.fake.calls(START_PATH[case.name])) - before
        never_retried = case.name.startswith("heygen")  # streaming.new is single-use
        assert calls == (FAST_RETRY.attempts if retryable and not never_retried else 1), kind
    assert case.open_vendor_ids() == []


async def test_a_start_refused_for_capacity_then_accepted_is_retried(case: Case) -> None:
    if case.name.startswith("heygen"):
        pytest.skip("streaming.new is never retried: a session token allows one call")
    if case.name == "liveavatar":
        pytest.skip("LiveAvatar documents no retryable capacity refusal (only 429, tested apart)")
    kind = {"a2e": "occupied", "akool": "1215"}[case.name]
    case.fake.fail(kind, times=1, path=START_PATH[case.name])
    ps = await case.start()
    assert case.open_vendor_ids() == [ps.provider_session_id]
    assert len(case.fake.calls(START_PATH[case.name])) == 2
