"""LiveAvatar specifics: contexts, sandbox, command paths, events, vendor-ended sessions, 429s."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.core.errors import ProviderRejected, ProviderUnavailable
from bot.core.events import Ended, EventHub, StateChanged, VendorEnded
from bot.core.models import SessionState
from bot.core.reaper import SessionReaper
from bot.core.retry import RetryPolicy
from bot.core.service import SessionService, StartCommand
from bot.providers._http import retry_after
from bot.providers.liveavatar import DEFAULT_PERSONA, LiveAvatarProvider, end_reason_text
from bot.providers.registry import build_vendor_providers, describe_vendors
from bot.settings import Settings
from bot.storage import SqliteStore
from tests.fakes.liveavatar import SANDBOX_AVATAR, FakeLiveAvatar
from tests.providers.conftest import Case, build
from tests.providers.test_contract import wait_for

LA = pytest.mark.parametrize("case", ["liveavatar"], indirect=True)


def queued(case: Case, session_id: str) -> list[dict[str, Any]]:
    """What waits in the session's relay outbox for the viewer page to send."""
    return case.events.relay.queued(session_id)


def vendor_ends(case: Case) -> list[VendorEnded]:
    return [e for e in case.seen if isinstance(e, VendorEnded)]


@LA
async def test_start_takes_a_token_with_the_key_then_starts_with_the_token_only(case: Case):
    ps = await case.start()
    token_call = case.fake.calls("/sessions/token")[-1]
    start_call = case.fake.calls("/sessions/start")[-1]
    assert token_call.headers["X-API-KEY"] == case.fake.api_key
    assert token_call.json["mode"] == "FULL"
    assert "X-API-KEY" not in start_call.headers
    session = case.fake.sessions[ps.provider_session_id]
    assert start_call.headers["Authorization"] == f"Bearer {session.token}"
    # The viewer gets the client token; the agent token, the socket and the key stay here.
    assert ps.viewer.url == "wss://fake-livekit.liveavatar.test"
    assert ps.viewer.token == session.client_token
    dumped = ps.model_dump_json() + json.dumps(ps.handle)
    for secret in (session.agent_token, session.ws_token, session.token, case.fake.api_key):
        assert secret not in dumped


@LA
async def test_knowledge_becomes_a_context_and_the_context_goes_with_the_session(case: Case):
    ps = await case.start(knowledge="  We repair bikes on Saturdays.  ")
    session = case.fake.sessions[ps.provider_session_id]
    context = case.fake.contexts[session.context_id]
    assert context["prompt"] == "We repair bikes on Saturdays."
    assert ps.handle["context_id"] == session.context_id
    await case.provider.stop(ps)
    assert session.context_id not in case.fake.contexts  # no leftovers in the account


@LA
async def test_without_knowledge_a_default_persona_keeps_the_avatar_answering(case: Case):
    ps = await case.start()
    session = case.fake.sessions[ps.provider_session_id]
    assert case.fake.contexts[session.context_id]["prompt"] == DEFAULT_PERSONA
    await case.provider.ask(ps, "Are you there?")
    lines = [t for m in case.viewer_messages(ps) for t in case.provider.decode_viewer_data(ps, m)]
    assert [t.text for t in lines] == ["You asked: Are you there?."]


@LA
async def test_the_fake_ignores_questions_without_a_context_as_the_vendor_does(case: Case):
    # Guards the fake itself: the rule the adapter works around must hold there.
    vid = case.fake.add_session()
    case.fake.room(vid).publish("agent-control", json.dumps(
        {"event_type": "avatar.speak_response", "text": "hello?"}))
    assert case.fake.sessions[vid].asked == ["hello?"]
    assert case.fake.viewer_messages.get(vid, []) == []


@pytest.mark.parametrize("sandbox", [True, False])
async def test_the_sandbox_setting_is_sent_with_every_session(sandbox: bool, http):
    events = EventHub()
    async with FakeLiveAvatar() as fake:
        provider = build("liveavatar", fake, http, events, sandbox=sandbox)
        try:
            avatars = await provider.list_avatars()
            if sandbox:  # only the sandbox avatar can start a sandbox session
                assert [a.id for a in avatars] == [SANDBOX_AVATAR]
                other = Case("liveavatar", fake, provider, events, fake.user_avatars[0]["id"])
                with pytest.raises(ProviderRejected, match="only its sandbox avatar"):
                    await other.start()
            case = Case("liveavatar", fake, provider, events, avatars[0].id)
            ps = await case.start()
            assert fake.calls("/sessions/token")[-1].json["is_sandbox"] is sandbox
            await provider.stop(ps)
            assert fake.credits_used == (0 if sandbox else 2)  # FULL: 2 a minute, 1 minimum
        finally:
            await provider.aclose()


