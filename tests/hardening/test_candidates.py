"""Remote ICE candidates per viewer are bounded, and junk addresses are refused with a clear 400
before the server's ICE agent would send STUN checks to them (real web stack, real local avatar;
the page's side is spoken over HTTP as viewer.js speaks it)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bot.core.ice import candidate_address_problem
from tests.web.conftest import has_local, page_socket, web_stack

pytestmark = pytest.mark.skipif(not has_local(), reason="the local avatar needs aiortc")


def _cand(host: str, port: int = 50000, foundation: int = 1) -> dict[str, object]:
    # The RTCIceCandidateInit a browser trickles (RFC 8839 section 5.1 candidate-attribute).
    return {"candidate": f"candidate:{foundation} 1 udp 2122260223 {host} {port} typ host",
            "sdpMid": "0", "sdpMLineIndex": 0}


async def _post(client: aiohttp.ClientSession, url: str, body: dict[str, object]
                ) -> tuple[int, dict[str, object]]:
    async with client.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_a_viewer_may_send_fifty_candidates_and_no_more(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=(), local=True) as stack, \
            aiohttp.ClientSession() as client:
        record = await stack.start("local")
        link = stack.link(record.id)
        async with page_socket(client, link) as ps:
            vid = (await ps.next("hello"))["viewer_id"]
            status, offer = await _post(client, link + "/webrtc/offer", {"viewer_id": vid})
            assert status == 200 and offer["type"] == "offer"
            for i in range(50):
                status, body = await _post(client, link + "/webrtc/candidate", {
                    "viewer_id": vid, "candidate": _cand(f"10.0.{i // 200}.{i % 200 + 1}",
                                                         foundation=i)})
                assert status == 200, (i, body)
            status, body = await _post(client, link + "/webrtc/candidate",
                                       {"viewer_id": vid, "candidate": _cand("10.9.9.9")})
            assert status == 400
            assert "at most 50 ICE candidates" in str(body["error"])
            # The end-of-candidates marker is not a candidate and still goes through.
            status, _ = await _post(client, link + "/webrtc/candidate",
                                    {"viewer_id": vid, "candidate": None})
            assert status == 200
            # A new offer starts a new connection, with a fresh allowance.
            status, _ = await _post(client, link + "/webrtc/offer", {"viewer_id": vid})
            assert status == 200
            status, _ = await _post(client, link + "/webrtc/candidate",
                                    {"viewer_id": vid, "candidate": _cand("10.9.9.9")})
            assert status == 200


JUNK = {
    "0.0.0.0": "cannot be a peer's",
    "0.1.2.3": "cannot be a peer's",
    "224.0.0.251": "cannot be a peer's",
    "255.255.255.255": "cannot be a peer's",
    "240.0.0.1": "cannot be a peer's",
    "ff02::1": "cannot be a peer's",
    "::": "cannot be a peer's",
    "victim.example.com": "neither an IP address nor a browser's .local name",
}


async def test_junk_addresses_are_refused_cleanly(tmp_path: Path) -> None:
    async with web_stack(tmp_path, vendors=(), local=True) as stack, \
            aiohttp.ClientSession() as client:
        record = await stack.start("local")
        link = stack.link(record.id)
        async with page_socket(client, link) as ps:
            vid = (await ps.next("hello"))["viewer_id"]
            assert (await _post(client, link + "/webrtc/offer", {"viewer_id": vid}))[0] == 200
            for host, why in JUNK.items():
                status, body = await _post(client, link + "/webrtc/candidate",
                                           {"viewer_id": vid, "candidate": _cand(host)})
                assert status == 400, host
                assert why in str(body["error"]), (host, body)
            status, body = await _post(client, link + "/webrtc/candidate",
                                       {"viewer_id": vid, "candidate": _cand("10.0.0.1", 0)})
            assert status == 400 and "port" in str(body["error"])
            # A browser's mDNS name and a public address are fine.
            for host in ("1f2e3d4c-0000-4abc-8def-0123456789ab.local", "203.0.113.7"):
                status, body = await _post(client, link + "/webrtc/candidate",
                                           {"viewer_id": vid, "candidate": _cand(host)})
                assert status == 200, (host, body)


def test_loopback_only_where_allowed() -> None:
    assert candidate_address_problem("127.0.0.1", 9) == "it names this machine"
    assert candidate_address_problem("::ffff:127.0.0.1", 9) == "it names this machine"
    assert candidate_address_problem("127.0.0.1", 9, allow_loopback=True) is None
