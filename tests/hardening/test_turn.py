"""TURN credentials per viewer and short-lived; static ones and URLs with user info never reach a
visitor.

The HMAC is checked against values computed outside Python: OpenSSL's ``dgst -hmac`` (an
independent implementation of HMAC-SHA1), which is what coturn compares under
``use-auth-secret`` (docs/browser.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import component_status, print_banner
from bot.core.errors import ConfigError
from bot.core.ice import display_url, public_ice_servers, turn_rest_credentials
from bot.core.models import Pricing
from bot.core.provider import AvatarProvider
from bot.settings import load_settings
from tests.web.conftest import has_local, make_settings, web_stack

STATIC_USER = "server-only-user"
STATIC_PASS = "server-only-pass-5c1e"
TURN_SECRET = "north-turn-secret"
# printf '%s' "1700000000:viewer-1" | openssl dgst -sha1 -hmac "north-turn-secret" -binary | base64
KNOWN = ("1700000000:viewer-1", "qh/P0cuVgYpykU5JfG2rcO483js=")


def test_credentials_match_a_known_vector() -> None:
    username, credential = turn_rest_credentials(TURN_SECRET.encode(), "viewer-1", 1_700_000_000)
    assert (username, credential) == KNOWN


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_credentials_match_openssl_for_other_inputs() -> None:
    for viewer, expires, secret in (("a1b2c3", 1_800_000_123, "s3cr3t"),
                                    ("x" * 40, 2_000_000_000, "another secret with spaces")):
        username, credential = turn_rest_credentials(secret.encode(), viewer, expires)
        digest = subprocess.run(
            ["openssl", "dgst", "-sha1", "-hmac", secret, "-binary"],
            input=username.encode(), capture_output=True, check=True,
        ).stdout
        assert username == f"{expires}:{viewer}"
        assert credential == base64.b64encode(digest).decode()


def test_what_a_browser_may_see() -> None:
    servers = [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": "turn:turn.example.org:3478", "username": STATIC_USER,
         "credential": STATIC_PASS},
        {"urls": ["stun:user:pw@stun.example.net"]},
        {"urls": ["stun:ok.example.net"], "credentialType": "password", "extra": 1},
    ]
    assert public_ice_servers(servers) == [
        {"urls": ["stun:stun.example.org:3478"]}, {"urls": ["stun:ok.example.net"]},
    ]
    assert display_url("https://bob:hunter2@api.example.com/v1?key=k") == \
        "https://api.example.com/v1"


def test_settings_refuse_turn_without_secret_and_userinfo_in_public_url() -> None:
    with pytest.raises(ConfigError, match="TURN_SHARED_SECRET"):
        load_settings(_env_file=None, turn_urls="turn:t.example.org:3478")
    with pytest.raises(ConfigError, match="TURN_URLS"):
        load_settings(_env_file=None, turn_urls="turn:u:p@t.example.org",
                      turn_shared_secret="x")
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        load_settings(_env_file=None, public_url="https://u:p@avatars.example.org")


def test_a_password_in_a_vendor_base_url_is_never_shown(capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(akool_base_url="https://ops:hunter2@openapi.akool.com",
                             llm_base_url="https://llm:pw-77@llm.example.org/v1",
                             llm_model="m")
    details = " ".join(item.detail for item in component_status(settings))
    print_banner(settings)
    shown = details + capsys.readouterr().out
    assert "openapi.akool.com" in shown
    assert "hunter2" not in shown and "ops:" not in shown and "pw-77" not in shown


def _local_with_static_turn(events: Any) -> dict[str, AvatarProvider]:
    from bot.providers.local import LocalProvider

    return {"local": LocalProvider(
        events=events, pricing=Pricing(credits_per_minute=1, granularity_s=60, minimum_s=60),
        ice_servers=[
            {"urls": ["stun:stun.example.org:3478"]},
            {"urls": ["turn:turn.example.org:3478"], "username": STATIC_USER,
             "credential": STATIC_PASS},
        ],
        allow_loopback=True,
    )}


def _config(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="viewer-config" type="application/json">(.*?)</script>',
                      html, re.S)
    assert found is not None
    data: dict[str, Any] = json.loads(found.group(1))
    return data


@pytest.mark.skipif(not has_local(), reason="the local avatar needs aiortc")
async def test_each_page_gets_its_own_short_lived_turn_credentials(tmp_path: Path) -> None:
    ttl = 600
    async with web_stack(
        tmp_path, vendors=(), extra=_local_with_static_turn,
        turn_urls="turn:turn.example.org:3478,turns:turn.example.org:5349",
        turn_shared_secret=TURN_SECRET, turn_ttl_s=ttl,
    ) as stack, aiohttp.ClientSession() as client:
        record = await stack.start("local")
        link = stack.link(record.id, role="host")
        pages = []
        for _ in range(2):
            async with client.get(link) as resp:
                assert resp.status == 200
                pages.append(await resp.text())
        stored = json.dumps((await stack.store.get_session(record.id)).model_dump(mode="json"))
    usernames = set()
    for html in pages:
        assert STATIC_USER not in html and STATIC_PASS not in html
        assert TURN_SECRET not in html
        servers = _config(html)["media"]["ice_servers"]
        assert servers[0] == {"urls": ["stun:stun.example.org:3478"]}
        turn = servers[1]
        assert turn["urls"] == ["turn:turn.example.org:3478", "turns:turn.example.org:5349"]
        expires, _, viewer = turn["username"].partition(":")
        assert viewer and abs(int(expires) - (time.time() + ttl)) < 30
        expected = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1)
        assert turn["credential"] == base64.b64encode(expected.digest()).decode()
        usernames.add(turn["username"])
    assert len(usernames) == 2, "every page load gets its own credentials"
    # Nor are the static credentials kept with the session, where a page could be built from.
    assert STATIC_PASS not in stored


@pytest.mark.skipif(not has_local(), reason="the local avatar needs aiortc")
async def test_without_turn_settings_a_page_gets_no_turn_at_all(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=(), extra=_local_with_static_turn) as stack, \
            aiohttp.ClientSession() as client:
        record = await stack.start("local")
        async with client.get(stack.link(record.id)) as resp:
            html = await resp.text()
    assert _config(html)["media"]["ice_servers"] == [{"urls": ["stun:stun.example.org:3478"]}]
    assert STATIC_PASS not in html
