"""Through the real slack-bolt app with signed requests and the fake Slack Web API: LiveAvatar end
to end, and an AKool session that AKool closes on its own.

No browser runs here: the viewer page's part for LiveAvatar (publishing relayed
``agent-control`` commands into the LiveKit room, forwarding ``agent-response`` events) is played
by ``PageStandIn`` (``tests/discord/test_vendor_sessions.py``), which checks each handoff's topic
and shape first.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import SecretStr

from bot.core.events import EventHub
from bot.core.links import ViewerLinks
from bot.core.models import Pricing, SessionState
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from bot.providers.akool import AKoolProvider
from bot.providers.liveavatar import LiveAvatarProvider
from bot.storage.sqlite import SqliteStore
from tests.discord.test_vendor_sessions import LA_AVATAR, LA_PRICING, PageStandIn
from tests.fakes.akool import FakeAKool
from tests.fakes.liveavatar import FakeLiveAvatar
from tests.slack.conftest import LINK_SECRET, TEAM, Stack, eventually

TENANT = f"slack:{TEAM}"
PER_SECOND = Pricing(credits_per_minute=60, granularity_s=1, minimum_s=0)


@pytest.fixture
async def stack(request, tmp_path):
    """Overrides the conftest stack: the service runs one real provider behind its fake."""
    store = await SqliteStore.open(tmp_path / "t.db")
    hub = EventHub()
    fake_cls = {"akool": FakeAKool, "liveavatar": FakeLiveAvatar}[request.param]
    async with httpx.AsyncClient() as http, fake_cls() as vendor:
        if request.param == "akool":
            provider = AKoolProvider(api_key=SecretStr(vendor.api_key), http=http, events=hub,
                                     pricing=PER_SECOND, base_url=vendor.url, timeout_s=2.0,
                                     status_interval_s=0.0)
        else:
            provider = LiveAvatarProvider(api_key=SecretStr(vendor.api_key), http=http,
                                          events=hub, pricing=LA_PRICING, base_url=vendor.url,
                                          timeout_s=2.0)
        service = SessionService(store=store, providers={request.param: provider}, events=hub)
        result = Stack(store, hub, provider, service, ViewerLinks(LINK_SECRET, "http://v.test"))
        result.vendor = vendor
        yield result
        await provider.aclose()
    await store.close()


def thread_texts(slack, ts: str) -> list[str]:
    return [c.params["text"] for c in slack.fake.in_thread(ts)]


@pytest.mark.parametrize("stack", ["liveavatar"], indirect=True)
async def test_liveavatar_end_to_end(slack, stack):
    vendor = stack.vendor
    await stack.store.grant(TENANT, 100, "test")
    await slack.command(f"start liveavatar:{LA_AVATAR} 3")
    (anchor,) = await slack.fake.wait_for("chat.postMessage")
    ts = anchor.result["ts"]
    (record,) = await stack.service.open_sessions(TENANT)
    session = vendor.sessions[record.provider_session_id]
    # the anchor's viewer link is signed for exactly this session
    urls = [e.get("url") for b in anchor.params["blocks"] for e in b.get("elements", [])
            if isinstance(e, dict) and e.get("url")]
    claims = [stack.links.verify(u.rsplit("/v/", 1)[1]) for u in urls if "/v/" in u]
    assert claims and all(c is not None and c.session_id == record.id for c in claims)

    async with PageStandIn(stack.service, vendor) as page:
        await slack.thread_message("!say Welcome to the shop", ts)
        await eventually(lambda: _true(session.said == ["Welcome to the shop"]))
        await slack.thread_message("When are you open?", ts)
        await eventually(lambda: _true(session.asked == ["When are you open?"]))

        async def answered() -> bool:
            return any("You asked: When are you open?" in t for t in thread_texts(slack, ts))

        await eventually(answered)
        assert [m["event_type"] for m in page.relayed] == [
            "avatar.speak_text", "avatar.speak_response"]
        await slack.command("interrupt")
        await eventually(lambda: _true(session.interrupts == 1))

    await slack.action("avatar_stop", record.id, message_ts=ts)

    async def summarised() -> bool:
        return any("ended after" in t for t in thread_texts(slack, ts))

    await eventually(summarised)
    final = await stack.service.get(record.id)
    assert final.state is SessionState.ENDED and final.settled == 2
    summary = [t for t in thread_texts(slack, ts) if "ended after" in t][-1]
    assert "Credits used: 2 (reserved 6, returned 4)" in summary
    assert vendor.open_sessions() == []
    assert await stack.store.verify() == []


@pytest.mark.parametrize("stack", ["akool"], indirect=True)
async def test_akool_closing_the_session_tells_the_thread(slack, stack):
    vendor = stack.vendor
    await stack.store.grant(TENANT, 1000, "test")
    await slack.command("start dvp_Tristan_cloth2_1080P 2")
    (anchor,) = await slack.fake.wait_for("chat.postMessage")
    ts = anchor.result["ts"]
    (record,) = await stack.service.open_sessions(TENANT)
    reaper = SessionReaper(stack.service, orphan_sweep_s=3600)
    await asyncio.sleep(1.1)
    await reaper.tick()  # AKool's detail says processing: still live
    assert (await stack.service.get(record.id)).state is SessionState.LIVE
    vendor.end_session(record.provider_session_id, status=3)
    await asyncio.sleep(1.5)
    await reaper.tick()

    async def told() -> bool:
        return any("AKool closed the session" in t for t in thread_texts(slack, ts))

    await eventually(told)
    final = await stack.service.get(record.id)
    assert final.state is SessionState.ENDED
    assert final.started_at is not None and final.ending_at is not None
    used = (final.ending_at - final.started_at).total_seconds()
    assert 1.0 <= used < 1.6  # the last time AKool said it was open, not when we noticed
    assert final.settled == PER_SECOND.cost(used)
    assert await stack.store.verify() == []


async def _true(value: bool) -> bool:
    return value
