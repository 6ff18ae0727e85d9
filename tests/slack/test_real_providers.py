"""The Slack flow with the built-in local avatar, and with A2E behind its fake vendor server."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from bot.core.events import EventHub
from bot.core.links import ViewerLinks
from bot.core.models import Pricing, SessionState
from bot.core.service import SessionService
from bot.providers.a2e import A2EProvider
from bot.providers.local import LocalProvider
from bot.storage.sqlite import SqliteStore
from tests.fakes.a2e import FakeA2E
from tests.slack.conftest import LINK_SECRET, TEAM, Stack, eventually

PRICING = Pricing(credits_per_minute=2, granularity_s=60, minimum_s=60)
TENANT = f"slack:{TEAM}"
LINDA = "a2e:676e1f054c86ff839eae2cc3"


@pytest.fixture
async def stack(request, tmp_path):
    """Overrides the conftest stack: the service runs one real provider."""
    store = await SqliteStore.open(tmp_path / "t.db")
    hub = EventHub()
    async with httpx.AsyncClient() as http, FakeA2E() as vendor:
        if request.param == "local":
            provider = LocalProvider(events=hub, pricing=PRICING)
        else:
            provider = A2EProvider(api_key=SecretStr(vendor.api_key), http=http, events=hub,
                                   pricing=PRICING, base_url=vendor.url, timeout_s=2.0)
        service = SessionService(store=store, providers={request.param: provider}, events=hub)
        result = Stack(store, hub, provider, service, ViewerLinks(LINK_SECRET, "http://v.test"))
        result.vendor = vendor
        yield result
        await provider.aclose()
    await store.close()


def thread_texts(slack, ts: str) -> list[str]:
    return [c.params["text"] for c in slack.fake.in_thread(ts)]


@pytest.mark.parametrize("stack", ["local"], indirect=True)
async def test_local_avatar(slack, stack):
    await stack.store.grant(TENANT, 100, "test")
    await slack.command("start 3")
    (anchor,) = await slack.fake.wait_for("chat.postMessage")
    assert "(Local avatar)" in anchor.params["blocks"][0]["text"]["text"]
    ts = anchor.result["ts"]
    await slack.command("context Our shop opens at nine in the morning. We sell bicycles.")
    (told,) = await slack.fake.wait_for_response(1)
    assert "answers from your text" in told["text"]
    await slack.thread_message("When does the shop open?", ts)

    async def answered() -> bool:
        return any("nine in the morning" in t for t in thread_texts(slack, ts))

    await eventually(answered, within=10)
    (record,) = await stack.service.open_sessions(TENANT)
    await slack.action("avatar_stop", record.id, message_ts=ts)

    async def summarised() -> bool:
        return any("ended after" in t for t in thread_texts(slack, ts))

    await eventually(summarised)
    assert (await stack.service.get(record.id)).state is SessionState.ENDED
    assert (await stack.store.balance(TENANT)).settled == 2
    assert await stack.store.verify() == []


@pytest.mark.parametrize("stack", ["a2e"], indirect=True)
async def test_a2e_vendor(slack, stack):
    vendor = stack.vendor
    await stack.store.grant(TENANT, 100, "test")
    await slack.command(f"start {LINDA} 2")
    (anchor,) = await slack.fake.wait_for("chat.postMessage")
    assert "*Linda* (A2E)" in anchor.params["blocks"][0]["text"]["text"]
    ts = anchor.result["ts"]
    (record,) = await stack.service.open_sessions(TENANT)
    room = vendor.rooms[record.provider_session_id]

    await slack.thread_message("What is the capital of France?", ts)
    await slack.fake.wait_for("reactions.add")
    assert room.asked == ["What is the capital of France?"]
    # A2E's answer text arrives on the viewer's data channel; the page hands it to the service
    for message in vendor.viewer_messages.pop(record.provider_session_id, []):
        await stack.service.viewer_data(record.id, message)

    async def answered() -> bool:
        return any("You asked: What is the capital of France?" in t
                   for t in thread_texts(slack, ts))

    await eventually(answered)
    await slack.thread_message("!say Welcome to the shop", ts)
    await slack.fake.wait_for("reactions.add", 2)
    assert room.spoken == ["Welcome to the shop"]

    await slack.action("avatar_stop", record.id, message_ts=ts)
    await slack.fake.wait_for("chat.update")
    assert room.left and vendor.open_rooms() == []
    assert (await stack.service.get(record.id)).state is SessionState.ENDED
    assert await stack.store.verify() == []
