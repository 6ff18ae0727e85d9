"""A vendor that answers its success envelope with ``data`` of the wrong shape: every call becomes
a typed ``ProviderError`` (never an AttributeError/TypeError/ValidationError), and the reaper,
which lists vendor sessions at startup, keeps running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.core.errors import ProviderError
from bot.core.events import EventHub
from bot.core.reaper import SessionReaper
from bot.core.service import SessionService
from bot.providers.a2e import A2EProvider
from bot.providers.akool import AKoolProvider
from bot.providers.heygen import HeyGenProvider
from bot.providers.liveavatar import LiveAvatarProvider
from bot.storage import SqliteStore
from tests.fakes.serve import serve_local
from tests.providers.conftest import FAST_RETRY, PRICING

# What each vendor calls success; ``data`` is then filled with garbage.
OK_CODE = {"a2e": 0, "akool": 1000, "heygen": 100, "liveavatar": 100}
GARBAGE = ["a string", 7, ["a", 1, None], {"result": 5, "sessions": 5, "data": "x"},
           [{"no_id": True}], {"result": [{"no_id": True}]}]


@asynccontextmanager
async def garbage_vendor(vendor: str, data: Any) -> AsyncIterator[str]:
    """A real HTTP server that answers every request with ``{code: ok, data: <garbage>}``."""
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"code": OK_CODE[vendor], "msg": "OK", "data": data})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner, port = await serve_local(app, access_log=None)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def adapter(vendor: str, url: str, http: httpx.AsyncClient, events: EventHub) -> Any:
    kw = {"api_key": SecretStr("garbage-test-key-123"), "http": http, "events": events,
          "pricing": PRICING, "base_url": url, "timeout_s": 2.0, "retry": FAST_RETRY}
    return {"a2e": A2EProvider, "akool": AKoolProvider, "heygen": HeyGenProvider,
            "liveavatar": LiveAvatarProvider}[vendor](**kw)


@pytest.mark.parametrize("data", GARBAGE, ids=lambda d: type(d).__name__ + str(len(str(d))))
@pytest.mark.parametrize("vendor", ["a2e", "akool", "heygen", "liveavatar"])
async def test_wrongly_shaped_answers_are_typed_errors(vendor: str, data: Any) -> None:
    async with garbage_vendor(vendor, data) as url, httpx.AsyncClient() as http:
        prov = adapter(vendor, url, http, EventHub())
        calls = [prov.list_avatars]
        if prov.capabilities.lists_sessions:
            calls.append(prov.list_open_sessions)
        for call in calls:
            try:
                result = await call()
            except ProviderError as exc:
                assert "garbage-test-key" not in exc.user_message
            else:
                assert isinstance(result, list)  # garbage may also read as "nothing there"


@pytest.mark.parametrize("vendor", ["akool", "heygen", "liveavatar"])
async def test_reaper_starts_when_a_vendor_lists_garbage(vendor: str, tmp_path: Any) -> None:
    store = await SqliteStore.open(tmp_path / "r.db")
    try:
        async with garbage_vendor(vendor, "not a list") as url, httpx.AsyncClient() as http:
            events = EventHub()
            service = SessionService(store=store, providers={vendor: adapter(vendor, url, http,
                                                                             events)},
                                     events=events)
            reaper = SessionReaper(service, interval_s=0.05)
            await reaper.reconcile()  # what ``run`` does first, in the process's TaskGroup
            assert await reaper.sweep_orphans(force=True) == []
    finally:
        await store.close()


@pytest.mark.parametrize("data", GARBAGE, ids=lambda d: type(d).__name__ + str(len(str(d))))
@pytest.mark.parametrize("vendor", ["a2e", "akool", "heygen", "liveavatar"])
async def test_a_start_answered_with_garbage_is_a_typed_error(vendor: str, data: Any) -> None:
    from bot.core.models import StartRequest

    async with garbage_vendor(vendor, data) as url, httpx.AsyncClient() as http:
        prov = adapter(vendor, url, http, EventHub())
        request = StartRequest(session_id="s1", avatar_id="av-1", duration_s=300,
                               knowledge="We sell tea.")
        with pytest.raises(ProviderError) as info:
            await prov.start(request)
        assert "garbage-test-key" not in info.value.user_message


@pytest.mark.parametrize("vendor", ["a2e", "akool", "heygen", "liveavatar"])
async def test_a_body_nested_too_deep_for_json_is_a_typed_error(vendor: str) -> None:
    # json.loads raises RecursionError (not ValueError) on "[[[[...": it escaped as a bug.
    deep = b"[" * 100_000 + b"]" * 100_000

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=deep, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner, port = await serve_local(app, access_log=None)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            prov = adapter(vendor, url, http, EventHub())
            with pytest.raises(ProviderError) as info:
                await prov.list_avatars()
            assert "could not read" in info.value.user_message
    finally:
        await runner.cleanup()


async def test_an_llm_answer_nested_too_deep_is_an_llm_error() -> None:
    from bot.providers.local.answer import ChatClient, LLMConfig, LLMError

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner, port = await serve_local(app, access_log=None)
    try:
        async with httpx.AsyncClient() as http:
            chat = ChatClient(LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m"), http)
            with pytest.raises(LLMError):  # the local avatar then answers from its notes
                await chat.answer("We sell tea.", "what do you sell?")
    finally:
        await runner.cleanup()