@LA
async def test_say_and_ask_are_relayed_on_agent_control_as_full_mode_commands(case: Case):
    ps = await case.start()
    await case.provider.say(ps, "Welcome!")
    await case.provider.ask(ps, "What time is it?")
    config = case.events.relay.config(ps.session_id)
    assert config is not None and config.topic == "agent-control"
    messages = queued(case, ps.session_id)
    assert [(m["event_type"], m["text"]) for m in messages] == [
        ("avatar.speak_text", "Welcome!"), ("avatar.speak_response", "What time is it?")]
    assert all(m["session_id"] == ps.provider_session_id and m["event_id"] for m in messages)
    assert case.said(ps) == ["Welcome!"] and case.asked(ps) == ["What time is it?"]
    # Text commands never go over the socket: LiveAvatar's socket protocol has none.
    assert case.fake.sessions[ps.provider_session_id].socket_received == []


@LA
async def test_interrupt_goes_over_the_socket_and_falls_back_to_the_relay(case: Case):
    ps = await case.start()
    session = case.fake.sessions[ps.provider_session_id]
    await case.provider.interrupt(ps)
    await wait_for(lambda: session.interrupts == 1)
    assert [m["type"] for m in session.socket_received] == ["agent.interrupt"]
    assert queued(case, ps.session_id) == []
    for ws in list(session.sockets):  # the socket drops (without a closed state)
        await ws.close()
    await wait_for(lambda: not session.sockets)
    await asyncio.sleep(0.05)
    await case.provider.interrupt(ps)
    assert [m["event_type"] for m in queued(case, ps.session_id)] == ["avatar.interrupt"]
    case.pump()
    assert session.interrupts == 2


@LA
async def test_transcriptions_become_lines_and_the_echo_of_a_say_is_dropped(case: Case):
    ps = await case.start()
    await case.provider.say(ps, "Hello there")
    await case.provider.ask(ps, "Who are you?")
    decoded = [t for m in case.viewer_messages(ps) for t in case.provider.decode_viewer_data(ps, m)]
    assert [(t.speaker, t.text) for t in decoded] == [("avatar", "You asked: Who are you?.")]
    user = case.provider.decode_viewer_data(ps, json.dumps(
        {"event_id": "e1", "event_type": "user.transcription", "session_id": "x",
         "source_event_id": None, "text": " Can you hear me? "}).encode())
    assert [(t.speaker, t.text) for t in user] == [("user", "Can you hear me?")]
    published = [(t.speaker, t.text) for t in case.transcripts(ps.session_id)]
    assert published == [("avatar", "Hello there")]  # say is published once, when sent


@LA
async def test_session_stopped_through_the_viewer_reports_the_vendor_end(case: Case):
    ps = await case.start()
    vid = ps.provider_session_id
    case.fake.sessions[vid].sockets.clear()  # only the page hears about it this time
    await case.fake.end_session(vid, "INSUFFICIENT_CREDITS")
    for m in case.viewer_messages(ps):
        assert case.provider.decode_viewer_data(ps, m) == []
    await asyncio.sleep(0.05)
    ended = vendor_ends(case)
    assert [(e.session_id, e.reason) for e in ended] == [
        (ps.session_id, "the LiveAvatar account ran out of credits")]


@LA
async def test_the_socket_reports_a_vendor_end_without_any_viewer(case: Case):
    case.provider.socket_end_grace_s = 0.05  # type: ignore[attr-defined]
    ps = await case.start()
    await case.fake.end_session(ps.provider_session_id, "IDLE_TIMEOUT")
    await wait_for(lambda: vendor_ends(case) != [])
    assert [(e.session_id, e.reason) for e in vendor_ends(case)] == [
        (ps.session_id, "LiveAvatar ended the session")]  # the socket tells no reason
    await case.provider.stop(ps)  # stopping what the vendor ended still succeeds


def test_end_reasons_are_plain_words_and_never_free_vendor_text():
    assert end_reason_text("SESSION_DURATION_EXCEEDED") == "it reached LiveAvatar's time limit"
    assert end_reason_text("USER_CLOSED") == "LiveAvatar ended the session (user closed)"
    assert end_reason_text("<script>alert(1)</script>") == "LiveAvatar ended the session"
    assert end_reason_text(None) == "LiveAvatar ended the session"


@LA
async def test_keep_alive_and_the_transcript_use_the_documented_calls(case: Case):
    ps = await case.start()
    await case.provider.keep_alive(ps)
    assert case.fake.calls("/sessions/keep-alive")[-1].json == {
        "session_id": ps.provider_session_id}
    await case.provider.ask(ps, "Tell me a joke")
    case.viewer_messages(ps)
    lines = await case.provider.transcript(ps)  # type: ignore[attr-defined]
    assert [(t.speaker, t.text) for t in lines] == [
        ("user", "Tell me a joke"), ("avatar", "You asked: Tell me a joke.")]


@LA
async def test_stop_sends_a_documented_reason(case: Case):
    ps = await case.start()
    await case.provider.stop(ps)
    assert case.fake.calls("/sessions/stop")[-1].json == {
        "session_id": ps.provider_session_id, "reason": "USER_CLOSED"}
    assert case.fake.sessions[ps.provider_session_id].stop_reason == "USER_CLOSED"


@LA
async def test_a_failed_start_stops_the_session_and_deletes_the_context(case: Case):
    case.fake.fail("500", times=1, path="/sessions/start")
    with pytest.raises(ProviderUnavailable):
        await case.provider.start(case.request(knowledge="facts"))
    assert len(case.fake.calls("/sessions/start")) == 1  # a session token starts once
    assert case.fake.contexts == {}
    assert case.open_vendor_ids() == []


