"""An in-memory avatar provider for tests of the core and the platforms.

It implements the real provider protocol, records every call, answers ``ask`` from the
knowledge text, and can be told to fail a call, hang, or refuse to stop.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

from bot.core.errors import ProviderError, ProviderUnavailable
from bot.core.events import EventHub, Transcript
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

_ids = itertools.count(1)


class FakeProvider(ProviderBase):
    """A provider that lives in memory; ``fail`` maps a method name to an error to raise."""

    def __init__(
        self,
        events: EventHub,
        *,
        name: str = "fake",
        pricing: Pricing | None = None,
        transport: str = "agora",
        survives_restart: bool = True,
        lists_sessions: bool = True,
        keep_alive_interval_s: int | None = None,
        control: str = "server",
    ) -> None:
        self.name = name
        self.display_name = name.title()
        self.events = events
        self.capabilities = Capabilities(
            transport=transport,  # type: ignore[arg-type]
            pricing=pricing or Pricing(credits_per_minute=1, granularity_s=60, minimum_s=60),
            lists_sessions=lists_sessions,
            survives_restart=survives_restart,
            keep_alive_interval_s=keep_alive_interval_s,
            control=control,  # type: ignore[arg-type]
        )
        self.calls: list[tuple[str, Any]] = []
        self.open: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, BaseException] = {}
        self.start_delay = 0.0
        self.stop_delay = 0.0
        self.list_delay = 0.0  # a slow avatar list (a vendor taking its time)
        # A stalled vendor: ask/say are recorded on arrival, then answered once this is set.
        self.talk_gate: asyncio.Event | None = None

    def _check(self, method: str, arg: Any = None) -> None:
        self.calls.append((method, arg))
        exc = self.fail.get(method)
        if exc is not None:
            raise exc

    def called(self, method: str) -> list[Any]:
        """Arguments of every call of ``method``."""
        return [arg for name, arg in self.calls if name == method]

    async def list_avatars(self) -> list[AvatarInfo]:
        self._check("list_avatars")
        if self.list_delay:
            await asyncio.sleep(self.list_delay)
        return [
            AvatarInfo(id="ava-1", name="Ava", provider=self.name),
            AvatarInfo(id="bob-2", name="Bob", provider=self.name),
        ]

    async def start(self, request: StartRequest) -> ProviderSession:
        self._check("start", request)
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        vendor_id = f"{self.name}-{next(_ids)}"
        self.open[vendor_id] = {"knowledge": request.knowledge or ""}
        return ProviderSession(
            session_id=request.session_id, provider=self.name, provider_session_id=vendor_id,
            viewer=ViewerInfo(
                transport=self.capabilities.transport, app_id="app", channel=vendor_id,
                token=f"tok-{vendor_id}", uid=7,
            ),
            expires_at=utcnow() + timedelta(seconds=request.duration_s),
            handle={"vendor_id": vendor_id},
        )

    def _session(self, ps: ProviderSession) -> dict[str, Any]:
        try:
            return self.open[ps.provider_session_id]
        except KeyError:
            raise ProviderError(self.name, "That session is closed at the vendor.") from None

    async def say(self, session: ProviderSession, text: str) -> None:
        self._check("say", text)
        if self.talk_gate is not None:
            await self.talk_gate.wait()
        self._session(session)
        self._speak(session, text)

    async def ask(self, session: ProviderSession, text: str) -> None:
        self._check("ask", text)
        if self.talk_gate is not None:
            await self.talk_gate.wait()
        knowledge = self._session(session)["knowledge"]
        self._speak(session, f"You asked: {text}. I know: {knowledge or 'nothing'}.")

    def _speak(self, session: ProviderSession, text: str) -> None:
        self.events.publish(Transcript(session_id=session.session_id, speaker="avatar", text=text))

    async def interrupt(self, session: ProviderSession) -> None:
        self._check("interrupt")
        self._session(session)

    async def set_context(self, session: ProviderSession, text: str) -> None:
        self._check("set_context", text)
        self._session(session)["knowledge"] = text

    async def keep_alive(self, session: ProviderSession) -> None:
        self._check("keep_alive", session.provider_session_id)

    async def stop(self, session: ProviderSession) -> None:
        self._check("stop", session.provider_session_id)
        if self.stop_delay:
            await asyncio.sleep(self.stop_delay)
        self.open.pop(session.provider_session_id, None)

    async def list_open_sessions(self) -> list[str] | None:
        self._check("list_open_sessions")
        return list(self.open)


def unavailable(name: str = "fake") -> ProviderUnavailable:
    """A retryable vendor failure."""
    return ProviderUnavailable(name, "The vendor has no free capacity right now.")
