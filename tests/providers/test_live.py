"""Smoke tests against the real vendors (``-m live``; each needs its key in the environment).

They only list avatars: starting a real session costs money.
"""

from __future__ import annotations

import uuid

import pytest

from bot.core.events import EventHub
from bot.core.models import StartRequest
from bot.providers.registry import build_vendor_providers
from bot.settings import load_settings

pytestmark = pytest.mark.live


@pytest.mark.parametrize("name", ["a2e", "akool", "heygen"])
async def test_the_real_vendor_lists_avatars(name: str, http) -> None:
    settings = load_settings()
    providers = build_vendor_providers(settings, http, EventHub())
    if name not in providers:
        pytest.skip(f"{name.upper()}_API_KEY is not set")
    avatars = await providers[name].list_avatars()
    assert avatars and all(a.id and a.provider == name for a in avatars)


async def test_a_liveavatar_sandbox_session_starts_and_stops(http) -> None:
    """Sandbox sessions are free (about a minute long), so this one really starts."""
    settings = load_settings(liveavatar_sandbox=True)
    providers = build_vendor_providers(settings, http, EventHub())
    if "liveavatar" not in providers:
        pytest.skip("LIVEAVATAR_API_KEY is not set")
    provider = providers["liveavatar"]
    try:
        (avatar,) = await provider.list_avatars()
        ps = await provider.start(StartRequest(session_id=uuid.uuid4().hex, avatar_id=avatar.id,
                                               duration_s=60, knowledge="Say hello."))
        assert ps.viewer.transport == "livekit" and ps.viewer.url and ps.viewer.token
        assert ps.provider_session_id in (await provider.list_open_sessions() or [])
        await provider.stop(ps)
    finally:
        await provider.aclose()
