"""No configured secret (vendor API keys, the link secret, chat tokens) ever reaches a browser:
every page of every transport, its headers and its WebSocket and signalling traffic are searched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.web.conftest import SECRET_KEY, page_socket, web_stack

# Each vendor set covers transports: agora (AKool driven through the page, A2E from the server),
# livekit (HeyGen v2), webrtc with a server offer (the local avatar; HeyGen's raw WebRTC is gone).
SETS: list[tuple[str, ...]] = [("akool", "a2e"), ("heygen",), ()]


@pytest.mark.parametrize("vendors", SETS, ids=["agora", "livekit", "webrtc"])
async def test_no_secret_in_any_page_header_or_socket_message(
    tmp_path: Path, vendors: tuple[str, ...]
) -> None:
    async with web_stack(tmp_path, vendors=vendors, local=True) as stack:
        secrets = stack.settings.secrets()
        assert SECRET_KEY in secrets and len(secrets) >= 8
        for fake in stack.vendors.values():
            assert fake.api_key in secrets  # the keys the adapters really use
        seen: list[str] = []
        transports = set()
        shown: list[str] = []  # what the pages must carry: the viewer credentials
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:

            async def fetch(url: str, method: str = "GET", **kw: Any) -> str:
                async with client.request(method, url, **kw) as resp:
                    seen.append("\n".join(f"{k}: {v}" for k, v in resp.headers.items()))
                    text = await resp.text()
                    seen.append(text)
                    return text

            await fetch(stack.url + "/")
            for path in ("/static/viewer.js", "/static/home.js", "/static/app.css",
                         "/v/bad-token", "/healthz", "/metrics"):
                await fetch(stack.url + path)
            for provider in stack.providers:
                record = await stack.start(provider)
                transports.add(record.viewer.transport)
                if record.viewer.token:
                    shown.append(record.viewer.token)
                for role in ("viewer", "host"):
                    link = stack.link(record.id, role=role)
                    page = await fetch(link)
                    assert "viewer-config" in page
                async with page_socket(client, link) as ps:
                    hello = await ps.next("hello")
                    vid = hello["viewer_id"]
                    if record.viewer.transport == "webrtc":
                        await fetch(link + "/webrtc/offer", "POST", json={"viewer_id": vid})
                    await stack.service.say(record.id, "Say this.", author="ann")
                    await stack.service.ask(record.id, "Ask this?", author="ann")
                    await ps.next("transcript")
                    token = link.split("/v/")[1]
                    await fetch(f"{stack.url}/playground/{token}/say", "POST",
                                json={"text": "From the page."})
                    await stack.service.stop(record.id, "done")
                    await ps.next("end")
                    seen.extend(ps.raw)
                await fetch(stack.link(record.id))  # the ended summary
            await fetch(stack.url + "/playground/start", "POST", json={})
        assert transports >= {"webrtc"} | ({"agora"} if "akool" in vendors else set())
        assert len(seen) > 20
        everything = "\n".join(seen)
        # The search covers what the pages really carried (the viewer credentials are there).
        assert all(token in everything for token in shown)
        for secret in secrets:
            assert secret not in everything, f"a configured secret leaked ({secret[:4]}...)"
