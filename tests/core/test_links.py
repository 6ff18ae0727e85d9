"""Signed viewer links."""

from __future__ import annotations

import time

from bot.core.links import ViewerLinks

SECRET = b"0123456789abcdef0123456789abcdef"


def test_a_link_opens_its_session_until_it_expires():
    links = ViewerLinks(SECRET, "https://x.example/")
    url = links.url("abc123", time.time() + 60)
    assert url.startswith("https://x.example/v/")
    claims = links.verify(url.rsplit("/", 1)[1])
    assert claims and claims.session_id == "abc123" and claims.role == "viewer"
    assert links.verify(links.token("abc123", time.time() - 1)) is None


def test_tampered_or_foreign_tokens_are_refused():
    links = ViewerLinks(SECRET, "http://h")
    token = links.token("abc123", time.time() + 60, role="viewer")
    payload, sig = token.split(".")
    other = links.token("zzz999", time.time() + 60)
    assert links.verify(f"{other.split('.')[0]}.{sig}") is None  # another session's payload
    assert links.verify(f"{payload}.{other.split('.')[1]}") is None  # another session's signature
    assert links.verify(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert ViewerLinks(b"another-secret-of-32-bytes-long!", "http://h").verify(token) is None
    for junk in ("", ".", "a.b.c", "%%%.***", "x" * 5000):
        assert links.verify(junk) is None


def test_host_role_is_signed_too():
    links = ViewerLinks(SECRET, "http://h")
    host = links.token("s1", time.time() + 60, role="host")
    assert links.verify(host).role == "host"
