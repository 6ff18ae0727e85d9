"""Viewer links pasted into Discord or Slack unfurl as a card, and the unfurl changes nothing.

The preview fetchers are told apart by their User-Agent; the strings below are the ones each
service documents or sends:
- Discord: "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)" (Discord's
  developer docs, "Embeds" / link previews; the bot name is what matters).
- Slack pages: "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
  (https://api.slack.com/robots).
- Slack images: "Slack-ImgProxy (+https://api.slack.com/robots)" (same page).
"""

from __future__ import annotations

import re
import sqlite3
import struct
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest

DISCORD_UA = "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)"
SLACK_UA = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
SLACK_IMG_UA = "Slack-ImgProxy (+https://api.slack.com/robots)"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
PREVIEWERS = [DISCORD_UA, SLACK_UA, SLACK_IMG_UA]


class _Meta(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, str] = {}
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "meta" and (key := a.get("property") or a.get("name")):
            self.tags[key] = a.get("content") or ""


def meta(html: str) -> _Meta:
    parser = _Meta()
    parser.feed(html)
    return parser


def snapshot(tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the stack's database, read from the file itself."""
    (db,) = tmp_path.glob("web-*.db")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
                for t in tables}


def png_size(body: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR, after checking the signature and the chunk CRC."""
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", body[8:16])
    assert kind == b"IHDR" and length == 13
    data = body[16:29]
    (crc,) = struct.unpack(">I", body[29:33])
    assert zlib.crc32(kind + data) & 0xFFFFFFFF == crc
    width, height, depth, colour = struct.unpack(">IIBB", data[:10])
    assert depth == 8 and colour in (2, 6)
    assert body.endswith(b"IEND\xaeB`\x82")
    return width, height


def decoded_pixels(body: bytes) -> bytes:
    """The image's scanlines (IDAT chunks inflated), to see that it is not blank."""
    pos, idat = 8, b""
    while pos < len(body):
        length, kind = struct.unpack(">I4s", body[pos:pos + 8])
        if kind == b"IDAT":
            idat += body[pos + 8:pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


async def fetch(client: aiohttp.ClientSession, url: str, ua: str) -> tuple[int, bytes, Any]:
    async with client.get(url, headers={"User-Agent": ua}, allow_redirects=False) as resp:
        return resp.status, await resp.read(), resp.headers


@pytest.mark.parametrize("ua", PREVIEWERS)
async def test_a_preview_fetch_gets_the_card_and_changes_nothing(
    stack: Any, client: Any, tmp_path: Path, ua: str
) -> None:
    record = await stack.start("local")
    link = stack.link(record.id)
    before = snapshot(tmp_path)

    status, body, headers = await fetch(client, link, ua)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = meta(body.decode())
    tags = page.tags
    assert tags["og:title"] == "Ada"
    assert tags["og:description"] == "Live now · a talking avatar on Local avatar"
    assert tags["twitter:card"] == "summary_large_image"
    assert tags["og:image"] == f"{link}/preview.png" == tags["twitter:image"]
    # The fetcher gets nothing to join with: no page script, no media config.
    assert page.scripts == 0 and "viewer-config" not in body.decode()

    status, image, headers = await fetch(client, tags["og:image"], ua)
    assert status == 200 and headers["Content-Type"] == "image/png"
    width, height = png_size(image)
    assert 200 <= width <= 2000 and 200 <= height <= 2000
    assert (int(tags["og:image:width"]), int(tags["og:image:height"])) == (width, height)
    assert len(set(decoded_pixels(image))) > 20  # a drawn face, not a blank square

    assert snapshot(tmp_path) == before
    metrics = await (await client.get(f"{stack.url}/metrics")).text()
    assert re.search(r"^avatarbot_viewers 0\.0$", metrics, re.M)
    assert (await stack.service.get(record.id)).last_activity_at == record.last_activity_at


async def test_the_viewer_page_itself_carries_the_card(stack: Any, client: Any) -> None:
    record = await stack.start("akool")
    link = stack.link(record.id)
    status, body, _ = await fetch(client, link, BROWSER_UA)
    assert status == 200 and "viewer-config" in body.decode()
    tags = meta(body.decode()).tags
    assert tags["og:title"] == "Tristan"
    assert tags["og:description"].startswith("Live now") and "AKool" in tags["og:description"]
    assert tags["twitter:card"] == "summary_large_image"
    # A vendor avatar with a thumbnail: the image is the vendor's (a redirect to it).
    status, _, headers = await fetch(client, tags["og:image"], DISCORD_UA)
    assert status == 302 and headers["Location"] == "https://x/t.png"

    await stack.service.stop(record.id, "stopped by an admin")
    status, body, _ = await fetch(client, link, SLACK_UA)
    tags = meta(body.decode()).tags
    assert status == 200 and tags["og:title"] == "Tristan"
    assert tags["og:description"].startswith("Session ended") and "AKool" in tags[
        "og:description"]
    status, body, _ = await fetch(client, link, BROWSER_UA)
    assert meta(body.decode()).tags["og:description"].startswith("Session ended")


async def test_bad_tokens_get_the_same_plain_404_for_the_image(stack: Any, client: Any) -> None:
    record = await stack.start("local")
    good = stack.links.token(record.id, time.time() + 600)
    tampered = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    unknown = stack.links.token("0123456789abcdef", time.time() + 600)
    page_404 = (await fetch(client, f"{stack.url}/v/not-a-token", DISCORD_UA))[1]
    for token in (tampered, unknown, "not-a-token"):
        status, body, headers = await fetch(client, f"{stack.url}/v/{token}/preview.png",
                                            SLACK_IMG_UA)
        assert status == 404 and body == page_404
        assert headers["Content-Type"].startswith("text/html")


def test_the_png_encoder_round_trips_through_av() -> None:
    """The hand-made PNG decodes with FFmpeg's PNG decoder to the same pixels."""
    import io

    import av
    import numpy as np

    from web.preview import png

    rgb = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    with av.open(io.BytesIO(png(rgb)), format="png_pipe") as container:
        frame = next(container.decode(video=0))
    assert np.array_equal(frame.to_ndarray(format="rgb24"), rgb)
