"""Each compat fence refuses, at import, a library that lost the internal it relies on.

A library upgrade is simulated by taking the internal away from the installed library (or
replacing it with a changed one) and importing the compat module again: the error must name the
library, the version tested and the module to adapt. The behaviour behind each fence is tested
where it is used: keyframe-on-PLI (tests/local/test_keyframe_on_pli.py), loopback candidates
(tests/local/test_stream.py), the Discord endpoints (every tests/discord test talks to the fake
through them) and the 4014 fallback (tests/discord/test_lifecycle.py).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import aioice.ice
import discord
import discord.gateway
import discord.http
import pytest
from aiortc import RTCRtpSender

from bot.compat import (
    IncompatibleLibrary,
    aioice_compat,
    aiortc_compat,
    discord_compat,
)


@pytest.fixture
def reimport(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[ModuleType], None]]:
    """Import a compat module again; afterwards restore the library and import it once more."""
    used: list[ModuleType] = []

    def run(module: ModuleType) -> None:
        used.append(module)
        importlib.reload(module)

    yield run
    monkeypatch.undo()
    for module in used:
        importlib.reload(module)


def _says(exc: pytest.ExceptionInfo[IncompatibleLibrary], library: str, tested: str,
          module: str) -> None:
    text = str(exc.value)
    assert f"tested with {library} {tested}" in text, text
    assert f"bot/compat/{module}.py" in text, text


def test_the_installed_libraries_pass_their_fences() -> None:
    # the versions pinned in pyproject.toml are the ones the fences were written against
    for module in (aiortc_compat, aioice_compat, discord_compat):
        assert importlib.reload(module).FENCE.tested


def test_aiortc_without_send_keyframe_is_refused(monkeypatch, reimport) -> None:
    monkeypatch.delattr(RTCRtpSender, "_send_keyframe")
    with pytest.raises(IncompatibleLibrary, match="RTCRtpSender._send_keyframe") as exc:
        reimport(aiortc_compat)
    _says(exc, "aiortc", aiortc_compat.TESTED, "aiortc_compat")


def test_aiortc_whose_rtcp_handler_no_longer_asks_for_keyframes_is_refused(
    monkeypatch, reimport
) -> None:
    async def handler(self: RTCRtpSender, packet: object) -> None:
        return None

    monkeypatch.setattr(RTCRtpSender, "_handle_rtcp_packet", handler)
    with pytest.raises(IncompatibleLibrary, match="_send_keyframe") as exc:
        reimport(aiortc_compat)
    _says(exc, "aiortc", aiortc_compat.TESTED, "aiortc_compat")


def test_aioice_without_get_host_addresses_is_refused(monkeypatch, reimport) -> None:
    assert not aioice_compat.loopback_enabled()  # no provider holds the wrapper now
    monkeypatch.delattr(aioice.ice, "get_host_addresses")
    with pytest.raises(IncompatibleLibrary, match="get_host_addresses") as exc:
        reimport(aioice_compat)
    _says(exc, "aioice", aioice_compat.TESTED, "aioice_compat")


def test_aioice_with_a_changed_get_host_addresses_is_refused(monkeypatch, reimport) -> None:
    assert not aioice_compat.loopback_enabled()
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda families: [])
    with pytest.raises(IncompatibleLibrary, match=r"use_ipv4, use_ipv6") as exc:
        reimport(aioice_compat)
    _says(exc, "aioice", aioice_compat.TESTED, "aioice_compat")


def test_loopback_wrapper_adds_127_0_0_1_only_while_held() -> None:
    before = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert "127.0.0.1" not in before
    aioice_compat.acquire_loopback()
    try:
        assert aioice.ice.get_host_addresses(True, False)[0] == "127.0.0.1"
    finally:
        aioice_compat.release_loopback()
    assert aioice.ice.get_host_addresses(True, False) == before


@pytest.mark.parametrize(("owner", "name"), [
    (discord.http.Route, "BASE"),
    (discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY"),
    (discord.http.HTTPClient, "get_bot_gateway"),
])
def test_discord_without_its_endpoint_internals_is_refused(
    monkeypatch, reimport, owner: type, name: str
) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(IncompatibleLibrary, match=name) as exc:
        reimport(discord_compat)
    _says(exc, "discord.py", discord_compat.TESTED, "discord_compat")


def test_discord_whose_identify_no_longer_reads_intents_is_refused(monkeypatch, reimport) -> None:
    async def identify(self: discord.gateway.DiscordWebSocket) -> None:
        return None

    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "identify", identify)
    with pytest.raises(IncompatibleLibrary, match="_intents") as exc:
        reimport(discord_compat)
    _says(exc, "discord.py", discord_compat.TESTED, "discord_compat")


def test_dropping_message_content_keeps_the_other_intents() -> None:
    client = discord.Client(intents=discord.Intents(guilds=True, message_content=True))
    assert discord_compat.wants_message_content(client)
    discord_compat.drop_message_content(client)
    assert not discord_compat.wants_message_content(client)
    assert client.intents.guilds  # only that one intent goes


# What each fence guards, as it would be spelled by code that reaches past the fence.
FENCED = re.compile(
    r"\._send_keyframe\b|\bget_host_addresses\b|\bRoute\.BASE\b|\bDEFAULT_GATEWAY\b|\._intents\b"
)


def test_the_fenced_internals_are_named_only_in_bot_compat() -> None:
    root = Path(__file__).resolve().parents[2]
    outside = [
        f"{path.relative_to(root)}: {hit}"
        for top in ("bot", "web") for path in (root / top).rglob("*.py")
        if "compat" not in path.relative_to(root).parts
        for hit in FENCED.findall(path.read_text(encoding="utf-8"))
    ]
    assert outside == []
