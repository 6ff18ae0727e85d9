"""The playground shared fairly: limits per visitor (signed cookie) and per address, refusals that
say what to do now, and sessions that end when their page is gone (beacon, then heartbeat)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.models import PLAYGROUND, SessionState
from tests.web.conftest import page_socket, web_stack
from web.home import COOKIE, VISITORS, end_abandoned


def visitor() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies from an IP address host (the test server).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def start(client: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with client.get(url + "/"):
        pass
    async with client.post(url + "/playground/start", json={}) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def roomy(tmp_path: Path) -> AsyncIterator[Any]:
    """Two slots in all, many per address (every test client is 127.0.0.1)."""
    async with web_stack(tmp_path, vendors=(), local=True, playground_max_concurrent=2,
                         playground_per_address=10) as s:
        yield s


async def test_full_playground_says_when_to_come_back(roomy: Any) -> None:
    async with visitor() as a, visitor() as b, visitor() as c:
        assert (await start(a, roomy.url))[0] == 200
        assert (await start(b, roomy.url))[0] == 200
        status, body = await start(c, roomy.url)
    assert status == 429
    assert body["error"].startswith("All 2 playground slots are in use right now. Try again")
    assert "admin" not in body["error"] and "url" not in body


async def test_one_address_cannot_take_every_slot(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=(), local=True, playground_max_concurrent=4,
                         playground_per_address=1) as stack:
        async with visitor() as a, visitor() as b:
            assert (await start(a, stack.url))[0] == 200
            status, body = await start(b, stack.url)
        assert status == 429 and "Your network already runs 1 playground session" in body["error"]
        assert "End one of them" in body["error"]


async def test_spent_budget_says_it_refills_at_midnight_utc(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=(), local=True, playground_credits=4,
                         playground_max_concurrent=5) as stack:
        # Two other visitors hold the whole day's budget (2 minutes = 2 credits each).
        for user in ("web:other1", "web:other2"):
            await stack.start("local", tenant=str(PLAYGROUND), minutes=2, user=user)
        async with visitor() as a:
            status, body = await start(a, stack.url)
        assert status == 429, body
        assert "budget is used up. It refills at midnight UTC (in " in body["error"]
        assert "admin" not in body["error"].lower()
        assert await stack.store.verify() == []


async def test_a_tampered_cookie_is_not_a_visitor(stack: Any) -> None:
    async with visitor() as a:
        async with a.get(stack.url + "/"):
            pass
        value = next(c.value for c in a.cookie_jar if c.key == COOKIE)
        ident, sig = value.split(".")
    # Someone else's id with this browser's signature: refused, with what to do.
    async with aiohttp.ClientSession(cookies={COOKIE: "f" * len(ident) + "." + sig}) as forged:
        async with forged.post(stack.url + "/playground/start", json={}) as resp:
            body = await resp.json()
        assert resp.status == 400 and "Reload the home page" in body["error"]
        assert await stack.service.open_sessions(str(PLAYGROUND)) == []
    # The same request with the cookie as signed starts.
    async with aiohttp.ClientSession(cookies={COOKIE: value}) as genuine:
        async with genuine.post(stack.url + "/playground/start", json={}) as resp:
            assert resp.status == 200


async def test_pages_gone_end_their_session_beacon_first_heartbeat_as_backstop(
    stack: Any,
) -> None:
    grace = stack.settings.playground_leave_grace_s
    beat = stack.settings.playground_heartbeat_s
    app, t0 = stack.app, time.monotonic()
    async with visitor() as a, visitor() as b, visitor() as c:
        _, left = await start(a, stack.url)
        _, lost = await start(b, stack.url)
        link = stack.url + left["url"]
        host = left["url"].split("/v/")[1]
        async with page_socket(a, link) as ps:
            await ps.next("hello")
            # The page says goodbye (pagehide beacon) while its socket is still open.
            async with a.post(f"{stack.url}/playground/{host}/leave") as resp:
                assert resp.status == 200
            assert await end_abandoned(app, now=t0 + 1) == []
        # Its socket has closed and no page came back within the grace: ended.
        ended = await end_abandoned(app, now=t0 + grace + 2)
        assert ended == [left["session_id"]]
        record = await stack.service.get(left["session_id"])
        assert record.state is SessionState.ENDED and record.end_reason == "the page was closed"

        # No beacon (the browser crashed): the session ends once no page was seen for a while.
        assert (await stack.service.get(lost["session_id"])).state is SessionState.LIVE
        assert await end_abandoned(app, now=t0 + beat + 5) == [lost["session_id"]]
        assert (await stack.service.get(lost["session_id"])).end_reason == (
            "the page stopped answering")

        # A reload: beacon, then a page is back before the grace ends: the session goes on.
        _, kept = await start(c, stack.url)
        host = kept["url"].split("/v/")[1]
        async with c.post(f"{stack.url}/playground/{host}/leave") as resp:
            assert resp.status == 200
        async with page_socket(c, stack.url + kept["url"]) as ps:
            await ps.next("hello")
            now = time.monotonic()
            assert await end_abandoned(app, now=now + grace + 1) == []
            assert kept["session_id"] not in app[VISITORS].left
        assert (await stack.service.get(kept["session_id"])).state is SessionState.LIVE


async def test_an_ended_link_is_a_plain_404_once_its_transcript_is_no_longer_kept(
    tmp_path: Path,
) -> None:
    async with web_stack(tmp_path, vendors=(), local=True, transcript_retention_h=0) as stack:
        record = await stack.start("local", minutes=2)
        link = stack.link(record.id)
        await stack.service.stop(record.id, "done")
        async with aiohttp.ClientSession() as client:
            async with client.get(link) as resp:
                gone = (resp.status, await resp.text())
            async with client.get(stack.url + "/v/not-a-token") as resp:
                unknown = (resp.status, await resp.text())
    assert gone == unknown and gone[0] == 404


async def test_leaving_after_the_socket_closed_is_not_an_error(stack: Any) -> None:
    # The page posts /webrtc/leave when its session ends, after the server closed its socket.
    record = await stack.start("local", minutes=2)
    link = stack.link(record.id)
    async with aiohttp.ClientSession() as client:
        async with client.post(link + "/webrtc/leave", json={"viewer_id": "gone-viewer"}) as resp:
            assert resp.status == 200 and (await resp.json()) == {"ok": True}
        # Other signalling of an unknown viewer is still refused.
        async with client.post(link + "/webrtc/offer", json={"viewer_id": "gone-viewer"}) as resp:
            assert resp.status == 409


async def test_a_text_over_the_avatars_limit_is_refused_whole_with_the_numbers(
    stack: Any,
) -> None:
    limit = stack.providers["local"].capabilities.max_text_chars
    async with visitor() as a:
        _, body = await start(a, stack.url)
        host = body["url"].split("/v/")[1]
        async with a.post(f"{stack.url}/playground/{host}/say",
                          json={"text": "x" * (limit + 1)}) as resp:
            error = (await resp.json())["error"]
        assert resp.status == 400
        assert f"({limit + 1} characters; this avatar takes at most {limit})" in error
        async with a.post(f"{stack.url}/playground/{host}/say", json={"text": "x" * limit}) as resp:
            assert resp.status == 200
