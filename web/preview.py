"""Link previews ("unfurls") of viewer links in Discord and Slack.

When someone pastes ``/v/<token>`` into a chat, the chat's server fetches it to build a card:
Discord's fetcher says ``Discordbot`` in its User-Agent, Slack's page fetcher
``Slackbot-LinkExpanding`` and its image proxy ``Slack-ImgProxy`` (docs/platform-payloads.md,
"Link previews"). Such a fetch must change nothing and bill nothing: it gets a page with only the
Open Graph / Twitter card tags (no page script, no media join details), and the card's image
``/v/<token>/preview.png``.

The image is the built-in avatar's face (drawn once per look by ``bot.providers.local.face`` and
kept as PNG bytes), the vendor's own thumbnail (a redirect to ``AvatarInfo.preview_url``), or a
neutral card when there is neither. PNG encoding is the few lines the format needs (zlib and
numpy), so no imaging library is required.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from bot.core.models import SessionRecord

log = logging.getLogger(__name__)

PREVIEW_AGENTS = ("Discordbot", "Slackbot-LinkExpanding", "Slack-ImgProxy")
"""User-Agent marks of the link preview fetchers of Discord and Slack."""

# The 1.91:1 card size Open Graph consumers crop to; Twitter's "summary_large_image" takes it.
WIDTH, HEIGHT = 1200, 630
NEUTRAL = (58, 66, 92)  # the card colour when there is no face to show
VENDOR_LOOKUP_S = 2.0

_faces: dict[str, bytes] = {}


def is_preview_fetcher(user_agent: str | None) -> bool:
    """Whether a request comes from Discord's or Slack's link preview fetcher."""
    return user_agent is not None and any(mark in user_agent for mark in PREVIEW_AGENTS)


@dataclass(frozen=True)
class Card:
    """What the card tags say about a session."""

    title: str
    description: str
    url: str
    image: str
    width: int = WIDTH
    height: int = HEIGHT


def card_for(record: SessionRecord, vendor: str, page_url: str) -> Card:
    """The card of a session's viewer link: its avatar, whether it is live, and the vendor."""
    if record.state.is_open:
        description = f"Live now · a talking avatar on {vendor}"
    else:
        description = f"Session ended · {vendor}"
    return Card(title=record.avatar_name, description=description, url=page_url,
                image=f"{page_url}/preview.png")


def png(rgb: np.ndarray) -> bytes:
    """Encode an RGB image (height x width x 3, uint8) as a PNG file (8-bit truecolour)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("png() takes an RGB uint8 array")
    height, width = rgb.shape[:2]
    # Each scanline starts with its filter type; 0 ("None") keeps the encoder trivial.
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


@functools.cache
def neutral_card() -> bytes:
    """A plain card image, for sessions with no face or thumbnail to show."""
    top = np.array(NEUTRAL, np.float32)
    shade = np.linspace(1.0, 0.7, HEIGHT, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(top * shade, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    return png(np.ascontiguousarray(image))


def _draw_face(look_id: str) -> bytes | None:
    try:
        from bot.providers.local.face import LOOKS, Face
    except ImportError:  # the local avatar's libraries are missing: no face to draw
        return None
    look = LOOKS.get(look_id)
    if look is None:
        return None
    return png(Face(look, WIDTH, HEIGHT).render(0.0))


async def face_png(look_id: str) -> bytes | None:
    """The built-in avatar ``look_id``'s face as PNG, drawn once (off the event loop)."""
    cached = _faces.get(look_id)
    if cached is None:
        # Two first fetches at once may both draw; the looks are few and the result the same.
        cached = await asyncio.to_thread(_draw_face, look_id)
        if cached is not None:
            _faces[look_id] = cached
    return cached
