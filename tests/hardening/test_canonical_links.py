"""One token string per link: every other spelling of a valid token gets the plain 404.

Python's base64 decoder accepts padding, the standard alphabet's ``+``/``/``, characters outside
the alphabet (dropped) and any value in the unused low bits of the last character; before this
check each of those spellings opened the same session (issue 16).
"""

from __future__ import annotations

import string
import time
from pathlib import Path
from typing import Any

import aiohttp

from bot.core.links import ViewerLinks
from tests.web.conftest import web_stack

_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def _variants(token: str) -> dict[str, str]:
    payload, sig = token.split(".")
    # A 32-byte signature is 43 characters: 258 bits, the last 2 of them unused.
    last = _ALPHABET.index(sig[-1])
    low_bits = sig[:-1] + _ALPHABET[last ^ 1]
    found = {
        "padded signature": f"{payload}.{sig}=",
        "padded payload": f"{payload}{'=' * (-len(payload) % 4) or '===='}.{sig}",
        "junk character": f"{payload}.{sig[:5]}!{sig[5:]}",
        "unused bits set": f"{payload}.{low_bits}",
        # '+' for '-' ('/' for '_' would be another path, not another token).
        "standard alphabet": token.replace("-", "+"),
    }
    return {k: v for k, v in found.items() if v != token}


def _token_with_dash(links: ViewerLinks, prefix: str) -> str:
    """A token holding '-', so that the alphabet variant differs (the expiry varies it)."""
    now = int(time.time())
    return next(
        t for t in (links.token(prefix, now + 600 + i) for i in range(2000)) if "-" in t
    )


def test_only_the_canonical_spelling_verifies() -> None:
    links = ViewerLinks(b"0123456789abcdef0123", "http://x")
    token = _token_with_dash(links, "s")
    assert links.verify(token) is not None
    variants = _variants(token)
    assert len(variants) == 5
    for name, variant in variants.items():
        assert links.verify(variant) is None, name


async def test_variants_of_a_live_link_get_the_plain_404(tmp_path: Path) -> None:
    async with web_stack(tmp_path) as stack, aiohttp.ClientSession() as client:
        record = await stack.start("akool")
        token = _token_with_dash(stack.links, record.id)
        async with client.get(f"{stack.url}/v/{token}") as resp:
            assert resp.status == 200
        not_found_body = None
        for name, variant in _variants(token).items():
            async with client.get(f"{stack.url}/v/{variant}") as resp:
                body: Any = await resp.text()
                assert resp.status == 404, name
                assert not_found_body in (None, body), name
                not_found_body = body
