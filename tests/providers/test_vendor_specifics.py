"""Behaviour particular to one vendor: signalling, limits, billing, transcripts, registry."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from bot.core.errors import ConfigError, InvalidRequest, ProviderRejected, ProviderUnavailable
from bot.core.events import EventHub
from bot.providers.registry import build_vendor_providers, describe_vendors
from bot.settings import Settings, load_settings
from tests.fakes.akool import FakeAKool
from tests.fakes.heygen import FakeHeyGen
from tests.providers.conftest import Case, build


def test_raw_webrtc_heygen_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.delenv("HEYGEN_TRANSPORT", raising=False)
    with pytest.raises(ConfigError) as err:
        load_settings(_env_file=None, heygen_api_key=SecretStr("hg"), heygen_transport="webrtc")
    text = err.value.user_message
    assert "HEYGEN_TRANSPORT" in text and "2025-02-28" in text
    assert "app.liveavatar.com" in text and "LIVEAVATAR_API_KEY" in text


@pytest.mark.parametrize("case", ["heygen-livekit"], indirect=True)
async def test_livekit_start_uses_a_fresh_session_token_then_starts_the_session(case: Case):
    ps = await case.start()
    new = case.fake.calls("/streaming.new")[-1]
    token = new.headers["Authorization"].removeprefix("Bearer ")
    assert token in case.fake.tokens and "X-Api-Key" not in new.headers
    assert new.json["avatar_id"] == new.json["avatar_name"] == case.avatar_id
    assert case.fake.sessions[ps.provider_session_id].status == "connected"
    assert ps.viewer.token == case.fake.sessions[ps.provider_session_id].access_token
    assert ps.viewer.url.startswith("wss://")


@pytest.mark.parametrize("case", ["heygen-livekit"], indirect=True)
async def test_a_failed_livekit_start_stops_the_half_made_session(case: Case):
    case.fake.fail("500", times=10, path="/streaming.start")
    with pytest.raises(ProviderUnavailable):
        await case.provider.start(case.request())
    assert case.fake.open_sessions() == []
    assert len(case.fake.calls("/streaming.stop")) == 1


@pytest.mark.parametrize("case", ["heygen-livekit"], indirect=True)
async def test_heygen_server_failure_on_new_is_not_retried_and_leaves_nothing_open(case: Case):
    case.fake.fail("503", times=1, path="/streaming.new")
    with pytest.raises(ProviderUnavailable) as err:
        await case.provider.start(case.request())
    assert err.value.retryable  # the session service may try again with a new token
    assert len(case.fake.calls("/streaming.new")) == 1
    assert case.fake.open_sessions() == []


@pytest.mark.parametrize("case", ["heygen-livekit"], indirect=True)
async def test_heygen_repeat_is_echoed_once_and_user_speech_is_decoded(case: Case):
    case.fake.echo_repeat = True
    ps = await case.start()
    await case.provider.say(ps, "Good morning.")
    relayed = [t for m in case.viewer_messages(ps) for t in case.provider.decode_viewer_data(ps, m)]
    assert relayed == []  # already published when said
    assert [t.text for t in case.transcripts(ps.session_id, "avatar")] == ["Good morning."]
    user = [json.dumps({"type": "user_talking_message", "message": "hi the"}),
            json.dumps({"type": "user_talking_message", "message": "re"}),
            json.dumps({"type": "user_end_message"})]
    lines = [t for m in user for t in case.provider.decode_viewer_data(ps, m)]
    assert [(t.speaker, t.text) for t in lines] == [("user", "hi there")]


@pytest.mark.parametrize("case", ["heygen-livekit"], indirect=True)
async def test_heygen_tasks_on_a_closed_session_say_it_has_ended(case: Case):
    ps = await case.start()
    await case.provider.stop(ps)
    with pytest.raises(Exception, match="already ended"):
        await case.provider.say(ps, "Anyone?")
    assert case.fake.credits_used == pytest.approx(0.1, abs=0.01)  # 30 s minimum at 0.2/min


@pytest.mark.parametrize("case", ["a2e"], indirect=True)
async def test_a2e_knowledge_over_5000_characters_is_refused_before_calling(case: Case):
    ps = await case.start()
    with pytest.raises(InvalidRequest, match="at most 5,000 characters") as err:
        await case.provider.set_context(ps, "x" * 5001)
    assert "5,001" in err.value.user_message
    assert case.fake.calls("/set-qa-context") == []
    await case.provider.set_context(ps, "y" * 5000)
    assert case.fake.rooms[ps.provider_session_id].qa_context == "y" * 5000


@pytest.mark.parametrize("case", ["a2e"], indirect=True)
async def test_a2e_start_with_too_much_knowledge_is_refused_before_booking(case: Case):
    with pytest.raises(InvalidRequest):
        await case.provider.start(case.request(knowledge="z" * 6000))
    assert case.fake.calls("/agora-token") == []
    assert case.fake.coins == 10_000


@pytest.mark.parametrize("case", ["a2e"], indirect=True)
async def test_a2e_start_whose_knowledge_is_refused_leaves_the_room_it_booked(case: Case):
    case.fake.fail("400", path="/set-qa-context")
    with pytest.raises(ProviderRejected):
        await case.provider.start(case.request(knowledge="Opening hours: 9 to 5."))
    assert len(case.fake.rooms) == 1 and case.fake.open_rooms() == []
    assert case.fake.coins >= 10_000 - 1  # the unused pre-charge came back


@pytest.mark.parametrize("case", ["a2e"], indirect=True)
async def test_a2e_answers_grow_piece_by_piece_then_complete(case: Case):
    ps = await case.start()
    pieces = [{"type": "QA", "message": "Paris is ", "pos": "start"},
              {"type": "QA", "message": "the capital", "pos": "middle"},
              {"type": "QA", "message": ".", "pos": "end"}]
    lines = [t for p in pieces for t in case.provider.decode_viewer_data(ps, json.dumps(p))]
    assert [(t.text, t.final) for t in lines] == [
        ("Paris is ", False), ("Paris is the capital", False), ("Paris is the capital.", True)]
    [single] = case.provider.decode_viewer_data(ps, {"type": "QA", "message": "Yes."})
    assert single.final and single.text == "Yes."


@pytest.mark.parametrize("case", ["a2e", "akool"], indirect=True)
async def test_stopping_early_refunds_the_unused_pre_charge(case: Case):
    balance = "coins" if case.name == "a2e" else "credits"
    before = getattr(case.fake, balance)
    ps = await case.start(duration_s=1800)
    assert getattr(case.fake, balance) < before  # the whole window is charged up front
    await case.provider.stop(ps)
    await case.provider.stop(ps)
    refunded_to = getattr(case.fake, balance)
    assert before - refunded_to <= 1  # only the part used, charged once


async def test_akool_close_accepts_both_documented_body_forms(http):
    async with FakeAKool() as fake:
        sid = fake.add_session()
        resp = await http.post(f"{fake.url}/api/open/v4/liveAvatar/session/close",
                               json={"session_id": sid}, headers={"x-api-key": fake.api_key})
        assert resp.json()["code"] == 1000
        assert fake.open_sessions() == []


async def test_akool_stop_counts_an_already_closed_session_as_closed_either_way(http):
    for code in (1000, 1219):
        async with FakeAKool(close_closed_code=code) as fake:
            provider = build("akool", fake, http, EventHub())
            sid = fake.add_session()
            from tests.providers.test_contract import orphan_view
            view = orphan_view(Case("akool", fake, provider, EventHub(), "x"), sid)
            await provider.stop(view)
            await provider.stop(view)
            assert fake.open_sessions() == []


async def test_heygen_concurrency_limit_is_reported_not_retried(http):
    async with FakeHeyGen(max_concurrent=1) as fake:
        provider = build("heygen-livekit", fake, http, EventHub())
        case = Case("heygen-livekit", fake, provider, EventHub(), "Anna_public_3_20240108")
        await provider.start(case.request())
        with pytest.raises(Exception, match="concurrent sessions") as err:
            await provider.start(case.request())
        assert not err.value.retryable


async def test_the_registry_builds_only_vendors_with_a_key(http, monkeypatch):
    for name in ("A2E", "AKOOL", "HEYGEN"):
        monkeypatch.delenv(f"{name}_API_KEY", raising=False)
    settings = Settings(_env_file=None, akool_api_key=SecretStr("ak"),
                        heygen_api_key=SecretStr("hg"), akool_base_url="http://127.0.0.1:9/")
    providers = build_vendor_providers(settings, http, EventHub())
    assert sorted(providers) == ["akool", "heygen"]
    assert providers["heygen"].capabilities.transport == "livekit"
    assert providers["akool"].capabilities.pricing == settings.pricing("akool")
    rows = {name: (on, why) for name, on, why in describe_vendors(settings)}
    assert rows["a2e"] == (False, "set A2E_API_KEY to enable")
    # HeyGen is legacy: the banner says where it went, that a new key is needed, and how to switch.
    heygen_on, heygen_why = rows["heygen"]
    assert heygen_on and "LEGACY" in heygen_why and "LiveAvatar" in heygen_why
    assert "app.liveavatar.com" in heygen_why and "HeyGen keys do not work" in heygen_why
    assert "set LIVEAVATAR_API_KEY" in heygen_why and "unset HEYGEN_API_KEY" in heygen_why
    assert "ak" not in rows["akool"][1].replace("akool", "")


async def test_fakes_hand_out_settings_that_build_working_providers(http, monkeypatch):
    for name in ("A2E", "AKOOL", "HEYGEN"):
        monkeypatch.delenv(f"{name}_API_KEY", raising=False)
    from tests.fakes.a2e import FakeA2E

    async with FakeA2E() as a2e, FakeAKool() as akool, FakeHeyGen() as heygen:
        overrides = {**a2e.settings_overrides(), **akool.settings_overrides(),
                     **heygen.settings_overrides()}
        settings = Settings(_env_file=None, **overrides)
        providers = build_vendor_providers(settings, http, EventHub())
        assert sorted(providers) == ["a2e", "akool", "heygen"]
        for provider in providers.values():
            assert await provider.list_avatars()
