"""Bench the local avatar's memory under the playground attack: 20 maximum-length ``say``s.

Each round starts a fresh session in this process and measures resident memory (VmRSS):

- anchor: an idle session (started, left silent for the same time);
- attack: 20 ``say``s of 2,000 characters on one session (all accepted: LOCAL_MAX_PENDING_SAYS
  is raised to 20 so that the bound comes from the streamed synthesis, not from refusals),
  peak growth while it speaks, then growth after interrupt, and after 20 more and stop;
- the most PCM the session queued (its ``speech_buffered_bytes``), against the set bound.

At the end, once, the old way for reference: the same 20 texts synthesised whole and kept, as
the provider did before speech was streamed.

    .venv/bin/python bench/local_memory.py             # 5 rounds (~2 minutes)
    .venv/bin/python bench/local_memory.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.local.memory import MiB, attack_text, rss, watch_speech

SPEAK_S = 6.0  # how long the attack (and the idle anchor) is watched
TEXT_CHARS = 2000  # each say of the attack: 2,000 characters (see the docstring)


def settled() -> int:
    gc.collect()
    return rss()


async def one_round(n: int) -> dict[str, float]:
    from bot.core.events import EventHub
    from bot.core.models import Pricing, StartRequest
    from bot.providers.local import LocalProvider

    prov = LocalProvider(events=EventHub(), pricing=Pricing(credits_per_minute=1),
                         max_pending_says=20)
    try:
        # anchor: an idle session over the same time
        base = settled()
        idle = await prov.start(StartRequest(session_id=f"idle{n}", avatar_id="ada",
                                             duration_s=600))
        _, idle_peak = await watch_speech(prov, idle, SPEAK_S)
        await prov.stop(idle)

        ps = await prov.start(StartRequest(session_id=f"attack{n}", avatar_id="ada",
                                           duration_s=600))
        await prov.say(ps, "Warming up.")
        await asyncio.sleep(1.0)
        before = settled()
        for i in range(20):
            await prov.say(ps, attack_text(n * 100 + i, TEXT_CHARS))
        most, peak = await watch_speech(prov, ps, SPEAK_S)
        await prov.interrupt(ps)
        after_interrupt = settled()
        for i in range(20):
            await prov.say(ps, attack_text(n * 100 + 50 + i, TEXT_CHARS))
        most2, peak2 = await watch_speech(prov, ps, 2.0)
        await prov.stop(ps)
        after_stop = settled()
        return {
            "idle": (idle_peak - base) / MiB,
            "before": before / MiB,
            "peak": (max(peak, peak2) - before) / MiB,
            "interrupt": (after_interrupt - before) / MiB,
            "stop": (after_stop - before) / MiB,
            "queued": max(most, most2) / 1000,
            "bound": prov.speech_buffer_bytes / 1000,
        }
    finally:
        await prov.aclose()


def whole_texts_reference() -> float:
    """RSS growth when the 20 texts are synthesised whole and kept (the old provider)."""
    from bot.providers.local.speech import Voice, synthesize

    before = settled()
    kept = [synthesize(attack_text(900 + i, TEXT_CHARS), Voice("en-us")) for i in range(20)]
    grown = (rss() - before) / MiB
    print(f"  (the 20 whole texts hold {sum(u.samples.nbytes for u in kept) / MiB:.0f} MiB "
          f"of 48 kHz PCM, {sum(u.duration_ms for u in kept) / 60_000:.0f} minutes of speech)")
    return grown


def summary(label: str, values: list[float], unit: str) -> str:
    return (f"{label:<38}{min(values):>9.1f}{statistics.median(values):>9.1f}"
            f"{max(values):>9.1f}  {unit}")


async def main(rounds: int) -> None:
    results = [await one_round(n) for n in range(rounds)]
    print(f"{rounds} rounds; RSS before the attack: median "
          f"{statistics.median(r['before'] for r in results):.1f} MiB\n")
    print(f"{'':<38}{'min':>9}{'median':>9}{'max':>9}")
    print(summary("anchor: idle session, RSS growth", [r["idle"] for r in results], "MiB"))
    print(summary("20 x 2,000-char say, peak RSS growth", [r["peak"] for r in results], "MiB"))
    print(summary("  after interrupt (gc), RSS growth", [r["interrupt"] for r in results],
                  "MiB"))
    print(summary("  after 20 more and stop (gc)", [r["stop"] for r in results], "MiB"))
    print(summary("  most PCM queued", [r["queued"] for r in results],
                  f"kB (bound {results[0]['bound']:.0f} kB)"))
    grown = whole_texts_reference()
    print(f"{'old way: 20 texts synthesised whole':<38}{grown:>27.1f}  MiB (once)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