async def test_a_429_waits_as_long_as_retry_after_says(http):
    async with FakeLiveAvatar(retry_after="1") as fake:
        policy = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=3.0, total_s=10)
        provider = build("liveavatar", fake, http, EventHub(), retry=policy)
        fake.fail("429", times=1, path="/v1/avatars")
        began = time.monotonic()
        assert await provider.list_avatars()
        assert time.monotonic() - began >= 0.95
        assert len(fake.calls("/v1/avatars")) == 2


async def test_a_long_retry_after_is_capped_by_the_retry_policy(http):
    async with FakeLiveAvatar(retry_after="120") as fake:
        policy = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.2, total_s=10)
        provider = build("liveavatar", fake, http, EventHub(), retry=policy)
        fake.fail("429", times=1, path="/v1/avatars")
        began = time.monotonic()
        assert await provider.list_avatars()
        assert 0.15 <= time.monotonic() - began < 2


@pytest.mark.parametrize(("header", "seconds"), [
    ("2", 2.0), ("0.5", 0.5), (None, None), ("Wed, 21 Oct 2026 07:28:00 GMT", None),
    ("-1", None), ("nan", None), ("99999", None)])
def test_retry_after_is_read_only_when_it_is_a_sane_number_of_seconds(header, seconds):
    assert retry_after(header) == seconds


async def test_the_key_never_reaches_a_log_line_even_with_the_socket(http, caplog):
    caplog.set_level(logging.DEBUG)
    events = EventHub()
    async with FakeLiveAvatar() as fake:
        provider = build("liveavatar", fake, http, events)
        case = Case("liveavatar", fake, provider, events, fake.user_avatars[0]["id"])
        try:
            ps = await case.start(knowledge="x")
            await provider.interrupt(ps)
            await fake.end_session(ps.provider_session_id)
            await provider.stop(ps)
        finally:
            await provider.aclose()
        for secret in [fake.api_key, *fake.issued_tokens()]:
            assert secret not in caplog.text


def test_settings_registry_and_pricing_know_liveavatar():
    settings = Settings(liveavatar_api_key=SecretStr("la-key-123456"), liveavatar_sandbox=True)
    pricing = settings.pricing("liveavatar")
    assert (pricing.credits_per_minute, pricing.granularity_s, pricing.minimum_s) == (2, 60, 60)
    assert pricing.cost(10) == 2 and pricing.cost(61) == 4
    rows = {name: (on, why) for name, on, why in describe_vendors(settings)}
    assert rows["liveavatar"][0] and "sandbox" in rows["liveavatar"][1]
    assert "la-key-123456" not in rows["liveavatar"][1]
    providers = build_vendor_providers(settings, httpx.AsyncClient(), EventHub())
    provider = providers["liveavatar"]
    assert isinstance(provider, LiveAvatarProvider) and provider.sandbox
    assert provider.capabilities.keep_alive_interval_s == 60
    assert "liveavatar" not in build_vendor_providers(Settings(), httpx.AsyncClient(), EventHub())


async def test_a_session_the_vendor_ends_is_ended_and_settled_at_once(http, tmp_path):
    """Through the real service and store: LiveAvatar ends it, the reaper ends ours."""
    store = await SqliteStore.open(tmp_path / "la.db")
    events = EventHub()
    async with FakeLiveAvatar() as fake:
        provider = build("liveavatar", fake, http, events)
        service = SessionService(store=store, providers={"liveavatar": provider}, events=events)
        reaper = SessionReaper(service, interval_s=3600)
        # ``run`` is what the process starts: it watches for vendor ends between its ticks.
        watcher = asyncio.create_task(reaper.run(reconcile_first=False))
        await asyncio.sleep(0)
        try:
            await store.grant("discord:1", 100, "admin")
            async with events.subscribe(None) as queue:
                record = await service.start(StartCommand(
                    tenant="discord:1", user="u1", provider="liveavatar",
                    avatar=fake.user_avatars[0]["id"], minutes=5))
                assert record.state is SessionState.LIVE
                await fake.end_session(record.provider_session_id, "INSUFFICIENT_CREDITS")
                # The page relays what it heard on agent-response (what web/hub.py does).
                for message in fake.viewer_messages.pop(record.provider_session_id, []):
                    assert await service.viewer_data(record.id, message) == []
                seen: list[Any] = []
                while not any(isinstance(e, Ended) for e in seen):
                    seen.append(await asyncio.wait_for(queue.get(), 5))
            # The thread learns why (the state change carries the reason), then the summary.
            assert any(isinstance(e, StateChanged) and e.state is SessionState.ENDING
                       and e.reason == "the LiveAvatar account ran out of credits" for e in seen)
            ended = await store.get_session(record.id)
            assert ended.state is SessionState.ENDED
            assert ended.end_reason == "the LiveAvatar account ran out of credits"
            assert await store.verify() == []
            assert fake.open_sessions() == []
        finally:
            watcher.cancel()
            await provider.aclose()
            await store.close()
