"""Build the vendor providers that settings enable (a vendor is on when its key is set)."""

from __future__ import annotations

import httpx

from bot.core.events import EventHub
from bot.core.ice import display_url
from bot.core.provider import AvatarProvider
from bot.providers.a2e import A2EProvider
from bot.providers.akool import AKoolProvider
from bot.providers.heygen import LEGACY_NOTICE, HeyGenProvider
from bot.providers.liveavatar import LiveAvatarProvider
from bot.settings import Settings

VENDORS = ("a2e", "akool", "heygen", "liveavatar")


def build_vendor_providers(
    settings: Settings, http: httpx.AsyncClient, events: EventHub
) -> dict[str, AvatarProvider]:
    """Return ``{name: provider}`` for every vendor whose API key is configured."""
    found: dict[str, AvatarProvider] = {}
    timeout = settings.vendor_timeout_s
    if settings.a2e_api_key is not None and settings.a2e_api_key.get_secret_value():
        found["a2e"] = A2EProvider(
            api_key=settings.a2e_api_key, http=http, events=events,
            pricing=settings.pricing("a2e"), base_url=str(settings.a2e_base_url),
            timeout_s=timeout,
        )
    if settings.akool_api_key is not None and settings.akool_api_key.get_secret_value():
        found["akool"] = AKoolProvider(
            api_key=settings.akool_api_key, http=http, events=events,
            pricing=settings.pricing("akool"), base_url=str(settings.akool_base_url),
            timeout_s=timeout,
        )
    if settings.heygen_api_key is not None and settings.heygen_api_key.get_secret_value():
        found["heygen"] = HeyGenProvider(
            api_key=settings.heygen_api_key, http=http, events=events,
            pricing=settings.pricing("heygen"), base_url=str(settings.heygen_base_url),
            timeout_s=timeout,
        )
    key = settings.liveavatar_api_key
    if key is not None and key.get_secret_value():
        found["liveavatar"] = LiveAvatarProvider(
            api_key=key, http=http, events=events, pricing=settings.pricing("liveavatar"),
            base_url=str(settings.liveavatar_base_url), sandbox=settings.liveavatar_sandbox,
            timeout_s=timeout,
        )
    return found


def describe_vendors(settings: Settings) -> list[tuple[str, bool, str]]:
    """``(name, enabled, why)`` for each vendor, for the startup banner and the home page."""
    rows = []
    for name in VENDORS:
        key = getattr(settings, f"{name}_api_key")
        if key is None or not key.get_secret_value():
            hint = f"set {name.upper()}_API_KEY to enable"
            if name == "heygen":
                hint = "legacy, not recommended: HeyGen has moved interactive avatars to " \
                       "LiveAvatar (set LIVEAVATAR_API_KEY)"
            rows.append((name, False, hint))
            continue
        why = f"key set, {display_url(str(getattr(settings, f'{name}_base_url')))}"
        if name == "heygen":
            la_key = settings.liveavatar_api_key
            if la_key is not None and la_key.get_secret_value():
                why += (". LEGACY: HeyGen has moved interactive avatars to LiveAvatar, which is "
                        "configured: unset HEYGEN_API_KEY to finish switching")
            else:
                why += f". {LEGACY_NOTICE}"
        if name == "liveavatar" and settings.liveavatar_sandbox:
            why += " (sandbox)"
        rows.append((name, True, why))
    return rows
