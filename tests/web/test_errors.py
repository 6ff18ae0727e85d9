"""One error path for the web: a core error gets the same HTTP status on every JSON route.

Each error is caused for real (a bad body, an ended session, a full playground, a link that may
only watch ...) on several routes; the status must be the one ``web.app.ERROR_STATUS`` gives its
type, whichever route raised it, and the body carries the error's user message.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

import bot.core.errors as errors
from bot.core.errors import InvalidRequest, LimitReached, NotAllowed, SessionNotLive
from tests.web.conftest import page_socket
from web.app import ERROR_STATUS, error_status

EVIL = {"Origin": "https://evil.example"}


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: keep cookies from an IP address host (the test server).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as c:
        yield c


def test_every_error_of_the_core_tree_has_a_status() -> None:
    tree = [c for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.AvatarBotError)]
    assert len(tree) >= 14
    for cls in tree:
        assert any(base in ERROR_STATUS for base in cls.__mro__), cls
    assert error_status(errors.InsufficientCredits(1, 2)) == ERROR_STATUS[LimitReached] == 429
    assert error_status(errors.UnknownProvider("x", [])) == ERROR_STATUS[InvalidRequest] == 400
    assert error_status(errors.ProviderUnavailable("akool")) == 502


async def test_the_same_error_gets_the_same_status_on_every_route(stack: Any, client: Any) -> None:
    seen: dict[type, dict[str, int]] = defaultdict(dict)

    async def post(kind: type, route: str, url: str, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
        async with client.post(url, json=body, headers=headers) as resp:
            answer = await resp.json()
            seen[kind][route] = resp.status
            assert answer["error"], (route, answer)
            return answer

    await client.get(stack.url + "/")  # the playground cookie
    too_long = "x" * 10_000
    await post(InvalidRequest, "start: knowledge too long", stack.url + "/playground/start",
               {"knowledge": too_long})
    await post(NotAllowed, "start: another site", stack.url + "/playground/start", {}, EVIL)

    async with client.post(stack.url + "/playground/start", json={}) as resp:
        host_url = stack.url + (await resp.json())["url"]
    host = host_url.split("/v/")[1]
    drive = f"{stack.url}/playground/{host}"
    answer = await post(InvalidRequest, "say: empty text", drive + "/say", {"text": ""})
    assert "empty" in answer["error"]  # raised by the session service, not the route
    await post(InvalidRequest, "ask: text too long", drive + "/ask", {"text": too_long})
    await post(NotAllowed, "say: another site", drive + "/say", {"text": "hi"}, EVIL)

    local = await stack.start("local")
    viewer = stack.link(local.id).split("/v/")[1]
    await post(NotAllowed, "say: a watch-only link", f"{stack.url}/playground/{viewer}/say",
               {"text": "hi"})
    async with page_socket(client, stack.link(local.id)) as ps:
        vid = (await ps.next("hello"))["viewer_id"]
        signal = stack.link(local.id) + "/webrtc"
        async with client.post(signal + "/offer", json={"viewer_id": vid}) as resp:
            assert resp.status == 200
        await post(InvalidRequest, "webrtc answer: not SDP", signal + "/answer",
                   {"viewer_id": vid, "sdp": "this is not sdp"})
    akool = await stack.start("akool")
    async with page_socket(client, stack.link(akool.id)) as ps:
        vid = (await ps.next("hello"))["viewer_id"]
        await post(InvalidRequest, "webrtc offer: not a WebRTC session",
                   stack.link(akool.id) + "/webrtc/offer", {"viewer_id": vid})

    for _ in range(stack.settings.playground_max_concurrent):  # one is running already
        async with client.post(stack.url + "/playground/start", json={}) as resp:
            if resp.status != 200:
                break
    await post(LimitReached, "start: playground full", stack.url + "/playground/start", {})

    async with client.post(drive + "/stop", json={}) as resp:
        assert resp.status == 200
    await post(SessionNotLive, "say: ended session", drive + "/say", {"text": "hi"})
    await post(SessionNotLive, "ask: ended session", drive + "/ask", {"text": "hi"})
    await post(SessionNotLive, "interrupt: ended session", drive + "/interrupt", {})

    for kind, statuses in seen.items():
        assert set(statuses.values()) == {ERROR_STATUS[kind]}, (kind.__name__, statuses)
    assert len(seen[InvalidRequest]) >= 4 and len(seen[SessionNotLive]) == 3
