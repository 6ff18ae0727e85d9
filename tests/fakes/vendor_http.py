"""A minimal fake vendor over real HTTP, and a provider that talks to it.

Used where a vendor must outlive the process under test (the crash test): the fake server runs
in the test process, the provider in a child process that gets killed.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import httpx
from aiohttp import web

from bot.core.errors import ProviderUnavailable
from bot.core.models import (
    AvatarInfo,
    Capabilities,
    Pricing,
    ProviderSession,
    StartRequest,
    ViewerInfo,
    utcnow,
)
from bot.core.provider import ProviderBase
from tests.fakes.serve import serve_local


class FakeVendorServer:
    """Keeps open sessions; ``hang_start`` opens the session and then never answers."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.stopped: list[str] = []
        self.hang_start = False
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeVendorServer:
        app = web.Application()
        app.add_routes([
            web.post("/start", self._start), web.post("/stop", self._stop),
            web.get("/sessions", self._list),
        ])
        self._runner, port = await serve_local(app, shutdown_timeout=0.5)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

    async def _start(self, request: web.Request) -> web.Response:
        vendor_id = f"v{next(self._ids)}"
        self.open.add(vendor_id)
        if self.hang_start:
            await asyncio.sleep(3600)
        return web.json_response({"id": vendor_id})

    async def _stop(self, request: web.Request) -> web.Response:
        vendor_id = (await request.json())["id"]
        self.open.discard(vendor_id)
        self.stopped.append(vendor_id)
        return web.json_response({"ok": True})

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"open": sorted(self.open)})


class HttpFakeProvider(ProviderBase):
    """A provider whose sessions live in a ``FakeVendorServer``."""

    name = "fakehttp"
    display_name = "Fake HTTP vendor"

    def __init__(self, base_url: str, *, survives_restart: bool) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=2.0)
        self.capabilities = Capabilities(
            transport="agora", lists_sessions=True, survives_restart=survives_restart,
            pricing=Pricing(credits_per_minute=6, granularity_s=10, minimum_s=10),
        )

    async def list_avatars(self) -> list[AvatarInfo]:
        return [AvatarInfo(id="a1", name="Ada", provider=self.name)]

    async def start(self, request: StartRequest) -> ProviderSession:
        try:
            vendor_id = (await self.http.post("/start", json={})).json()["id"]
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name) from exc
        return ProviderSession(
            session_id=request.session_id, provider=self.name, provider_session_id=vendor_id,
            viewer=ViewerInfo(transport="agora", channel=vendor_id),
            expires_at=utcnow() + timedelta(seconds=request.duration_s),
        )

    async def say(self, session: ProviderSession, text: str) -> None:
        """Nothing to do for this fake."""

    async def ask(self, session: ProviderSession, text: str) -> None:
        """Nothing to do for this fake."""

    async def interrupt(self, session: ProviderSession) -> None:
        """Nothing to do for this fake."""

    async def set_context(self, session: ProviderSession, text: str) -> None:
        """Nothing to do for this fake."""

    async def stop(self, session: ProviderSession) -> None:
        await self.http.post("/stop", json={"id": session.provider_session_id})

    async def list_open_sessions(self) -> list[str] | None:
        return (await self.http.get("/sessions")).json()["open"]

    async def aclose(self) -> None:
        await self.http.aclose()
