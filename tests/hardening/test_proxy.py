"""Behind a TLS-terminating reverse proxy: forwarded address and scheme are believed only from
``TRUSTED_PROXIES``; the playground's same-origin check compares with ``PUBLIC_URL``; rate limits
key on the real client.

The "proxy" is a real aiohttp client on 127.0.0.1 sending the headers a proxy adds (nginx's
``proxy_add_x_forwarded_for`` appends the peer to X-Forwarded-For; RFC 7239 section 4 for
``Forwarded``), to the real app on a real port.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.web.conftest import has_local, web_stack
from web.proxy import resolve
from web.security import RateLimits, origin_of

PUBLIC = "https://avatars.example.org"
# Two page loads per address, then 429 (the refill is too slow to matter in a test).
TIGHT = RateLimits(pages=(2, 0.001), websocket=(100, 100), signalling=(100, 100),
                   playground=(100, 100))


async def _page_statuses(client: aiohttp.ClientSession, url: str, headers: dict[str, str],
                         n: int = 2) -> list[int]:
    out = []
    for _ in range(n):
        async with client.get(f"{url}/v/not-a-token", headers=headers) as resp:
            out.append(resp.status)
    return out


@pytest.mark.parametrize("header", ["xff", "forwarded"])
async def test_a_trusted_proxy_gives_each_client_its_own_rate_limit(
    tmp_path: Path, header: str
) -> None:
    def via(addr: str) -> dict[str, str]:
        if header == "xff":
            return {"X-Forwarded-For": addr, "X-Forwarded-Proto": "https"}
        return {"Forwarded": f'for="{addr}:4711";proto=https'}

    async with web_stack(tmp_path, rate_limits=TIGHT, trusted_proxies=["127.0.0.1"],
                         public_url=PUBLIC) as stack, aiohttp.ClientSession() as client:
        assert await _page_statuses(client, stack.url, via("203.0.113.5")) == [404, 404]
        assert await _page_statuses(client, stack.url, via("203.0.113.5"), 1) == [429]
        # Another client behind the same proxy still has its own bucket.
        assert await _page_statuses(client, stack.url, via("198.51.100.7")) == [404, 404]


async def test_an_untrusted_peer_cannot_pick_its_address(tmp_path: Path) -> None:
    async with web_stack(tmp_path, rate_limits=TIGHT, trusted_proxies=["10.0.0.0/8"],
                         public_url=PUBLIC) as stack, aiohttp.ClientSession() as client:
        assert await _page_statuses(client, stack.url, {"X-Forwarded-For": "203.0.113.5"}) \
            == [404, 404]
        # A new X-Forwarded-For from the same untrusted peer does not give a fresh bucket.
        assert await _page_statuses(client, stack.url, {"X-Forwarded-For": "198.51.100.7"}, 1) \
            == [429]


async def test_addresses_a_client_wrote_itself_are_ignored(tmp_path: Path) -> None:
    async with web_stack(tmp_path, rate_limits=TIGHT, trusted_proxies=["127.0.0.1"]) as stack, \
            aiohttp.ClientSession() as client:
        # The client sent "X-Forwarded-For: <anything>", the proxy appended the real address.
        first = {"X-Forwarded-For": "1.1.1.1, 203.0.113.9"}
        second = {"X-Forwarded-For": "8.8.8.8, 203.0.113.9"}
        assert await _page_statuses(client, stack.url, first) == [404, 404]
        assert await _page_statuses(client, stack.url, second, 1) == [429]


async def test_the_scheme_is_believed_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    for trusted, secure in ((["127.0.0.1"], True), ([], False)):
        async with web_stack(tmp_path, trusted_proxies=trusted, public_url=PUBLIC) as stack, \
                aiohttp.ClientSession() as client:
            headers = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"}
            async with client.get(f"{stack.url}/", headers=headers) as resp:
                assert resp.status == 200
                cookie = resp.headers["Set-Cookie"]
            assert ("Secure" in cookie) is secure, (trusted, cookie)


@pytest.mark.skipif(not has_local(), reason="the local avatar needs aiortc")
async def test_the_playground_works_behind_a_tls_proxy_and_still_refuses_other_sites(
    tmp_path: Path,
) -> None:
    async with web_stack(tmp_path, vendors=(), local=True, trusted_proxies=["127.0.0.1"],
                         public_url=PUBLIC) as stack, \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        proxied = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https",
                   "Host": "avatars.example.org"}
        async with client.get(f"{stack.url}/", headers=proxied) as resp:
            assert resp.status == 200
            browser = resp.cookies["avatarbot_pg"].value
        cookie = {"Cookie": f"avatarbot_pg={browser}"}
        async with client.post(f"{stack.url}/playground/start", json={},
                               headers=proxied | cookie | {"Origin": PUBLIC}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body["url"].startswith("/v/")
        async with client.post(f"{stack.url}{body['url'].replace('/v/', '/playground/')}/stop",
                               headers=proxied | cookie | {"Origin": "https://evil.example"}
                               ) as resp:
            assert resp.status == 403
            assert "Cross-site" in (await resp.json())["error"]


def test_resolve_walks_only_trusted_hops() -> None:
    import ipaddress

    nets = [ipaddress.ip_network("10.0.0.0/8")]
    hops = [("6.6.6.6", "https"), ("203.0.113.1", "https"), ("10.0.0.2", "http")]
    # peer 10.0.0.1 (trusted) -> 10.0.0.2 (trusted) -> 203.0.113.1 is the client
    assert resolve("10.0.0.1", hops, nets) == ("203.0.113.1", "https")
    assert resolve("192.0.2.1", hops, nets) is None  # untrusted peer: headers ignored
    assert resolve("10.0.0.1", [("unknown", None)], nets) is None
    assert resolve("10.0.0.1", [("[2001:db8::1]:4711", "https")], nets) == \
        ("2001:db8::1", "https")


async def test_viewer_socket_and_page_work_through_a_trusted_proxy(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=("akool", "heygen"), trusted_proxies=["127.0.0.1"],
                         public_url=PUBLIC) as stack, aiohttp.ClientSession() as client:
        headers = {"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "https"}
        # What a handler notes on the request (a LiveKit page's extra CSP source) survives the
        # request being cloned for the client's address.
        livekit = await stack.start("heygen")
        assert livekit.viewer.transport == "livekit" and livekit.viewer.url
        async with client.get(stack.link(livekit.id), headers=headers) as resp:
            assert resp.status == 200
            assert origin_of(livekit.viewer.url) in resp.headers["Content-Security-Policy"]
        record = await stack.start("akool")
        link = stack.link(record.id)
        ws_url = link.replace("http://", "ws://") + "/ws"
        async with client.ws_connect(ws_url, headers=headers) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["viewer_id"]
