"""Bench the local avatar: CPU, memory, received frame rate and time to first frame per viewer.

The provider runs in this process; the viewers (aiortc peers that decode what they receive) run
in a second process, so the CPU figures are the sender's alone. Signalling goes over a pipe.

    .venv/bin/python bench/local_avatar.py            # every size and viewer count (~2 minutes)
    .venv/bin/python bench/local_avatar.py --quick    # the default size with 1 and 10 viewers
    .venv/bin/python bench/local_avatar.py --size 640x480@15 --size 480x360@20 --viewers 10 \
        --repeat 3                                    # chosen cases, min/median/max of CPU %

On a shared machine one run is noisy: ``--repeat`` runs every case several times and prints the
spread of the sender's CPU share, which is what a choice of default should rest on.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEASURE_S = 4.0
WARMUP_S = 1.5


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------- viewer process
def viewer_main(conn, decode_all: bool) -> None:
    if not decode_all:
        _decode_first_viewer_only()
    asyncio.run(_viewers(conn))


def _decode_first_viewer_only() -> None:
    """Let only the first video receiver decode VP8; the others count whole received frames.

    Twenty viewers decoding 640x480@25 in one Python process saturate the viewer side of this
    2-core machine (and starve the sender), which would measure the viewers, not the sender.
    """
    import aiortc.rtcrtpreceiver as receiver
    import av

    real = receiver.get_decoder
    made = {"video": 0}
    stub = av.VideoFrame(16, 16, "yuv420p")

    class CountingDecoder:
        def decode(self, encoded_frame: object) -> list[av.VideoFrame]:
            return [stub]

    def get_decoder(codec: Any) -> Any:
        if codec.mimeType.lower().startswith("video/"):
            made["video"] += 1
            if made["video"] > 1:
                return CountingDecoder()
        return real(codec)

    receiver.get_decoder = get_decoder


async def _viewers(conn) -> None:
    import contextlib

    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from bot.compat import aioice_compat

    aioice_compat.acquire_loopback()  # the viewers are on this machine too
    pcs: dict[int, RTCPeerConnection] = {}
    frames: dict[int, int] = {}
    audio: dict[int, int] = {}
    first: dict[int, float] = {}
    tasks: list[asyncio.Task] = []

    async def read(track, i: int) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                if track.kind == "video":
                    first.setdefault(i, time.monotonic())
                    frames[i] = frames.get(i, 0) + 1
                else:
                    audio[i] = audio.get(i, 0) + 1

    while True:
        msg = await asyncio.to_thread(conn.recv)
        if msg[0] == "offer":
            _, i, sdp = msg
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs[i] = pc
            pc.on("track", lambda track, i=i: tasks.append(asyncio.create_task(read(track, i))))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            conn.send(("answer", i, pc.localDescription.sdp))
        elif msg[0] == "first":
            for _ in range(1000):  # up to 10 s
                if len(first) >= len(pcs):
                    break
                await asyncio.sleep(0.01)
            conn.send(("first", dict(first)))
        elif msg[0] == "measure":
            f0, a0, t0 = dict(frames), dict(audio), time.monotonic()
            await asyncio.sleep(msg[1])
            dt = time.monotonic() - t0
            fps = [(frames.get(i, 0) - f0.get(i, 0)) / dt for i in pcs]
            aps = [(audio.get(i, 0) - a0.get(i, 0)) / dt for i in pcs]
            conn.send(("measured", fps, aps))
        elif msg[0] == "close":
            for pc in pcs.values():
                await pc.close()
            for t in tasks:
                t.cancel()
            pcs.clear(), frames.clear(), audio.clear(), first.clear(), tasks.clear()
            conn.send(("closed",))
        elif msg[0] == "exit":
            return


def parse_size(text: str) -> tuple[int, int, int]:
    """``640x480@15`` as ``(640, 480, 15)``."""
    try:
        size, _, fps = text.partition("@")
        w, _, h = size.lower().partition("x")
        return int(w), int(h), int(fps or 15)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WxH@FPS, e.g. 640x480@15") from None


def _default_size() -> tuple[int, int, int]:
    """The size and rate the settings give the local avatar by default."""
    from bot.settings import Settings

    fields = Settings.model_fields
    return (fields["local_video_width"].default, fields["local_video_height"].default,
            fields["local_video_fps"].default)


# ---------------------------------------------------------------- sender side
async def run_case(conn, width: int, height: int, fps: int, n: int) -> dict:
    from bot.core.events import EventHub
    from bot.core.models import Pricing, StartRequest
    from bot.providers.local import LocalProvider

    prov = LocalProvider(events=EventHub(), pricing=Pricing(credits_per_minute=1), width=width,
                         height=height, fps=fps, allow_loopback=True, max_viewers=max(n, 1),
                         max_viewers_per_session=max(n, 1))
    ps = await prov.start(StartRequest(session_id="bench", avatar_id="ada", duration_s=600))
    await asyncio.sleep(0.3)
    rss0 = rss_mb()
    offered: dict[int, float] = {}
    for i in range(n):
        offered[i] = time.monotonic()
        offer = await prov.viewer_offer(ps, f"v{i}")
        conn.send(("offer", i, offer["sdp"]))
        _, j, answer = await asyncio.to_thread(conn.recv)
        await prov.viewer_answer(ps, f"v{j}", answer)
    conn.send(("first",))
    _, first = await asyncio.to_thread(conn.recv)
    ttff = [(first[i] - offered[i]) * 1000 for i in first]
    # keep it talking during the measurement, as in a real session
    await prov.say(ps, "This is a benchmark of the local avatar. " * 6)
    await asyncio.sleep(WARMUP_S)
    stats0 = prov.media_stats(ps)
    cpu0, wall0 = time.process_time(), time.monotonic()
    conn.send(("measure", MEASURE_S))
    _, got_fps, got_aps = await asyncio.to_thread(conn.recv)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    rendered = (prov.media_stats(ps)["frames_rendered"] - stats0["frames_rendered"]) / (
        time.monotonic() - wall0)
    rss1 = rss_mb()
    conn.send(("close",))
    await asyncio.to_thread(conn.recv)
    await prov.aclose()
    return {
        "size": f"{width}x{height}@{fps}", "viewers": n, "cpu": cpu * 100,
        "cpu_per_viewer": cpu * 100 / n, "mem_per_viewer": (rss1 - rss0) / n,
        "fps_min": min(got_fps), "fps_med": statistics.median(got_fps),
        "aps_med": statistics.median(got_aps), "rendered_fps": rendered,
        "ttff_med": statistics.median(ttff) if ttff else float("nan"),
        "ttff_max": max(ttff) if ttff else float("nan"), "connected": len(first),
    }


async def main(cases: list[tuple[int, int, int, int]], decode_all: bool, repeat: int = 1) -> None:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=viewer_main, args=(child, decode_all), daemon=True)
    proc.start()
    print(f"{'size':<14}{'viewers':>8}{'CPU %':>8}{'CPU/view':>10}{'MB/view':>9}"
          f"{'rx fps':>8}{'min fps':>9}{'audio/s':>9}{'drawn/s':>9}{'1st ms':>8}{'max ms':>8}")
    cpus: dict[tuple[str, int], list[float]] = {}
    drawn: dict[tuple[str, int], list[float]] = {}
    try:
        # rounds of every case, so a burst of load from elsewhere hits them all alike
        for w, h, fps, n in [c for _ in range(repeat) for c in cases]:
            r = await run_case(parent, w, h, fps, n)
            cpus.setdefault((r["size"], n), []).append(r["cpu"])
            drawn.setdefault((r["size"], n), []).append(r["rendered_fps"])
            print(f"{r['size']:<14}{r['viewers']:>8}{r['cpu']:>8.1f}{r['cpu_per_viewer']:>10.1f}"
                  f"{r['mem_per_viewer']:>9.1f}{r['fps_med']:>8.1f}{r['fps_min']:>9.1f}"
                  f"{r['aps_med']:>9.1f}{r['rendered_fps']:>9.1f}{r['ttff_med']:>8.0f}"
                  f"{r['ttff_max']:>8.0f}", flush=True)
            if r["connected"] < n:
                print(f"  only {r['connected']} of {n} viewers got a first frame", flush=True)
    finally:
        parent.send(("exit",))
        proc.join(10)
    if repeat > 1:
        print(f"\n{'size':<14}{'viewers':>8}{'runs':>6}{'CPU % min':>11}{'median':>8}{'max':>8}"
              f"{'drawn/s min':>13}")
        for (size, n), got in cpus.items():
            print(f"{size:<14}{n:>8}{len(got):>6}{min(got):>11.1f}"
                  f"{statistics.median(got):>8.1f}{max(got):>8.1f}{min(drawn[size, n]):>13.1f}")
    print("\nCPU % is the sender process (render, encode once, RTP/SRTP per viewer) as a share of"
          " one core;\nMB/view is its resident memory growth per viewer; rx fps and 1st ms"
          " (offer to first frame)\nare measured at the viewers, which share the machine"
          + ("." if decode_all else "; only the first viewer decodes VP8, the others count"
             " complete frames\n(--decode-all to decode every stream)."))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the default size (LOCAL_VIDEO_*) with 1 and 10 viewers")
    parser.add_argument("--size", action="append", type=parse_size, metavar="WxH@FPS",
                        help="a video size and rate to bench (repeatable)")
    parser.add_argument("--viewers", action="append", type=int, metavar="N",
                        help="a viewer count to bench (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="run every case this many times")
    parser.add_argument("--decode-all", action="store_true", help="every viewer decodes video")
    args = parser.parse_args()
    default = _default_size()
    sizes = args.size or ([default] if args.quick else [(320, 240, 15), default, (640, 480, 25)])
    counts = args.viewers or ([1, 10] if args.quick else [1, 5, 10, 20])
    cases = [(w, h, f, n) for w, h, f in dict.fromkeys(sizes) for n in counts]
    asyncio.run(main(cases, args.decode_all, max(1, args.repeat)))
