"""``ask``: knowledge retrieval, the OpenAI-compatible endpoint (against a fake), fallbacks."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from pydantic import SecretStr

from bot.core.errors import InvalidRequest, ProviderRejected, SessionNotLive
from bot.core.provider import AvatarProvider, WebRTCSignalling
from bot.providers.local import LLMConfig, LocalProvider
from bot.providers.local.answer import LLM_DOWN, NO_KNOWLEDGE, NOT_FOUND, clip, retrieve
from tests.fakes.llm import FakeLLM

from .conftest import PRICING, request

KNOWLEDGE = (
    "Acme Widgets was founded in 1999 in Lyon. "
    "The support desk opens at 9am and closes at 5pm on weekdays. "
    "Our flagship product is the Turbo Widget, which costs 40 euros. "
    "Returns are accepted within 30 days with a receipt."
)


async def _answer(provider, hub, ps, question: str) -> str:
    async with hub.subscribe(ps.session_id) as events:
        await provider.ask(ps, question)
        line = await asyncio.wait_for(events.get(), 5)
    assert line.speaker == "avatar"
    return line.text


def test_long_answers_are_cut_at_a_sentence_end():
    text = "This is one sentence. " * 200
    cut = clip(text, 100)
    assert len(cut) <= 100 and cut.endswith(".")
    assert clip("Short answer.") == "Short answer."


def test_retrieval_picks_the_sentence_that_matches():
    assert "9am" in retrieve(KNOWLEDGE, "When does the support desk open?")
    assert retrieve(KNOWLEDGE, "How much is the Turbo Widget?") == (
        "Our flagship product is the Turbo Widget, which costs 40 euros.")
    assert "Lyon" in retrieve(KNOWLEDGE, "Where was Acme founded?")
    assert retrieve(KNOWLEDGE, "What is the capital of Peru?") is None
    assert retrieve(None, "anything") is None


async def test_ask_answers_from_knowledge_and_set_context(provider, hub):
    ps = await provider.start(request(knowledge=KNOWLEDGE))
    text = await _answer(provider, hub, ps, "Can I get returns after a few days?")
    assert "30 days" in text
    assert await _answer(provider, hub, ps, "Who won the match?") == NOT_FOUND
    await provider.set_context(ps, "The cafeteria serves pancakes on Fridays.")
    assert "pancakes" in await _answer(provider, hub, ps, "What does the cafeteria serve?")
    await provider.set_context(ps, "")
    assert await _answer(provider, hub, ps, "What does the cafeteria serve?") == NO_KNOWLEDGE


async def test_ask_without_knowledge_or_llm_says_so(provider, hub):
    ps = await provider.start(request())
    assert await _answer(provider, hub, ps, "What is the meaning of life?") == NO_KNOWLEDGE
    with pytest.raises(InvalidRequest):
        await provider.ask(ps, "   ")
    with pytest.raises(InvalidRequest):
        await provider.say(ps, "")


async def test_ask_through_the_chat_endpoint(hub):
    async with FakeLLM(reply="We open at nine in the morning.") as fake, \
            httpx.AsyncClient() as http:
        cfg = LLMConfig(base_url=fake.base_url, model="tiny-model",
                        api_key=SecretStr(fake.api_key))
        prov = LocalProvider(events=hub, pricing=PRICING, llm=cfg, http=http)
        try:
            ps = await prov.start(request(knowledge=KNOWLEDGE))
            text = await _answer(prov, hub, ps, "When do you open?")
        finally:
            await prov.aclose()
        assert not http.is_closed  # a shared client belongs to its owner
    assert text == "We open at nine in the morning."
    [call] = fake.requests
    assert call["headers"]["Authorization"] == f"Bearer {fake.api_key}"
    body = call["body"]
    assert body["model"] == "tiny-model"
    system, user = body["messages"]
    assert system["role"] == "system" and "support desk opens at 9am" in system["content"]
    # the model speaks as the session's avatar and knows what avatarbot is
    assert "You are Ada" in system["content"] and "/avatar start" in system["content"]
    assert "LLM_BASE_URL" in system["content"]
    assert user == {"role": "user", "content": "When do you open?"}


@pytest.mark.parametrize("case", ["server_error", "wrong_key", "timeout", "unreachable"])
async def test_chat_failures_fall_back_clearly_and_never_log_the_key(hub, caplog, case):
    caplog.set_level(logging.DEBUG)
    secret = "sk-super-secret-123456"
    async with FakeLLM(api_key=secret, status=500 if case == "server_error" else 200,
                       delay=2.0 if case == "timeout" else 0.0) as fake:
        key = "sk-wrong-key-999" if case == "wrong_key" else secret
        base = "http://127.0.0.1:9/v1" if case == "unreachable" else fake.base_url
        cfg = LLMConfig(base_url=base, model="m", api_key=SecretStr(key), timeout_s=0.5)
        prov = LocalProvider(events=hub, pricing=PRICING, llm=cfg)
        try:
            ps = await prov.start(request(knowledge=KNOWLEDGE))
            text = await _answer(prov, hub, ps, "How much is the Turbo Widget?")
            plain = await _answer(prov, hub, ps, "Who are you?")
            lost = await _answer(prov, hub, ps, "Who won the match?")
        finally:
            await prov.aclose()
    assert text.startswith(LLM_DOWN) and "40 euros" in text
    # what the avatar knows without the endpoint still gets said
    assert plain.startswith(LLM_DOWN) and "I'm Ada" in plain
    assert lost == LLM_DOWN
    assert secret not in caplog.text and "sk-wrong" not in caplog.text
    assert "chat endpoint" in caplog.text
    assert secret not in repr(cfg)


async def test_unknown_avatar_and_unknown_session(provider):
    with pytest.raises(ProviderRejected, match="Ada"):
        await provider.start(request(avatar="nobody"))
    with pytest.raises(ProviderRejected, match="voice"):
        await provider.start(request(voice="no-such-voice"))
    with pytest.raises(ProviderRejected, match="voice name"):
        await provider.start(request(voice="../../../etc/passwd"))
    ps = await provider.start(request(avatar="noor", language="fr"))
    assert ps.handle["voice"].startswith("fr")
    # a language espeak-ng does not know falls back to the look's own voice
    other = await provider.start(request("s9", avatar="milo", language="tlh"))
    assert other.handle["voice"] == "en-us+m3"
    await provider.stop(ps)
    # what a restarted process sees: a session it does not know
    await provider.stop(ps)
    for call in (provider.say(ps, "hi"), provider.ask(ps, "hi"), provider.interrupt(ps),
                 provider.set_context(ps, "x")):
        with pytest.raises(SessionNotLive):
            await call


async def test_catalogue_and_capabilities(provider):
    assert isinstance(provider, AvatarProvider) and isinstance(provider, WebRTCSignalling)
    assert provider.name == "local" and provider.display_name == "Local avatar"
    avatars = await provider.list_avatars()
    assert len(avatars) >= 3 and len({a.id for a in avatars}) == len(avatars)
    assert all(a.provider == "local" and a.name for a in avatars)
    caps = provider.capabilities
    assert caps.transport == "webrtc" and caps.control == "server" and caps.multi_viewer
    assert caps.say and caps.ask and caps.interrupt and caps.set_context
    assert not caps.lists_sessions
    assert await provider.list_open_sessions() is None
