"""What the bounded-memory test (``tests/local/test_bounded.py``) and its bench
(``bench/local_memory.py``) share: the attack's long texts, this process's resident memory,
and watching a speaking session's queued PCM and RSS."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from bot.providers.local import LocalProvider

MiB = 1024 * 1024
WORDS = ("avatar", "speech", "buffer", "memory", "mountain", "river", "seventeen", "quickly",
         "bounded", "queue", "interrupt", "number", "2026", "1234567", "playground", "visitor")


def rss() -> int:
    """This process's resident set size, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def attack_text(seed: int, length: int) -> str:
    """A ``length``-character text of words, numbers and sentences (numbers are read out long),
    the same for the same seed."""
    rnd = random.Random(seed)
    out = ""
    while len(out) < length:
        sentence = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 30)))
        out += sentence.capitalize() + rnd.choice([". ", ", ", "! ", "; "])
    text = out[:length]
    return text[:-1] + "." if text.endswith(" ") else text


async def watch_speech(prov: LocalProvider, ps: Any, seconds: float) -> tuple[int, int]:
    """The most queued PCM bytes and the peak RSS seen over ``seconds``, sampled every 20 ms."""
    most_bytes = peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        most_bytes = max(most_bytes, prov.media_stats(ps)["speech_buffered_bytes"])
        peak = max(peak, rss())
        await asyncio.sleep(0.02)
    return most_bytes, peak
