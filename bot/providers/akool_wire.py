"""AKool's RTC data-channel messages: chunked ``chat``, ``command``, and what comes back.

Facts (``docs/vendors/akool.md``, data channel): messages are ``{v: 2, type, mid, idx, fin, pld}``
JSON; Agora carries at most 1 KB per message and 6 KB/s; long text is split into chunks sharing
one ``mid`` with ``idx`` from 0 and ``fin: true`` on the last.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from bot.core.errors import InvalidRequest
from bot.core.events import Transcript
from bot.core.relay import RelayConfig

# The one place for AKool's data-channel limits; the page gets them in RELAY (no copies in JS).
MAX_CHUNK_BYTES = 950  # AKool's own demo keeps each encoded message under 1 KB this way
# Agora allows 6 KB/s; at 5,000 B/s plus one 950-byte chunk, no 1 s window exceeds 6,000 bytes.
BYTES_PER_SECOND = 5000
RELAY = RelayConfig(max_message_bytes=MAX_CHUNK_BYTES, bytes_per_second=BYTES_PER_SECOND)

_mids = itertools.count(1)


def new_mid() -> str:
    """A fresh message id in the demo's ``msg-<ms>`` style, unique within the process."""
    return f"msg-{int(time.time() * 1000)}-{next(_mids)}"


def encoded_size(message: dict[str, Any]) -> int:
    """Bytes of ``message`` as the page sends it (``JSON.stringify`` then UTF-8)."""
    return len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


def _chat(mid: str, idx: int, fin: bool, text: str) -> dict[str, Any]:
    return {"v": 2, "type": "chat", "mid": mid, "idx": idx, "fin": fin, "pld": {"text": text}}


def chunk_chat(text: str, mid: str, limit: int = MAX_CHUNK_BYTES) -> list[dict[str, Any]]:
    """Split ``text`` into chat messages sharing ``mid``, each at most ``limit`` encoded bytes.

    Joining the chunks' ``pld.text`` in ``idx`` order gives back ``text`` exactly.
    """
    if not text:
        raise InvalidRequest("There is nothing to send: the text is empty.")
    # A lone surrogate cannot be sent as UTF-8; it carries no character, so it becomes U+FFFD.
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    # Worst-case envelope: a long idx and fin=false; each character then costs its JSON bytes.
    budget = limit - encoded_size(_chat(mid, 10**9, False, ""))
    if budget < 12:  # one escaped character is at most 6 bytes ("\u001f"), 4 for an emoji
        raise ValueError("message id too long for the chunk limit")
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        cost = len(json.dumps(ch, ensure_ascii=False)[1:-1].encode())
        if used + cost > budget:
            pieces.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += cost
    pieces.append("".join(current))
    last = len(pieces) - 1
    return [_chat(mid, i, i == last, piece) for i, piece in enumerate(pieces)]


def command(cmd: str, mid: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """An AKool ``command`` stream message (``interrupt``, ``set-params`` ...)."""
    pld: dict[str, Any] = {"cmd": cmd}
    if data is not None:
        pld["data"] = data
    return {"v": 2, "type": "command", "mid": mid, "pld": pld}


def ack_lines(session_id: str, pld: dict[str, Any]) -> list[Transcript]:
    """Lines for a command acknowledgement: a stopped speech, or a refused command."""
    cmd, code = pld.get("cmd"), pld.get("code")
    if code is None or code == 1000:
        if cmd == "interrupt" and code == 1000:
            return [Transcript(session_id=session_id, speaker="system",
                               text="The avatar stopped speaking.")]
        return []
    return [Transcript(session_id=session_id, speaker="system",
                       text=f"AKool refused the {str(cmd)[:30]} command (code {code}).")]
