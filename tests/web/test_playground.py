"""The home page and the playground: status, live count, starting a local-avatar session in the
web:playground tenant, host-only driving, its own limits, and the switch that turns it off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.models import PLAYGROUND, SessionState
from tests.web.conftest import page_socket, web_stack
from web.home import COOKIE


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: keep cookies from an IP address host (the test server).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as c:
        yield c


async def _start(client: aiohttp.ClientSession, url: str, **body: Any) -> tuple[int, dict]:
    async with client.post(url + "/playground/start", json=body) as resp:
        return resp.status, await resp.json()


async def test_home_lists_status_and_live_sessions(stack: Any, client: Any) -> None:
    async with client.get(stack.url + "/") as resp:
        html = await resp.text()
        assert resp.status == 200 and COOKIE in resp.cookies
        assert resp.cookies[COOKIE]["httponly"] and resp.cookies[COOKIE]["samesite"] == "Strict"
    for item in ("local", "akool", "heygen", "set HEYGEN_API_KEY to enable", "discord",
                 "set DISCORD_TOKEN to enable"):
        assert item in html
    assert '<strong id="live-count">0</strong> live sessions' in html
    await stack.start("akool")
    async with client.get(stack.url + "/") as resp:
        assert '<strong id="live-count">1</strong> live session ' in await resp.text()
    async with client.get(stack.url + "/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["ok"] is True
    async with client.get(stack.url + "/metrics") as resp:
        assert "avatarbot_live_sessions 1.0" in await resp.text()


async def test_playground_starts_a_local_session_that_only_its_host_link_drives(
    stack: Any, client: Any
) -> None:
    status, body = await _start(client, stack.url)
    assert status == 400 and "home page" in body["error"]  # no cookie yet
    await client.get(stack.url + "/")
    # The cookie is the visitor id signed by the server: "<id>.<signature>".
    browser_id = next(c.value for c in client.cookie_jar if c.key == COOKIE).split(".")[0]
    status, body = await _start(client, stack.url, knowledge="We sell tea.")
    assert status == 200 and body["url"].startswith("/v/")
    record = await stack.service.get(body["session_id"])
    assert record.tenant == str(PLAYGROUND) and record.provider == "local"
    assert record.started_by == f"web:{browser_id}" and record.knowledge == "We sell tea."
    assert record.requested_s == stack.settings.playground_max_minutes * 60

    host = body["url"].split("/v/")[1]
    async with client.get(stack.url + body["url"]) as resp:
        page = await resp.text()
        assert 'id="chat"' in page and '"role": "host"' in page
    viewer_link = stack.link(record.id)
    async with client.get(viewer_link) as resp:
        assert 'id="chat"' not in await resp.text()
    viewer = viewer_link.split("/v/")[1]
    async with client.post(f"{stack.url}/playground/{viewer}/say", json={"text": "hi"}) as resp:
        assert resp.status == 403
    async with client.post(f"{stack.url}/playground/bogus/say", json={"text": "hi"}) as resp:
        assert resp.status == 404
    async with client.post(f"{stack.url}/playground/{host}/say", json={"text": "hi"},
                           headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403

    async with page_socket(client, viewer_link) as ps:
        await ps.next("hello")
        async with client.post(f"{stack.url}/playground/{host}/ask",
                               json={"text": "What do you sell?"}) as resp:
            assert resp.status == 200
        asked = await ps.next("transcript")
        assert asked["author"] == "You" and asked["intent"] == "ask"
        answer = await ps.next("transcript", wait=10)
        assert answer["speaker"] == "avatar" and "tea" in answer["text"].lower()
        async with client.post(f"{stack.url}/playground/{host}/say", json={"text": ""}) as resp:
            assert resp.status == 400 and "empty" in (await resp.json())["error"]
        async with client.post(f"{stack.url}/playground/{host}/stop", json={}) as resp:
            assert resp.status == 200
        await ps.next("end")
    assert (await stack.service.get(record.id)).state is SessionState.ENDED


async def test_playground_has_its_own_limits(stack: Any, client: Any) -> None:
    await client.get(stack.url + "/")
    status, first = await _start(client, stack.url)
    assert status == 200
    # One session per visitor: the refusal links back to the running one.
    status, body = await _start(client, stack.url)
    assert status == 429 and "already have a playground session" in body["error"]
    assert (await stack.links_session(body["url"])) == first["session_id"]
    # Another visitor (another cookie) gets a session of their own.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        await other.get(stack.url + "/")
        status, second = await _start(other, stack.url)
        assert status == 200 and second["session_id"] != first["session_id"]
    # Other tenants are untouched by the playground's limits.
    assert (await stack.start("akool")).state is SessionState.LIVE


async def test_disabled_playground_says_so(tmp_path: Path, client: Any) -> None:
    async with web_stack(tmp_path, vendors=(), local=True, playground_enabled=False) as stack:
        async with client.get(stack.url + "/") as resp:
            html = await resp.text()
        assert "The playground is turned off on this server." in html and "start-form" not in html
        status, body = await _start(client, stack.url)
        assert status == 403 and "turned off" in body["error"]
        assert await stack.service.open_sessions() == []


async def test_text_that_is_not_valid_unicode_is_a_clear_400(stack: Any, client: Any) -> None:
    # A JSON "\ud800" escape decodes to a lone surrogate; SQLite and espeak-ng cannot take it.
    await client.get(stack.url + "/")
    headers = {"Content-Type": "application/json"}
    async with client.post(stack.url + "/playground/start", headers=headers,
                           data=b'{"knowledge": "We sell tea \\ud800."}') as resp:
        assert resp.status == 400 and "not valid Unicode" in (await resp.json())["error"]
    assert await stack.store.open_sessions() == []
    assert (await stack.store.balance(str(PLAYGROUND))).pending == 0
    status, body = await _start(client, stack.url)
    assert status == 200
    host = body["url"].split("/v/")[1]
    for action in ("say", "ask"):
        async with client.post(f"{stack.url}/playground/{host}/{action}", headers=headers,
                               data=b'{"text": "hi \\udc00 there"}') as resp:
            assert resp.status == 400 and "not valid Unicode" in (await resp.json())["error"]
    async with client.post(f"{stack.url}/playground/{host}/say",
                           json={"text": "still here"}) as resp:
        assert resp.status == 200
    assert (await stack.service.get(body["session_id"])).state is SessionState.LIVE


async def test_deeply_nested_json_body_is_unreadable_not_a_500(stack: Any, client: Any) -> None:
    await client.get(stack.url + "/")
    deep = b"[" * 8000 + b"]" * 8000  # json.loads raises RecursionError, not ValueError
    async with client.post(stack.url + "/playground/start", data=b'{"knowledge": ' + deep + b"}",
                           headers={"Content-Type": "application/json"}) as resp:
        # Read as an empty body: the session starts without knowledge, as for any unreadable body.
        assert resp.status == 200
        body = await resp.json()
    host = body["url"].split("/v/")[1]
    async with client.post(f"{stack.url}/playground/{host}/say", data=deep,
                           headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and "Send a text" in (await resp.json())["error"]
    assert (await stack.service.get(body["session_id"])).state is SessionState.LIVE


async def test_pages_and_checks_take_their_text_bounds_from_the_provider(
    stack: Any, client: Any
) -> None:
    caps = stack.service.provider("local").capabilities
    async with client.get(stack.url + "/") as resp:
        html = await resp.text()
        assert f'id="knowledge" rows="3" maxlength="{caps.max_knowledge_chars}"' in html
    status, body = await _start(client, stack.url, knowledge="k" * (caps.max_knowledge_chars + 1))
    assert status == 400 and f"at most {caps.max_knowledge_chars} characters" in body["error"]
    status, body = await _start(client, stack.url, knowledge="We sell tea.")
    assert status == 200
    async with client.get(stack.url + body["url"]) as resp:
        # the counter shows the limit; a longer paste is kept and announced, never cut
        assert f'0 / {caps.max_text_chars}' in await resp.text()
    host = body["url"].split("/v/")[1]
    too_long = "x" * (caps.max_text_chars + 1)
    async with client.post(f"{stack.url}/playground/{host}/say", json={"text": too_long}) as resp:
        assert resp.status == 400
        assert f"takes at most {caps.max_text_chars})" in (await resp.json())["error"]
    async with client.post(f"{stack.url}/playground/{host}/stop", json={}) as resp:
        assert resp.status == 200
