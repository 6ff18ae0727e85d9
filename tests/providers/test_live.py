"""Smoke tests against the real vendors (``-m live``; each needs its key in the environment).

They only list avatars: starting a real session costs money.
"""

from __future__ import annotations

import pytest

from bot.core.events import EventHub
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
