"""One ``case`` fixture per adapter + fake vendor, so the contract suite runs against each."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot.core.events import AnyEvent, EventHub, Transcript
from bot.core.models import Pricing, ProviderSession, StartRequest
from bot.core.provider import AvatarProvider
from bot.core.retry import RetryPolicy
from bot.providers._http import vendor_client
from bot.providers.a2e import A2EProvider
from bot.providers.akool import AKoolProvider
from bot.providers.heygen import HeyGenProvider
from bot.providers.liveavatar import LiveAvatarProvider
from tests.fakes.a2e import FakeA2E
from tests.fakes.akool import FakeAKool
from tests.fakes.heygen import FakeHeyGen
from tests.fakes.liveavatar import FakeLiveAvatar

FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, total_s=10)
TIMEOUT_S = 0.5
PRICING = Pricing(credits_per_minute=10, granularity_s=60, minimum_s=60)
CASES = ["a2e", "akool", "heygen-livekit", "liveavatar"]
START_PATH_BY_CASE = {"a2e": "/agora-token", "akool": "/session/create",
                      "heygen-livekit": "/streaming.new",
                      "liveavatar": "/sessions/token"}
LIST_PATH_BY_CASE = {"a2e": "/all_avatars", "akool": "/avatar/list",
                     "heygen-livekit": "/avatar.list",
                     "liveavatar": "/v1/avatars"}


@dataclass
class Case:
    """An adapter wired to its fake vendor, with vendor-neutral views of what the vendor saw."""

    name: str
    fake: Any
    provider: AvatarProvider
    events: EventHub
    avatar_id: str
    queue: asyncio.Queue[AnyEvent] | None = None
    _seen: list[AnyEvent] = field(default_factory=list)
    _clock: dict[str, float] = field(default_factory=dict)
    _vendor_ids: dict[str, str] = field(default_factory=dict)
    _sessions: dict[str, ProviderSession] = field(default_factory=dict)

    @property
    def seen(self) -> list[AnyEvent]:
        """Every event published so far."""
        while self.queue is not None and not self.queue.empty():
            self._seen.append(self.queue.get_nowait())
        return self._seen

    def request(self, **kw: Any) -> StartRequest:
        base = {"session_id": uuid.uuid4().hex, "avatar_id": self.avatar_id, "duration_s": 300}
        return StartRequest(**{**base, **kw})

    async def start(self, **kw: Any) -> ProviderSession:
        """Start a session."""
        return self.track(await self.provider.start(self.request(**kw)))

    def pump(self) -> None:
        """Play the viewer page (``web/static/viewer.js``): take what each session's relay outbox
        hands out, send it at the pace its config asks for, acknowledge it, and report the
        vendor's ``set-params`` acknowledgements back (they release what waits behind them).
        """
        relay = self.events.relay
        for sid, vid in self._vendor_ids.items():
            config = relay.config(sid)
            if config is None:
                continue
            if self.name == "liveavatar":  # LiveKit data on the config's topic, unpaced
                room = self.fake.room(vid)
                relay.set_present(sid, True)
                while batch := relay.take(sid, "test-page"):
                    for _, payload in batch:
                        room.publish(config.topic or "", json.dumps(payload, ensure_ascii=False))
                    relay.acked(sid, "test-page", [i for i, _ in batch])
                continue
            if self.name != "akool":
                continue
            channel = self.fake.channel(vid)
            relay.set_present(sid, True)
            at = self._clock.get(sid, 0.0)
            while batch := relay.take(sid, "test-page"):
                for _, payload in batch:
                    raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
                    channel.send(raw, at=at)
                    at += len(raw) / config.bytes_per_second
                relay.acked(sid, "test-page", [i for i, _ in batch])
                # Mode-switch acks release what waits behind them; the rest is left for the test.
                acks = [m for m in channel.outbox
                        if (json.loads(m).get("pld") or {}).get("cmd") == "set-params"]
                for message in acks:
                    channel.outbox.remove(message)
                    self.provider.decode_viewer_data(self._sessions[sid], message)
            self._clock[sid] = at

    def track(self, ps: ProviderSession) -> ProviderSession:
        self._vendor_ids[ps.session_id] = ps.provider_session_id
        self._sessions[ps.session_id] = ps
        return ps

    def said(self, ps: ProviderSession) -> list[str]:
        """Texts the vendor was told to speak verbatim."""
        vid = self.track(ps).provider_session_id
        if self.name == "a2e":
            return self.fake.rooms[vid].spoken
        if self.name == "akool":
            self.pump()
            return self.fake.channel(vid).said
        if self.name == "liveavatar":
            self.pump()
            return self.fake.sessions[vid].said
        return [t["text"] for t in self.fake.sessions[vid].tasks if t["task_type"] == "repeat"]

    def asked(self, ps: ProviderSession) -> list[str]:
        """Questions the vendor was asked."""
        vid = self.track(ps).provider_session_id
        if self.name == "a2e":
            return self.fake.rooms[vid].asked
        if self.name == "akool":
            self.pump()
            return self.fake.channel(vid).asked
        if self.name == "liveavatar":
            self.pump()
            return self.fake.sessions[vid].asked
        return [t["text"] for t in self.fake.sessions[vid].tasks if t["task_type"] != "repeat"]

    def viewer_messages(self, ps: ProviderSession) -> list[str]:
        """Data messages the vendor sent to the viewer page (taken, so each is seen once)."""
        vid = self.track(ps).provider_session_id
        if self.name == "akool":
            self.pump()
            box = self.fake.channel(vid).outbox
        elif self.name == "liveavatar":
            self.pump()
            box = self.fake.viewer_messages.setdefault(vid, [])
        else:
            box = self.fake.viewer_messages.get(vid, [])
        taken = list(box)
        box.clear()
        return taken

    def open_vendor_ids(self) -> list[str]:
        if self.name == "a2e":
            return self.fake.open_rooms()
        return self.fake.open_sessions()

    def transcripts(self, session_id: str, speaker: str | None = None) -> list[Transcript]:
        return [e for e in self.seen if isinstance(e, Transcript) and e.session_id == session_id
                and (speaker is None or e.speaker == speaker)]


def build(name: str, fake: Any, http: httpx.AsyncClient, events: EventHub,
          key: str | None = None, **kw: Any) -> AvatarProvider:
    common = {"api_key": SecretStr(key or fake.api_key), "http": http, "events": events,
              "pricing": PRICING, "base_url": fake.url, "timeout_s": TIMEOUT_S,
              "retry": FAST_RETRY, **kw}
    if name == "a2e":
        return A2EProvider(**common)
    if name == "akool":
        return AKoolProvider(**common)
    if name == "liveavatar":
        return LiveAvatarProvider(**common)
    return HeyGenProvider(**common)


def make_fake(name: str) -> Any:
    fakes = {"a2e": FakeA2E, "akool": FakeAKool, "liveavatar": FakeLiveAvatar}
    return fakes.get(name, FakeHeyGen)(hang_s=5.0)


AVATARS = {"a2e": "676e1f054c86ff839eae2cc3", "akool": "dvp_Tristan_cloth2_1080P",
           "heygen-livekit": "Anna_public_3_20240108",
           "liveavatar": "7b1e9d1c-5f0a-4d3e-9a51-2f8c3e4d5a6b"}


_TLS = ssl.create_default_context()  # loading the CA store is slow: once per test run


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # The product's vendor client (its aiohttp transport), so every contract test crosses the
    # same wire code as the bot does.
    async with vendor_client(timeout_s=TIMEOUT_S, verify=_TLS) as client:
        yield client


@pytest.fixture(params=CASES)
async def case(request: pytest.FixtureRequest, http: httpx.AsyncClient) -> AsyncIterator[Case]:
    name = request.param
    events = EventHub(queue_size=10_000)
    async with make_fake(name) as fake:
        provider = build(name, fake, http, events)
        async with events.subscribe(None) as queue:
            yield Case(name, fake, provider, events, AVATARS[name], queue=queue)
        await provider.aclose()
